//! The node-local store on one shard: 4 KiB and 1 MiB writes (durable: one fdatasync per
//! group-commit batch) and reads, one op at a time, plus 4 KiB writes 32 at a time to show
//! what group commit buys. Each criterion batch runs inside the owning shard's executor
//! (`iter_custom` + `Store::run_on`), so the hop from the criterion thread to the shard
//! is paid once per batch, not once per op.
//!
//! The store lives in a fresh directory under `target/` (`CARGO_TARGET_TMPDIR`), or under
//! `$COLLIE_BENCH_DIR`: a real disk, never tmpfs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use collie_benches::{
    bench_base, bench_config, bench_dir, bench_meta, owned_oids, pattern, XorShift, BENCH_VID,
    OBJECT_SIZE,
};
use collie_engine::Store;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::StreamExt;

/// Objects the benches touch: 8 × 4 MiB = 32 MiB, prefilled so reads find data.
const SPAN_OBJECTS: usize = 8;
/// The shard every op runs on (and whose objects the benches use).
const SHARD: usize = 0;

/// An open store and the objects it serves from `SHARD`. Field order matters: the store
/// shuts down before its directory is removed.
struct Fixture {
    store: Store,
    oids: Arc<[u64]>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn open() -> Fixture {
        let base = bench_base(env!("CARGO_TARGET_TMPDIR"));
        let dir = bench_dir(&base, "store-bench").expect("creating the bench store directory");
        let store = Store::open(bench_config(dir.path(), 1)).expect("opening the bench store");
        assert!(
            store.direct_io(),
            "{} refuses O_DIRECT (tmpfs?): point COLLIE_BENCH_DIR at a real disk",
            base.display()
        );
        let oids: Arc<[u64]> = owned_oids(&store, SHARD, BENCH_VID, SPAN_OBJECTS).into();
        let fill = oids.clone();
        store
            .run_on(SHARD, move |s| async move {
                let chunk = pattern(1, 1 << 20);
                let writes = fill
                    .iter()
                    .flat_map(|&oid| (0..OBJECT_SIZE).step_by(1 << 20).map(move |off| (oid, off)));
                let all = writes.map(|(oid, off)| {
                    let (s, chunk) = (&s, &chunk);
                    async move { s.write(oid, off, chunk, bench_meta(1)).await }
                });
                futures::future::try_join_all(all).await.map(|_| ())
            })
            .expect("reaching the shard")
            .expect("prefilling the bench objects");
        Fixture {
            store,
            oids,
            _dir: dir,
        }
    }

    /// Runs `iters` ops of `bs` bytes at random aligned offsets, `depth` at a time, inside
    /// the shard; returns the time the ops took there.
    fn run(&self, write: bool, bs: u64, depth: usize, iters: u64, seed: u64) -> Duration {
        let oids = self.oids.clone();
        self.store
            .run_on(SHARD, move |s| async move {
                let data = pattern(seed, bs as usize);
                let mut rng = XorShift::new(seed);
                let targets: Vec<(u64, u64)> = (0..iters)
                    .map(|_| {
                        let oid = oids[rng.below(oids.len() as u64) as usize];
                        (oid, rng.below(OBJECT_SIZE / bs) * bs)
                    })
                    .collect();
                let (s, data) = (&s, &data);
                let start = Instant::now();
                let ops = futures::stream::iter(targets).map(|(oid, off)| async move {
                    if write {
                        s.write(oid, off, data, bench_meta(seed)).await
                    } else {
                        s.read(oid, off, bs)
                            .await
                            .map(|d| assert_eq!(d.len() as u64, bs))
                    }
                });
                let mut done = ops.buffer_unordered(depth);
                while let Some(r) = done.next().await {
                    r.expect("store op failed");
                }
                start.elapsed()
            })
            .expect("reaching the shard")
    }
}

fn store(c: &mut Criterion) {
    let fx = Fixture::open();
    let mut seed = 1u64;
    let mut g = c.benchmark_group("store");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let cases = [
        ("write", true, 4u64 << 10, 1usize),
        ("write", true, 1 << 20, 1),
        ("write_qd32", true, 4 << 10, 32),
        ("read", false, 4 << 10, 1),
        ("read", false, 1 << 20, 1),
    ];
    for (name, write, bs, depth) in cases {
        let label = if bs >= 1 << 20 {
            format!("{}MiB", bs >> 20)
        } else {
            format!("{}KiB", bs >> 10)
        };
        g.throughput(Throughput::Bytes(bs));
        g.bench_function(BenchmarkId::new(name, label), |b| {
            b.iter_custom(|iters| {
                seed += 1;
                fx.run(write, bs, depth, iters, seed)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
