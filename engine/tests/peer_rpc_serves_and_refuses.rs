//! The peer RPC server of every shard, spoken to with raw frames: writes, reads, the
//! "must exist" flag, stat, epochs, and bytes from outside that are not a valid
//! request (garbage, a lying payload length, a response sent as a request, a read too
//! long for a frame). Each bad frame costs at most its connection; the server keeps
//! answering new ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use collie_engine::cluster::view::ClusterView;
use collie_engine::cluster::{Member, View};
use collie_engine::gateway::set_view;
use collie_engine::peer::serve_peers;
use collie_engine::Store;
use collie_net::peer::{
    decode_stat, status, Op, PeerHeader, FLAG_MUST_EXIST, HEADER_LEN, MAX_PAYLOAD,
};
use collie_placement::node::NodeId;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

const EPOCH: u32 = 5;

/// A store whose shards serve peers, with a one-member view at `EPOCH`.
fn serving(dir: &std::path::Path) -> (Store, Vec<SocketAddr>) {
    let store = Store::open(small_config(dir)).unwrap();
    let listeners: Vec<TcpListener> = (0..store.shard_count())
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let me = Member {
        id: NodeId::new([127, 0, 0, 1].into(), 7000),
        zone: 0,
        capacity: 1 << 30,
        nbd_port: 10809,
        peer_ports: addrs.iter().map(SocketAddr::port).collect(),
        pid: std::process::id(),
        partitions: store.partition_count(),
    };
    let view = View {
        epoch: EPOCH,
        members: vec![me.clone()],
    };
    let view = Arc::new(ClusterView::new(view, 1 << 20, me.id, Vec::new()).unwrap());
    for shard in 0..store.shard_count() {
        let v = view.clone();
        store
            .run_on(shard, move |_| async move { set_view(Some(v)) })
            .unwrap();
    }
    serve_peers(&store, listeners).unwrap();
    (store, addrs)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends one request and returns the response header and payload.
fn call(s: &mut TcpStream, mut h: PeerHeader, payload: &[u8]) -> (PeerHeader, Vec<u8>) {
    h = h.seal(payload);
    s.write_all(&h.to_bytes()).unwrap();
    s.write_all(payload).unwrap();
    let mut hb = [0u8; HEADER_LEN];
    s.read_exact(&mut hb).unwrap();
    let r = PeerHeader::decode(&hb).unwrap();
    let mut p = vec![0u8; r.payload_len as usize];
    s.read_exact(&mut p).unwrap();
    r.check_payload(&p).unwrap();
    assert!(r.is_response() && r.id == h.id, "answer to another request");
    (r, p)
}

fn request(op: Op, oid: u64, offset: u64, len: u64) -> PeerHeader {
    let mut h = PeerHeader::request(op, oid ^ offset, EPOCH, oid);
    h.offset = offset;
    h.len = len;
    h.object_size = OBJ;
    h
}

/// True once the server has closed this connection (EOF or reset).
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn peer_rpc_serves_and_refuses() {
    let dir = test_dir("peer-rpc");
    let (_store, addrs) = serving(dir.path());
    let data = pattern(1, 10_000);

    // Every shard's port serves every object (a request for another shard's object
    // crosses the mesh); a fresh object per port.
    for (i, &addr) in addrs.iter().enumerate() {
        let oid = 7u64 << 32 | i as u64;
        let mut s = connect(addr);
        // Part of an object nobody holds, "must exist": refused, nothing written.
        let mut h = request(Op::Write, oid, 4096, data.len() as u64);
        h.flags |= FLAG_MUST_EXIST;
        let (r, _) = call(&mut s, h, &data);
        assert_eq!(r.status, status::NOT_FOUND);
        let (r, _) = call(&mut s, request(Op::Stat, oid, 0, 0), &[]);
        assert_eq!(
            r.status,
            status::NOT_FOUND,
            "a refused write must not create the object"
        );

        // Plain write, then "must exist" succeeds; read and stat see both.
        let (r, _) = call(
            &mut s,
            request(Op::Write, oid, 4096, data.len() as u64),
            &data,
        );
        assert_eq!(r.status, status::OK);
        let mut h = request(Op::Write, oid, 0, 3);
        h.flags |= FLAG_MUST_EXIST;
        assert_eq!(call(&mut s, h, b"abc").0.status, status::OK);
        let (r, got) = call(&mut s, request(Op::Read, oid, 0, 4096 + 10_000), &[]);
        assert_eq!(r.status, status::OK);
        assert_eq!(&got[..3], b"abc");
        assert!(got[3..4096].iter().all(|&b| b == 0));
        assert_eq!(&got[4096..], &data[..]);
        let (r, st) = call(&mut s, request(Op::Stat, oid, 0, 0), &[]);
        assert_eq!(r.status, status::OK);
        assert_eq!(decode_stat(&st).unwrap().0, OBJ);

        // Another epoch: refused with ours.
        let mut h = request(Op::Read, oid, 0, 16);
        h.epoch = EPOCH + 1;
        let (r, _) = call(&mut s, h, &[]);
        assert_eq!((r.status, r.epoch), (status::WRONG_EPOCH, EPOCH));

        // A read longer than a frame, and one past the object: errors, not data.
        let (r, _) = call(
            &mut s,
            request(Op::Read, oid, 0, u64::from(MAX_PAYLOAD) + 1),
            &[],
        );
        assert_eq!(r.status, status::INVALID);
        let (r, _) = call(&mut s, request(Op::Read, oid, OBJ - 1, 2), &[]);
        assert_eq!(r.status, status::INVALID);

        // Garbage instead of a header: the connection ends.
        s.write_all(&[0x5a; HEADER_LEN]).unwrap();
        assert!(closed(&mut s));

        // A header claiming more payload than any frame may carry: refused before
        // anything is allocated.
        let mut s = connect(addr);
        let mut h = request(Op::Write, oid, 0, 16).seal(&[]);
        h.payload_len = u32::MAX;
        h.header_crc = crc32c::crc32c(&bytemuck::bytes_of(&h)[..HEADER_LEN - 4]);
        s.write_all(&h.to_bytes()).unwrap();
        assert!(closed(&mut s));

        // A response sent as a request: the connection ends.
        let mut s = connect(addr);
        let req = request(Op::Read, oid, 0, 16);
        let resp = PeerHeader::response(&req, status::OK, EPOCH).seal(&[]);
        s.write_all(&resp.to_bytes()).unwrap();
        assert!(closed(&mut s));

        // The server still answers.
        let mut s = connect(addr);
        let (r, got) = call(&mut s, request(Op::Read, oid, 4096, 100), &[]);
        assert_eq!(r.status, status::OK);
        assert_eq!(got, data[..100]);
    }
}

/// A fragment request to the shard that owns `key`, for a 4:2 object of 4 MiB.
fn frag_request(op: Op, key: u64, first: u64, stripes: u64) -> PeerHeader {
    let mut h = request(op, key, first, stripes);
    h.object_size = 4 << 20;
    h.geometry = 4 << 8 | 2;
    h
}

fn u64s(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A 4:2 fragment object of a 4 MiB object: 256 header entries of 32 bytes, two slots
/// of 1 MiB, then the vector area (2 slots x 256 stripes x 4 versions x 8 bytes).
const HEADER: u64 = 256 * 32;
const VECTORS: u64 = HEADER + (2 << 20);
const FRAGMENT_OBJECT: u64 = VECTORS + 2 * 256 * 4 * 8;

/// A connection to the shard that owns fragment key `key`.
fn connect_owner(store: &Store, addrs: &[SocketAddr], key: u64) -> TcpStream {
    use collie_engine::shard::{owner_of, partition_of};
    connect(addrs[owner_of(partition_of(key, store.partition_count()), addrs.len())])
}

/// FragRead of stripe `stripe` of fragment `key` at `want` (0: newest), with `flags`:
/// (the version found, 0 if none valid; the chunk).
fn frag_read(s: &mut TcpStream, key: u64, stripe: u64, want: u64, flags: u8) -> (u64, Vec<u8>) {
    let mut h = frag_request(Op::FragRead, key, stripe, 1);
    h.flags |= flags;
    let (r, p) = call(s, h, &u64s(&[want]));
    assert_eq!(r.status, status::OK);
    (
        u64::from_le_bytes(p[..8].try_into().unwrap()),
        p[8..].to_vec(),
    )
}

#[test]
fn fragments_keep_the_version_a_write_builds_on_and_refuse_bad_requests() {
    use collie_engine::shard::{owner_of, partition_of};
    use collie_placement::ids::{fragment_oid, Vid};
    let dir = test_dir("peer-fragments");
    let (store, addrs) = serving(dir.path());
    let oid = Vid::of_name("ec").data_oid(3);
    let key = fragment_oid(oid, 1);
    let owner = owner_of(partition_of(key, store.partition_count()), addrs.len());
    assert_eq!(
        owner,
        owner_of(partition_of(oid, store.partition_count()), addrs.len()),
        "a fragment lives on its object's shard"
    );
    let mut s = connect(addrs[owner]);
    let chunk = |seed: u64| pattern(seed, 4096);
    // FragWrite of stripes 0..2: new versions, keep versions, chunks.
    let write = |s: &mut TcpStream, v: u64, keep: u64, seed: u64, create: bool| {
        let mut p = u64s(&[v, v]);
        p.extend(u64s(&[keep, keep]));
        // Each stripe's new state: a whole-stripe write, every data fragment at v.
        p.extend(u64s(&[v; 8]));
        p.extend(chunk(seed));
        p.extend(chunk(seed + 1));
        let mut h = frag_request(Op::FragWrite, key, 0, 2);
        if create {
            h.flags |= collie_net::peer::FLAG_CREATE;
        }
        call(s, h, &p).0.status
    };
    let (v10, v11) = (10u64 << 32, 11u64 << 32);
    assert_eq!(write(&mut s, v10, 1, 100, true), status::OK);
    assert_eq!(write(&mut s, v11, v10, 200, false), status::OK);
    assert_eq!(frag_read(&mut s, key, 0, 0, 0), (v11, chunk(200)));
    // The version the second write built on is still there.
    assert_eq!(frag_read(&mut s, key, 0, v10, 0), (v10, chunk(100)));
    // A stripe nobody wrote after creation reads as zeros at the initial version.
    let (r, p) = call(&mut s, frag_request(Op::FragRead, key, 7, 1), &u64s(&[0]));
    assert_eq!(r.status, status::OK);
    assert_eq!(u64::from_le_bytes(p[..8].try_into().unwrap()), 1);
    assert!(p[8..].iter().all(|&b| b == 0));

    // A crash between a chunk write and its header entry: the next write (keeping
    // v11) put its chunk in v10's slot, 1, and died before the header said so. That
    // slot no longer matches its CRC: v10 is gone, v11 is intact.
    let mut h = request(Op::Write, key, HEADER + (1 << 20), 4096);
    h.object_size = FRAGMENT_OBJECT;
    assert_eq!(call(&mut s, h, &chunk(300)).0.status, status::OK);
    assert_eq!(frag_read(&mut s, key, 0, 0, 0), (v11, chunk(200)));
    assert_eq!(
        frag_read(&mut s, key, 0, v10, 0).0,
        0,
        "a torn slot must not read as v10"
    );

    // Bad requests: refused, and the connection goes on serving.
    let bad = |s: &mut TcpStream, h: PeerHeader, p: &[u8]| {
        let st = call(s, h, p).0.status;
        assert!(st == status::INVALID, "status {st} for {h:?}");
    };
    // More stripes than an object has, a payload shorter than its lists.
    bad(
        &mut s,
        frag_request(Op::FragRead, key, 250, 7),
        &u64s(&[0; 7]),
    );
    bad(&mut s, frag_request(Op::FragRead, key, 0, 2), &u64s(&[0]));
    bad(
        &mut s,
        frag_request(Op::FragWrite, key, 0, 1),
        &u64s(&[v11 + 1, v11]),
    );
    bad(&mut s, frag_request(Op::FragRead, key, 0, u64::MAX), &[]);
    // A geometry that is not one (parity 0, 3 data fragments), a key that is not a
    // fragment of it (index 6 of 4:2), an oid that is not a data object.
    let mut h = frag_request(Op::FragRead, key, 0, 1);
    h.geometry = 4 << 8;
    bad(&mut s, h, &u64s(&[0]));
    h.geometry = 3 << 8 | 1;
    bad(&mut s, h, &u64s(&[0]));
    let other = fragment_oid(oid, 6);
    let o = owner_of(partition_of(other, store.partition_count()), addrs.len());
    let mut s6 = connect(addrs[o]);
    bad(
        &mut s6,
        frag_request(Op::FragRead, other, 0, 1),
        &u64s(&[0]),
    );
    bad(&mut s, frag_request(Op::FragProbe, key, 0, 1), &[]);
    // A state that does not have this data fragment (1) at the version written.
    let mut p = u64s(&[v11 + 1, v11]);
    p.extend(u64s(&[v11 + 1, v11, v11 + 1, v11 + 1]));
    p.extend(chunk(5));
    bad(&mut s, frag_request(Op::FragWrite, key, 0, 1), &p);
    // A key asked of a shard that does not own it.
    if addrs.len() > 1 {
        let mut wrong = connect(addrs[(owner + 1) % addrs.len()]);
        bad(
            &mut wrong,
            frag_request(Op::FragRead, key, 0, 1),
            &u64s(&[0]),
        );
    }
    // One zone cannot hold 4:2: a write is refused with a clear error.
    let mut h = frag_request(Op::EcWrite, oid, 0, 4096);
    h.len = 4096;
    let (r, msg) = call(&mut s, h, &chunk(1));
    assert_eq!(r.status, status::INVALID);
    assert!(String::from_utf8_lossy(&msg).contains("zones"), "{msg:?}");
    assert_eq!(frag_read(&mut s, key, 0, 0, 0), (v11, chunk(200)));

    // Stripe 1's newest chunk rots (v11, slot 0) while v10 is intact: "newest" finds
    // nothing valid rather than v10, which a fast reader would take for current bytes.
    let mut h = request(Op::Write, key, HEADER + 4096, 4096);
    h.object_size = FRAGMENT_OBJECT;
    assert_eq!(call(&mut s, h, &chunk(400)).0.status, status::OK);
    assert_eq!(frag_read(&mut s, key, 1, v10, 0), (v10, chunk(101)));
    assert_eq!(
        frag_read(&mut s, key, 1, 0, 0).0,
        0,
        "a rotten newest chunk must not fall back"
    );
}

/// Parity fragment 4 of data object `index` of a 4:2 VDI "ec" on a store serving
/// from `dir`, created with stripe 0 at version `v` (a whole-stripe write: every data
/// fragment at `v`) holding `chunk` (v takes slot 1 of the new fragment):
/// (store, its shards' addresses, the oid, the fragment key, a connection to its shard).
fn parity_created(
    dir: &std::path::Path,
    index: u32,
    v: u64,
    chunk: &[u8],
) -> (Store, Vec<SocketAddr>, u64, u64, TcpStream) {
    use collie_placement::ids::{fragment_oid, Vid};
    let (store, addrs) = serving(dir);
    let oid = Vid::of_name("ec").data_oid(index);
    let parity = fragment_oid(oid, 4);
    let mut s = connect_owner(&store, &addrs, parity);
    let mut p = u64s(&[v, 1]);
    p.extend(u64s(&[v; 4]));
    p.extend(chunk);
    let mut h = frag_request(Op::FragWrite, parity, 0, 1);
    h.flags |= collie_net::peer::FLAG_CREATE;
    assert_eq!(call(&mut s, h, &p).0.status, status::OK);
    (store, addrs, oid, parity, s)
}

#[test]
fn a_parity_delta_builds_on_the_kept_version_and_a_torn_vector_is_refused() {
    use collie_placement::ids::fragment_oid;
    let dir = test_dir("peer-deltas");
    let chunk = |seed: u64| pattern(seed, 4096);
    let (v10, v11, v12) = (10u64 << 32, 11u64 << 32, 12u64 << 32);
    // A whole-stripe write of stripe 0 at v10: the vector says every data fragment is
    // at v10.
    let (store, addrs, oid, parity, mut s) = parity_created(dir.path(), 5, v10, &chunk(1));
    // A delta at v11 keeping v10, data fragment 1 now at v11: the parity becomes the
    // old parity XOR the delta; v10 stays readable.
    let delta = |keep: u64, version: u64, seed: u64| {
        let mut p = u64s(&[version, keep]);
        p.extend(u64s(&[v10, version, v10, v10]));
        p.extend(chunk(seed));
        p
    };
    let h = frag_request(Op::FragDelta, parity, 0, 1);
    assert_eq!(call(&mut s, h, &delta(v10, v11, 2)).0.status, status::OK);
    let xor: Vec<u8> = chunk(1).iter().zip(chunk(2)).map(|(a, b)| a ^ b).collect();
    assert_eq!(frag_read(&mut s, parity, 0, 0, 0), (v11, xor.clone()));
    assert_eq!(frag_read(&mut s, parity, 0, v10, 0), (v10, chunk(1)));
    // A retry of the same delta gives the same bytes (it builds on v10 again).
    assert_eq!(call(&mut s, h, &delta(v10, v11, 2)).0.status, status::OK);
    assert_eq!(frag_read(&mut s, parity, 0, v11, 0), (v11, xor.clone()));
    // A kept version this holder does not have: NOT_FOUND, nothing changes.
    assert_eq!(
        call(&mut s, h, &delta(9 << 32, v12, 3)).0.status,
        status::NOT_FOUND
    );
    assert_eq!(frag_read(&mut s, parity, 0, 0, 0), (v11, xor.clone()));
    // Deltas go to parity fragments only, at a named kept version.
    let data = fragment_oid(oid, 1);
    let mut sd = connect_owner(&store, &addrs, data);
    let st = call(
        &mut sd,
        frag_request(Op::FragDelta, data, 0, 1),
        &delta(v10, v12, 3),
    )
    .0
    .status;
    assert_eq!(st, status::INVALID);
    assert_eq!(
        call(&mut s, h, &delta(0, v12, 3)).0.status,
        status::INVALID,
        "keep 0 would mean 'newest'"
    );

    // A crash that kept v11's entry and chunk but not its vector (v10 took slot 1 of
    // the new fragment, v11 slot 0, whose vector is the first in the area): the slot
    // fails its checksum, so v11 is gone and v10 is intact.
    let mut h = request(Op::Write, parity, VECTORS, 32);
    h.object_size = FRAGMENT_OBJECT;
    assert_eq!(
        call(&mut s, h, &u64s(&[v10, v12, v10, v10])).0.status,
        status::OK
    );
    // The holder caches its header: a fresh store reads it from disk, as after a crash.
    drop(s);
    drop(sd);
    drop(store);
    let (store, addrs) = serving(dir.path());
    let mut s = connect_owner(&store, &addrs, parity);
    assert_eq!(
        frag_read(&mut s, parity, 0, v11, 0).0,
        0,
        "a torn vector must not read as v11"
    );
    // (A restarted holder does not answer "newest" until recovery says it is current.)
    assert_eq!(frag_read(&mut s, parity, 0, v10, 0), (v10, chunk(1)));
}

#[test]
fn a_write_may_read_back_what_the_holder_just_wrote_but_only_as_its_header_says() {
    use collie_net::peer::FLAG_RECENT;
    let dir = test_dir("peer-recent");
    let chunk = |seed: u64| pattern(seed, 4096);
    let (v10, v11) = (10u64 << 32, 11u64 << 32);
    // A single-stripe write at v10 (a new object: v10 takes slot 1), then its chunk
    // rots on the disk.
    let (_store, _addrs, oid, parity, mut s) = parity_created(dir.path(), 7, v10, &chunk(1));
    let mut h = request(Op::Write, parity, HEADER + (1 << 20), 4096);
    h.object_size = FRAGMENT_OBJECT;
    assert_eq!(call(&mut s, h, &chunk(9)).0.status, status::OK);
    // Reads that are not a write's read-back go to the disk, so rot is still seen
    // (and dog vdi check repairs it); a write's read-back gets the chunk it wrote.
    assert_eq!(
        frag_read(&mut s, parity, 0, v10, 0).0,
        0,
        "rot must be seen by readers"
    );
    assert_eq!(
        frag_read(&mut s, parity, 0, v10, FLAG_RECENT),
        (v10, chunk(1))
    );
    // A delta builds on that chunk too.
    let mut p = u64s(&[v11, v10]);
    p.extend(u64s(&[v10, v11, v10, v10]));
    p.extend(chunk(2));
    let h = frag_request(Op::FragDelta, parity, 0, 1);
    assert_eq!(call(&mut s, h, &p).0.status, status::OK);
    let xor: Vec<u8> = chunk(1).iter().zip(chunk(2)).map(|(a, b)| a ^ b).collect();
    assert_eq!(frag_read(&mut s, parity, 0, v11, 0), (v11, xor.clone()));

    // The object is removed and made again with other bytes at v11 (a whole write of
    // two stripes): what memory still holds for v11 is not the slot's chunk, so it is
    // not an answer.
    let h = frag_request(Op::FragRemove, oid, 0, 0);
    assert_eq!(call(&mut s, h, &[]).0.status, status::OK);
    let mut p = u64s(&[v11, v11, 1, 1]);
    p.extend(u64s(&[v11; 8]));
    p.extend(chunk(3));
    p.extend(chunk(4));
    let mut h = frag_request(Op::FragWrite, parity, 0, 2);
    h.flags |= collie_net::peer::FLAG_CREATE;
    assert_eq!(call(&mut s, h, &p).0.status, status::OK);
    assert_eq!(
        frag_read(&mut s, parity, 0, v11, FLAG_RECENT),
        (v11, chunk(3))
    );
    assert_eq!(frag_read(&mut s, parity, 0, v11, 0), (v11, chunk(3)));
}
