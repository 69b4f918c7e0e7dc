//! tmpfs refuses O_DIRECT: the store must still work there (buffered I/O + fdatasync),
//! say so once, and report it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use collie_engine::Store;
use support::*;

#[test]
fn store_on_tmpfs_works_buffered() {
    let m = Mount::tmpfs("64m");
    let cfg = small_config(m.path.join("store"));
    let store = Store::open(cfg.clone()).unwrap();
    assert!(
        !store.direct_io(),
        "tmpfs cannot do O_DIRECT; the store should know it runs buffered"
    );
    for i in 0..8u64 {
        store
            .write((3 << 32) | i, 1000 * i, pattern(i, 300_000), meta(1))
            .unwrap();
    }
    store.maintain().unwrap();
    store.shutdown().unwrap();
    let store = Store::open(cfg).unwrap();
    for i in 0..8u64 {
        assert!(store.read((3 << 32) | i, 1000 * i, 300_000).unwrap() == pattern(i, 300_000));
    }
    store.shutdown().unwrap();
}
