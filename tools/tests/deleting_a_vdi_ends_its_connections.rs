//! `dog vdi delete` ends the NBD connections still open to the VDI: their requests fail
//! from then on, so none can write objects of the deleted VDI that nothing would remove,
//! and a new VDI of the same name starts empty.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

#[test]
fn deleting_a_vdi_ends_its_connections() {
    let sheep = Sheep::formatted("delete-open", &[]);
    sheep.create_vdi("doomed", "64M");
    let data = pattern(3, MIB as usize);
    // Several connections, so that both shards are likely to hold one.
    let mut conns: Vec<_> = (0..4)
        .map(|_| nbd_client::NbdClient::connect(sheep.nbd_port, "doomed").unwrap())
        .collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.write(i as u64 * 8 * MIB, &data).unwrap();
    }

    sheep.dog_ok(&["vdi", "delete", "doomed"]);
    for (i, c) in conns.iter_mut().enumerate() {
        let off = i as u64 * 8 * MIB;
        assert!(
            c.write(off, &data).is_err(),
            "write on connection {i} after delete"
        );
        assert!(
            c.read(off, 4096).is_err(),
            "read on connection {i} after delete"
        );
    }
    assert!(sheep.log().contains("ended connections of a deleted vdi"));

    // The name is free again, and the new VDI holds nothing of the old one.
    sheep.create_vdi("doomed", "64M");
    let mut fresh = nbd_client::NbdClient::connect(sheep.nbd_port, "doomed").unwrap();
    assert_bytes_eq(
        "new vdi",
        &fresh.read(0, 4 * MIB as usize).unwrap(),
        &vec![0u8; 4 * MIB as usize],
    );
    fresh.write(0, &data).unwrap();
    assert_bytes_eq("new vdi", &fresh.read(0, data.len()).unwrap(), &data);
    let raw = sheep.dog_ok(&["vdi", "list", "-r", "doomed"]);
    let used: u64 = raw.split_whitespace().nth(4).unwrap().parse().unwrap();
    assert_eq!(used, MIB, "{raw}");
}
