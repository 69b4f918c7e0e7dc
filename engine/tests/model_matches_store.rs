//! Random sequences of write / read / discard / remove / maintain / restart against an
//! in-memory model: the store must never differ from it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;

use collie_engine::{Store, StoreError};
use proptest::prelude::*;
use support::*;

#[derive(Debug, Clone)]
enum Step {
    Write {
        obj: u8,
        off: u64,
        len: u64,
        seed: u64,
    },
    Read {
        obj: u8,
        off: u64,
        len: u64,
    },
    Discard {
        obj: u8,
        off: u64,
        len: u64,
    },
    Remove {
        obj: u8,
    },
    Maintain,
    Restart,
}

fn range() -> impl Strategy<Value = (u64, u64)> {
    // Mostly small and misaligned, sometimes large and crossing many 4 KiB chunks.
    prop_oneof![
        3 => (0..OBJ - 1, 1..9000u64),
        1 => (0..OBJ - 1, 1..(600 << 10) as u64),
    ]
    .prop_map(|(off, len)| (off, len.min(OBJ - off)))
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..5u8, range(), any::<u64>()).prop_map(|(obj, (off, len), seed)| Step::Write { obj, off, len, seed }),
        4 => (0..5u8, range()).prop_map(|(obj, (off, len))| Step::Read { obj, off, len }),
        2 => (0..5u8, range()).prop_map(|(obj, (off, len))| Step::Discard { obj, off, len }),
        1 => (0..5u8).prop_map(|obj| Step::Remove { obj }),
        1 => Just(Step::Maintain),
        1 => Just(Step::Restart),
    ]
}

fn oid(obj: u8) -> u64 {
    (0x42 << 32) | obj as u64
}

fn run(steps: Vec<Step>) {
    let dir = test_dir("model");
    let cfg = small_config(dir.path());
    let mut store = Some(Store::open(cfg.clone()).unwrap());
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut version = 0;
    for s in steps {
        let st = store.as_ref().unwrap();
        version += 1;
        match s {
            Step::Write {
                obj,
                off,
                len,
                seed,
            } => {
                let data = pattern(seed, len as usize);
                st.write(oid(obj), off, data.clone(), meta(version))
                    .unwrap();
                let m = model
                    .entry(oid(obj))
                    .or_insert_with(|| vec![0; OBJ as usize]);
                m[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
            Step::Read { obj, off, len } => {
                match (st.read(oid(obj), off, len), model.get(&oid(obj))) {
                    (Ok(got), Some(m)) => assert!(
                        got == m[off as usize..(off + len) as usize],
                        "read {obj} {off}+{len} differs"
                    ),
                    (Err(StoreError::NotFound(_)), None) => {}
                    (got, m) => panic!(
                        "read {obj}: store {:?} model has object: {}",
                        got.map(|v| v.len()),
                        m.is_some()
                    ),
                }
            }
            Step::Discard { obj, off, len } => {
                st.discard(oid(obj), off, len, meta(version)).unwrap();
                if let Some(m) = model.get_mut(&oid(obj)) {
                    m[off as usize..(off + len) as usize].fill(0);
                }
            }
            Step::Remove { obj } => {
                st.remove(oid(obj)).unwrap();
                model.remove(&oid(obj));
            }
            Step::Maintain => st.maintain().unwrap(),
            Step::Restart => {
                store.take().unwrap().shutdown().unwrap();
                store = Some(Store::open(cfg.clone()).unwrap());
            }
        }
    }
    // Final full comparison, also of the object list and used bytes.
    let st = store.take().unwrap();
    let mut want: Vec<u64> = model.keys().copied().collect();
    want.sort_unstable();
    assert_eq!(st.list().unwrap(), want);
    for (&o, m) in &model {
        assert!(
            st.read(o, 0, OBJ).unwrap() == *m,
            "object {o:#x} differs at the end"
        );
        let info = st.stat(o).unwrap().unwrap();
        assert_eq!(info.size, OBJ);
        assert!(info.used <= OBJ);
    }
    assert_eq!(st.stats().unwrap().checksum_errors, 0);
    st.shutdown().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 200, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model(steps in proptest::collection::vec(step(), 1..60)) {
        run(steps);
    }
}

/// A fixed sequence that overwrites enough to force compaction and checks that
/// compaction really ran and freed segments.
#[test]
fn compaction_reclaims_overwritten_segments() {
    let dir = test_dir("compact");
    let cfg = small_config(dir.path());
    let st = Store::open(cfg.clone()).unwrap();
    let o = oid(1);
    for round in 0..12u64 {
        for i in 0..4u64 {
            st.write(
                o,
                i * (256 << 10),
                pattern(round * 10 + i, 256 << 10),
                meta(round + 1),
            )
            .unwrap();
        }
        st.maintain().unwrap();
    }
    st.maintain().unwrap();
    st.maintain().unwrap();
    let s = st.stats().unwrap();
    assert!(s.compacted_segments > 0, "no segment compacted: {s:?}");
    assert!(s.segments <= 6, "too many segments left: {s:?}");
    let mut want = Vec::new();
    for i in 0..4 {
        want.extend(pattern(110 + i, 256 << 10));
    }
    assert!(st.read(o, 0, 1 << 20).unwrap() == want);
    st.shutdown().unwrap();
    let st = Store::open(cfg).unwrap();
    assert!(st.read(o, 0, 1 << 20).unwrap() == want);
    st.shutdown().unwrap();
}

/// Compaction of segments full of small live extents with dead ones and large dead
/// gaps between them (read many to a disk request, a new window after a gap): every
/// byte survives, also across a restart.
#[test]
fn compaction_moves_many_small_extents_in_windows() {
    let dir = test_dir("compact-small");
    let cfg = small_config(dir.path());
    let st = Store::open(cfg.clone()).unwrap();
    let (small, big) = (oid(2), oid(3));
    let mut model = vec![0u8; OBJ as usize];
    let mut version = 1;
    let mut write = |o: u64, off: u64, data: Vec<u8>, model: Option<&mut Vec<u8>>| {
        st.write(o, off, data.clone(), meta(version)).unwrap();
        version += 1;
        if let Some(m) = model {
            m[off as usize..off as usize + data.len()].copy_from_slice(&data);
        }
    };
    // 4 KiB writes in segment order, with a 200 KiB record of another object after
    // every 32 of them.
    for i in 0..512u64 {
        write(small, i * 8192, pattern(i, 4096), Some(&mut model));
        if i % 32 == 31 {
            write(
                big,
                (i / 32) * (200 << 10),
                pattern(1000 + i, 200 << 10),
                None,
            );
        }
    }
    // The big object goes and three of every four small writes are overwritten: the
    // old segments keep a quarter of their small extents, in runs split by dead gaps.
    st.remove(big).unwrap();
    for i in (0..512u64).filter(|i| i % 4 != 0) {
        write(small, i * 8192, pattern(5000 + i, 4096), Some(&mut model));
    }
    for _ in 0..6 {
        st.maintain().unwrap();
    }
    let s = st.stats().unwrap();
    assert!(s.compacted_segments > 0, "no segment compacted: {s:?}");
    assert_eq!(s.checksum_errors, 0);
    assert!(st.read(small, 0, OBJ).unwrap() == model);
    st.shutdown().unwrap();
    let st = Store::open(cfg).unwrap();
    assert!(st.read(small, 0, OBJ).unwrap() == model);
    st.shutdown().unwrap();
}

/// Segments full of small live records (an erasure-coded fragment's 32-byte header
/// entries) are full, not empty: each record holds a block. Compaction may pack them
/// once, then leaves them be; it used to weigh them by payload bytes, find them
/// nearly empty and copy them over and over, forever.
#[test]
fn compaction_leaves_segments_of_small_live_records_alone() {
    let dir = test_dir("compact-tiny");
    let cfg = small_config(dir.path());
    let st = Store::open(cfg.clone()).unwrap();
    let o = oid(4);
    let mut model = vec![0u8; OBJ as usize];
    // About eight 1 MiB segments of one-record batches of 32 bytes each.
    for i in 0..1000u64 {
        let (off, data) = (i * 64, pattern(i, 32));
        st.write(o, off, data.clone(), meta(i + 1)).unwrap();
        model[off as usize..off as usize + 32].copy_from_slice(&data);
    }
    let compacted = || st.stats().unwrap().compacted_segments;
    for _ in 0..3 {
        st.maintain().unwrap();
    }
    // Background maintenance runs every 50 ms as well: give it rounds of its own.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let settled = compacted();
    std::thread::sleep(std::time::Duration::from_millis(500));
    for _ in 0..3 {
        st.maintain().unwrap();
    }
    let s = st.stats().unwrap();
    assert_eq!(
        s.compacted_segments, settled,
        "compaction kept copying live records: {s:?}"
    );
    assert!(s.segments <= 10, "{s:?}");
    assert!(st.read(o, 0, OBJ).unwrap() == model);
    st.shutdown().unwrap();
    let st = Store::open(cfg).unwrap();
    assert!(st.read(o, 0, OBJ).unwrap() == model);
    st.shutdown().unwrap();
}
