//! A clean restart (SIGTERM, start again on the same directory) keeps every VDI, its
//! data and `dog vdi list`; `dog cluster shutdown` stops the daemon cleanly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

#[test]
fn restart_keeps_vdis_and_data() {
    let mut sheep = Sheep::formatted("restart", &[]);
    sheep.create_vdi("alpha", "64M");
    sheep.create_vdi("beta", "1G");
    let data = pattern(7, 5 * MIB as usize + 123);
    {
        let mut c = nbd_client::NbdClient::connect(sheep.nbd_port, "beta").unwrap();
        c.write(3 * MIB + 1, &data).unwrap();
        c.disconnect();
    }
    let list_before = sheep.dog_ok(&["vdi", "list", "-r"]);
    let info_before = sheep.dog_ok(&["cluster", "info", "-r"]);

    sheep.restart();
    assert!(sheep.log().contains("clean shutdown"), "{}", sheep.log());
    assert_eq!(sheep.dog_ok(&["vdi", "list", "-r"]), list_before);
    assert_eq!(sheep.dog_ok(&["cluster", "info", "-r"]), info_before);
    let mut c = nbd_client::NbdClient::connect(sheep.nbd_port, "beta").unwrap();
    assert_eq!(c.read(3 * MIB + 1, data.len()).unwrap(), data);
    assert_eq!(c.read(0, 4096).unwrap(), vec![0u8; 4096]);
    c.disconnect();

    // dog cluster shutdown: the daemon exits by itself and removes its pid file.
    sheep.dog_ok(&["cluster", "shutdown"]);
    let pid = sheep.forget();
    assert!(wait_exit(pid, std::time::Duration::from_secs(30)));
    assert!(!sheep.dir.join("sheep.pid").exists());
    sheep.launch();
    assert_eq!(sheep.dog_ok(&["vdi", "list", "-r"]), list_before);
}
