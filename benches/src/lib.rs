//! collie-benches: helpers shared by the criterion benches in `benches/` (where a bench
//! store lives, how it is configured, realistic object ids, bench payloads).
//!
//! Must not: be a dependency of any production crate, or put a store on tmpfs (there the
//! engine falls back to buffered I/O and the figures would not be about the disk).

use std::io;
use std::path::{Path, PathBuf};

use collie_engine::{Store, StoreConfig, WriteMeta};

/// Default object size (DESIGN.md §3).
pub const OBJECT_SIZE: u64 = 4 << 20;

/// The vid the benches write to: any 24-bit value; this one is FNV-1a-looking, not 0/1.
pub const BENCH_VID: u32 = 0x00c0_11e5;

/// A data object id: `vid << 32 | index` (DESIGN.md §2).
pub fn data_oid(vid: u32, index: u32) -> u64 {
    debug_assert!(vid < 1 << 24, "vid is 24 bits");
    (u64::from(vid) << 32) | u64::from(index)
}

/// Version/epoch/size for a bench write to a 4 MiB object.
pub fn bench_meta(version: u64) -> WriteMeta {
    WriteMeta {
        object_size: OBJECT_SIZE,
        version,
        epoch: 1,
    }
}

/// Where bench stores go: `$COLLIE_BENCH_DIR` if set, else `default` (a bench passes
/// `env!("CARGO_TARGET_TMPDIR")`, a directory under `target/` on the workspace's disk).
pub fn bench_base(default: &str) -> PathBuf {
    std::env::var_os("COLLIE_BENCH_DIR").map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// A fresh directory under `base` for one bench's store, removed when the guard drops.
pub fn bench_dir(base: &Path, name: &str) -> io::Result<tempfile::TempDir> {
    std::fs::create_dir_all(base)?;
    tempfile::Builder::new().prefix(name).tempdir_in(base)
}

/// The store a bench opens: durable (an fdatasync per batch), `shards` executors, few
/// partitions and 16 MiB segments so opening and filling stay quick.
pub fn bench_config(dir: &Path, shards: usize) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.shards = shards;
    c.partitions = 8;
    c.segment_size = 16 << 20;
    c
}

/// The first `count` objects of `vid` (index order) that shard `shard` owns, so a bench
/// running on that shard never crosses to another one.
pub fn owned_oids(store: &Store, shard: usize, vid: u32, count: usize) -> Vec<u64> {
    (0..u32::MAX)
        .map(|i| data_oid(vid, i))
        .filter(|&oid| store.owner(oid) == shard)
        .take(count)
        .collect()
}

pub use collie_placement::pattern::pattern;

/// A small xorshift generator: offsets for random I/O without a dependency.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform-enough value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        self.next_u64() % n
    }
}
