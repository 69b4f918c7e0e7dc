//! Erasure coding beside a copy: encoding a whole 4 MiB object, decoding one with P data
//! fragments lost, and one decode call over a single stripe (the fixed per-call cost
//! `Codec::decode` warns about), each for 2:1, 4:2 and 8:3 with 4 KiB chunks. A memcpy
//! and a CRC32C of 4 MiB are measured in the same run, so every figure also reads as a
//! ratio to memcpy, which moves less with the machine than the bare figure.
//!
//! The cases do what the engine will: split the object with `Geometry::split` and reuse
//! one `Codec` per geometry across calls; their allocations (fragments, parity, decoded
//! fragments) are part of the cost. The memcpy copies into a buffer made once.
//!
//! After the criterion group, one line per case from a timing loop of our own: a fixed
//! number of rounds, each running every case in turn for about `BATCH` (so load from
//! elsewhere falls on all cases alike), and the median round per case.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::ops::Range;
use std::time::{Duration, Instant};

use collie_benches::{pattern, OBJECT_SIZE};
use collie_placement::erasure::{Codec, Geometry, DEFAULT_CHUNK};
use criterion::{BenchmarkId, Criterion, Throughput};

/// (data, parity) fragments of each geometry measured.
const GEOMETRIES: [(u32, u32); 3] = [(2, 1), (4, 2), (8, 3)];
/// Rounds of the summary loop.
const ROUNDS: usize = 21;
/// Time one case runs for in each summary round (whole calls, at least one).
const BATCH: Duration = Duration::from_millis(5);
/// Most calls in one summary batch, whatever the calibration says.
const MAX_BATCH: u32 = 2000;

/// One geometry's inputs, made once: the object, then its data and parity fragments.
struct Fixture {
    label: String,
    geo: Geometry,
    object: Vec<u8>,
    frags: Vec<Vec<u8>>,
}

impl Fixture {
    fn new(data: u32, parity: u32) -> Fixture {
        assert!(
            parity <= data,
            "the decode cases lose `parity` data fragments"
        );
        let geo = Geometry::new(data, parity, DEFAULT_CHUNK, OBJECT_SIZE).expect("geometry");
        let object = pattern(u64::from(data << 8 | parity), OBJECT_SIZE as usize);
        let mut frags = geo.split(&object).expect("whole stripes");
        let parity_frags = Codec::new(geo).encode(&slices(&frags)).expect("encoding");
        frags.extend(parity_frags);
        let fx = Fixture {
            label: format!("{data}:{parity}"),
            geo,
            object,
            frags,
        };
        // What the decode cases time must be a real recovery of the object.
        let restored = Codec::new(geo)
            .decode(&fx.survivors(0..geo.fragment_size() as usize))
            .expect("decoding");
        assert_eq!(geo.join(&slices(&restored)).expect("joining"), fx.object);
        fx
    }

    /// Every fragment's `range`, with data fragments `0..parity` lost: exactly `data`
    /// fragments left, the most a decode may have to make up.
    fn survivors(&self, range: Range<usize>) -> Vec<Option<&[u8]>> {
        let lost = self.geo.parity() as usize;
        self.frags
            .iter()
            .enumerate()
            .map(|(i, f)| (i >= lost).then(|| &f[range.clone()]))
            .collect()
    }
}

fn slices(frags: &[Vec<u8>]) -> Vec<&[u8]> {
    frags.iter().map(Vec::as_slice).collect()
}

/// One measured operation: its criterion id, the bytes one call handles, and the call.
struct Case<'a> {
    function: &'static str,
    parameter: String,
    bytes: u64,
    run: Box<dyn FnMut() + 'a>,
}

fn cases(fixtures: &[Fixture]) -> Vec<Case<'_>> {
    let size = OBJECT_SIZE as usize;
    let src = pattern(1, size);
    let crc_src = src.clone();
    let mut dst = vec![0u8; size];
    let mut cases = vec![
        Case {
            function: "memcpy",
            parameter: "4MiB".into(),
            bytes: OBJECT_SIZE,
            run: Box::new(move || {
                dst.copy_from_slice(black_box(&src));
                black_box(&mut dst);
            }),
        },
        Case {
            function: "crc32c",
            parameter: "4MiB".into(),
            bytes: OBJECT_SIZE,
            run: Box::new(move || {
                black_box(crc32c::crc32c(black_box(&crc_src)));
            }),
        },
    ];
    for fx in fixtures {
        let geo = fx.geo;
        let mut codec = Codec::new(geo);
        cases.push(Case {
            function: "encode",
            parameter: fx.label.clone(),
            bytes: OBJECT_SIZE,
            run: Box::new(move || {
                let data = geo.split(black_box(&fx.object)).expect("whole stripes");
                black_box(codec.encode(&slices(&data)).expect("encoding"));
            }),
        });
    }
    for fx in fixtures {
        let mut codec = Codec::new(fx.geo);
        let have = fx.survivors(0..fx.geo.fragment_size() as usize);
        cases.push(Case {
            function: "decode",
            parameter: fx.label.clone(),
            bytes: OBJECT_SIZE,
            run: Box::new(move || {
                black_box(codec.decode(black_box(&have)).expect("decoding"));
            }),
        });
    }
    for fx in fixtures {
        let mut codec = Codec::new(fx.geo);
        // Stripe 0: the first chunk of every fragment.
        let have = fx.survivors(0..fx.geo.chunk() as usize);
        cases.push(Case {
            function: "decode_stripe",
            parameter: fx.label.clone(),
            bytes: fx.geo.stripe_size(),
            run: Box::new(move || {
                black_box(codec.decode(black_box(&have)).expect("decoding"));
            }),
        });
    }
    cases
}

/// Whether criterion measures in this run (`cargo bench` passes `--bench`); under
/// `cargo test` it runs each case once and the summary loop is skipped too.
fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench")
        && !args
            .iter()
            .any(|a| a == "--test" || a == "--list" || a.starts_with("--profile-time"))
}

fn gib_per_s(bytes: u64, per_call: Duration) -> f64 {
    bytes as f64 / per_call.as_secs_f64() / f64::from(1u32 << 30)
}

/// `x` to three significant figures (two decimals at least), so the single-stripe
/// figures do not print as 0.00.
fn sig3(x: f64) -> String {
    let decimals = if x > 0.0 && x < 1.0 {
        2 - x.log10().floor() as i32
    } else {
        2
    };
    format!("{x:.*}", decimals.clamp(2, 6) as usize)
}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{} KiB", n >> 10)
    }
}

/// The summary: GiB/s and ratio to memcpy per case, from the median of `ROUNDS`
/// interleaved rounds. `cases[0]` is the memcpy.
fn summary(cases: &mut [Case<'_>]) {
    assert_eq!(cases[0].function, "memcpy", "the baseline comes first");
    let batches: Vec<u32> = cases
        .iter_mut()
        .map(|c| {
            (c.run)();
            let start = Instant::now();
            (c.run)();
            let one = start.elapsed().max(Duration::from_nanos(1));
            (BATCH.as_nanos() / one.as_nanos()).clamp(1, u128::from(MAX_BATCH)) as u32
        })
        .collect();
    let mut per_call: Vec<Vec<Duration>> = vec![Vec::with_capacity(ROUNDS); cases.len()];
    for _ in 0..ROUNDS {
        for ((c, &n), times) in cases.iter_mut().zip(&batches).zip(&mut per_call) {
            let start = Instant::now();
            for _ in 0..n {
                (c.run)();
            }
            times.push(start.elapsed() / n);
        }
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort_unstable();
        times[times.len() / 2]
    };
    let base = gib_per_s(cases[0].bytes, median(&mut per_call[0]));
    println!();
    println!(
        "erasure summary: {} objects, {} chunks, decodes with P data fragments lost; \
         median of {ROUNDS} interleaved rounds",
        human_bytes(OBJECT_SIZE),
        human_bytes(DEFAULT_CHUNK)
    );
    println!(
        "{:<22} {:>8} {:>11} {:>8} {:>9}",
        "case", "bytes", "per call", "GiB/s", "x memcpy"
    );
    for (c, times) in cases.iter().zip(&mut per_call) {
        let t = median(times);
        let gib = gib_per_s(c.bytes, t);
        println!(
            "{:<22} {:>8} {:>8.1} µs {:>8} {:>9}",
            format!("{}/{}", c.function, c.parameter),
            human_bytes(c.bytes),
            t.as_secs_f64() * 1e6,
            sig3(gib),
            sig3(gib / base)
        );
    }
}

fn main() {
    let fixtures: Vec<Fixture> = GEOMETRIES
        .iter()
        .map(|&(d, p)| Fixture::new(d, p))
        .collect();
    let mut cases = cases(&fixtures);
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("erasure");
    for case in &mut cases {
        g.throughput(Throughput::Bytes(case.bytes));
        g.bench_function(BenchmarkId::new(case.function, &case.parameter), |b| {
            b.iter(|| (case.run)())
        });
    }
    g.finish();
    c.final_summary();
    if measuring() {
        summary(&mut cases);
    }
}
