//! glommio pitfall (DESIGN.md §4): its IOPOLL probe reads the first DmaFile an executor
//! opens; if that file is empty the probe passes wrongly and every later read on the
//! device fails with EOPNOTSUPP while writes succeed. The store opens its non-empty
//! superblock first. This fails if reads on a brand-new, empty data directory break.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use collie_engine::Store;
use support::*;

#[test]
fn fresh_empty_directory_writes_and_reads() {
    let dir = test_dir("fresh");
    let data_dir = dir.path().join("never-used");
    let mut cfg = small_config(&data_dir);
    cfg.shards = 2;
    let store = Store::open(cfg).unwrap();
    assert!(
        store.direct_io(),
        "the test directory should be on a real disk (O_DIRECT)"
    );
    // Objects on both shards, every read goes to a segment created moments ago.
    for i in 0..16u64 {
        let oid = (0x12 << 32) | i;
        store
            .write(oid, 4096 * i, pattern(i, 10_000), meta(1))
            .unwrap();
        assert!(
            store.read(oid, 4096 * i, 10_000).unwrap() == pattern(i, 10_000),
            "object {i}"
        );
    }
    store.shutdown().unwrap();
}
