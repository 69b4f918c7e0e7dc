//! Requests outside an object, absurd lengths and sizes get errors, never a panic or a
//! huge allocation; the store keeps working afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use collie_engine::{Store, StoreError, WriteMeta, MAX_IO, MAX_OBJECT_SIZE};
use support::*;

#[test]
fn bad_requests_are_refused() {
    let dir = test_dir("bad");
    let store = Store::open(small_config(dir.path())).unwrap();
    let o = 5 << 32;
    store.write(o, 0, vec![1; 100], meta(1)).unwrap();
    let range = |r: Result<Vec<u8>, StoreError>| {
        assert!(matches!(r, Err(StoreError::OutOfRange(_))), "{r:?}")
    };
    range(store.read(o, OBJ - 10, 20));
    range(store.read(o, OBJ, 1));
    range(store.read(o, u64::MAX, 2));
    range(store.read(o, 0, u64::MAX));
    range(store.read(o, 0, MAX_IO + 1));
    assert!(matches!(
        store.read(6 << 32, 0, 1),
        Err(StoreError::NotFound(_))
    ));
    let w = |r: Result<(), StoreError>| {
        assert!(
            matches!(r, Err(StoreError::OutOfRange(_) | StoreError::Invalid(_))),
            "{r:?}"
        )
    };
    w(store.write(o, OBJ - 1, vec![0; 2], meta(2)));
    w(store.write(o, u64::MAX - 1, vec![0; 4], meta(2)));
    w(store.write(
        o,
        0,
        vec![0; 4],
        WriteMeta {
            object_size: 0,
            version: 2,
            epoch: 1,
        },
    ));
    w(store.write(
        o,
        0,
        vec![0; 4],
        WriteMeta {
            object_size: MAX_OBJECT_SIZE + 1,
            version: 2,
            epoch: 1,
        },
    ));
    w(store.write(
        o,
        0,
        vec![0; 4],
        WriteMeta {
            object_size: OBJ * 2,
            version: 2,
            epoch: 1,
        },
    ));
    w(store.write(
        7 << 32,
        0,
        vec![0; (MAX_IO + 1) as usize],
        WriteMeta {
            object_size: MAX_OBJECT_SIZE,
            version: 1,
            epoch: 1,
        },
    ));
    w(store.discard(o, OBJ - 1, 2, meta(2)));
    w(store.discard(o, 0, u64::MAX, meta(2)));
    // Still fine.
    assert_eq!(store.read(o, 0, 100).unwrap(), vec![1; 100]);
    assert_eq!(store.stat(o).unwrap().unwrap().version, 1);
    store.shutdown().unwrap();
}
