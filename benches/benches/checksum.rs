//! CRC32C throughput: the store computes one per 4 KiB chunk of every write and checks
//! one per chunk of every read, so this bounds what the checksums may cost.

use std::hint::black_box;

use collie_benches::pattern;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn crc32c(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc32c");
    for (label, len) in [("4KiB", 4usize << 10), ("1MiB", 1 << 20)] {
        let buf = pattern(len as u64, len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(label), &buf, |b, buf| {
            b.iter(|| crc32c::crc32c(black_box(buf)))
        });
    }
    g.finish();
}

criterion_group!(benches, crc32c);
criterion_main!(benches);
