//! A full disk: writes fail with a no-space error, reads go on, and once space is freed
//! (objects removed, compaction reclaims their segments) writes work again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use collie_engine::{Store, StoreError};
use support::*;

#[test]
fn full_disk_then_free_space() {
    let m = Mount::ext4(48);
    let mut cfg = small_config(m.path.join("store"));
    cfg.partitions = 4;
    let store = Store::open(cfg.clone()).unwrap();
    assert!(store.direct_io());
    let mut written = Vec::new();
    let mut full = false;
    'fill: for obj in 0..100u64 {
        let oid = (0x66 << 32) | obj;
        for part in 0..4u64 {
            match store.write(oid, part << 20, pattern(obj * 4 + part, 1 << 20), meta(1)) {
                Ok(()) => written.push((oid, part)),
                Err(StoreError::NoSpace { .. }) => {
                    full = true;
                    break 'fill;
                }
                Err(e) => panic!("expected a no-space error, got {e}"),
            }
        }
    }
    assert!(full, "48 MiB never filled up");
    assert!(written.len() > 10, "almost nothing fit: {}", written.len());
    // Reads go on while the disk is full.
    for &(oid, part) in &written {
        assert!(
            store.read(oid, part << 20, 1 << 20).unwrap()
                == pattern((oid & 0xffff) * 4 + part, 1 << 20)
        );
    }
    // Free space: remove the first half of the objects, let compaction reclaim it.
    let mut objs: Vec<u64> = written.iter().map(|w| w.0).collect();
    objs.dedup();
    let (gone, kept) = objs.split_at(objs.len() / 2);
    for &oid in gone {
        store.remove(oid).unwrap();
    }
    for _ in 0..3 {
        store.maintain().unwrap();
    }
    // Writes work again, and what was kept is intact.
    let again = (0x66 << 32) | 999;
    store
        .write(again, 0, pattern(999, 1 << 20), meta(2))
        .unwrap();
    assert!(store.read(again, 0, 1 << 20).unwrap() == pattern(999, 1 << 20));
    for &(oid, part) in written.iter().filter(|w| kept.contains(&w.0)) {
        assert!(
            store.read(oid, part << 20, 1 << 20).unwrap()
                == pattern((oid & 0xffff) * 4 + part, 1 << 20)
        );
    }
    store.shutdown().unwrap();
}
