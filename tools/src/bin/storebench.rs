//! storebench: drives the node-local store the way fio drives a disk, so the two can be
//! compared side by side (fio-profiles/store-vs-raw.sh). It opens a store in `--dir`,
//! fills the span first when it will read, then keeps `--qd` ops outstanding, spread
//! over the shards: each shard runs its share of the queue depth as glommio tasks that
//! issue ops on the objects that shard owns (no cross-shard hop), until `--seconds` pass
//! or `--ops` ops were issued. Every write is durable (the store's group commit: one
//! fdatasync per batch) unless `--nosync`. Prints IOPS, MiB/s and latency percentiles.

use std::cell::Cell;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use collie_engine::{Shard, Store, StoreConfig, WriteMeta};
use hdrhistogram::Histogram;

/// Objects are 4 MiB (DESIGN.md §3); the span is cut into objects of this size.
const OBJECT_SIZE: u64 = 4 << 20;
/// The vid storebench writes to (24 bits).
const VID: u64 = 0x00b3_7c11;
/// Bounds that keep a typo from asking for absurd work.
const MAX_QD: usize = 4096;
const MAX_SPAN: u64 = 1 << 40;
/// Slowest op the latency histogram holds exactly (longer ones saturate): 10 minutes.
const MAX_LATENCY_NS: u64 = 600_000_000_000;

const USAGE: &str = "\
usage: storebench --dir DIR [options]
  --dir DIR            store directory (created; an existing store there is reused)
  --size SIZE          data span, cut into 4 MiB objects (default 1G)
  --seconds N          run time limit (default 10)
  --ops N              op count limit (default 100000000)
  --bs SIZE            op size: 4k .. 4M (default 4k)
  --qd N               outstanding ops over all shards (default 32)
  --rw MODE            randwrite | randread | write | read (default randwrite)
  --shards N           shard executors (default: one per core)
  --partitions N       partitions, when the store is created (default: the store's, 64)
  --segment-size SIZE  segment file size, when the store is created (default 64M)
  --nosync             skip fdatasync (Sheepdog's -n): not durable
  --json               print one JSON object instead of text
sizes take k, M, G, T suffixes (powers of 1024).";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    RandWrite,
    RandRead,
    Write,
    Read,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "randwrite" => Mode::RandWrite,
            "randread" => Mode::RandRead,
            "write" => Mode::Write,
            "read" => Mode::Read,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Mode::RandWrite => "randwrite",
            Mode::RandRead => "randread",
            Mode::Write => "write",
            Mode::Read => "read",
        }
    }
    fn is_write(self) -> bool {
        matches!(self, Mode::RandWrite | Mode::Write)
    }
    fn is_random(self) -> bool {
        matches!(self, Mode::RandWrite | Mode::RandRead)
    }
}

#[derive(Debug)]
struct Args {
    dir: PathBuf,
    size: u64,
    seconds: f64,
    ops: u64,
    bs: u64,
    qd: usize,
    rw: Mode,
    shards: Option<usize>,
    partitions: Option<u32>,
    segment_size: Option<u64>,
    nosync: bool,
    json: bool,
}

/// `4k`, `1M`, `1G`, `4096`, `1MiB`: powers of 1024.
fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.char_indices().last()? {
        (i, 'k' | 'K') => (&t[..i], 10),
        (i, 'm' | 'M') => (&t[..i], 20),
        (i, 'g' | 'G') => (&t[..i], 30),
        (i, 't' | 'T') => (&t[..i], 40),
        _ => (t, 0),
    };
    num.parse::<u64>().ok()?.checked_mul(1 << shift)
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        dir: PathBuf::new(),
        size: 1 << 30,
        seconds: 10.0,
        ops: 100_000_000,
        bs: 4 << 10,
        qd: 32,
        rw: Mode::RandWrite,
        shards: None,
        partitions: None,
        segment_size: None,
        nosync: false,
        json: false,
    };
    let mut have_dir = false;
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |v: &str| format!("bad value {v:?} for {flag}");
        match flag.as_str() {
            "--dir" => {
                a.dir = PathBuf::from(value()?);
                have_dir = true;
            }
            "--size" => a.size = value().and_then(|v| parse_size(&v).ok_or_else(|| bad(&v)))?,
            "--bs" => a.bs = value().and_then(|v| parse_size(&v).ok_or_else(|| bad(&v)))?,
            "--segment-size" => {
                a.segment_size = Some(value().and_then(|v| parse_size(&v).ok_or_else(|| bad(&v)))?)
            }
            "--seconds" => a.seconds = value().and_then(|v| v.parse().map_err(|_| bad(&v)))?,
            "--ops" => a.ops = value().and_then(|v| v.parse().map_err(|_| bad(&v)))?,
            "--qd" => a.qd = value().and_then(|v| v.parse().map_err(|_| bad(&v)))?,
            "--shards" => a.shards = Some(value().and_then(|v| v.parse().map_err(|_| bad(&v)))?),
            "--partitions" => {
                a.partitions = Some(value().and_then(|v| v.parse().map_err(|_| bad(&v)))?)
            }
            "--rw" => a.rw = value().and_then(|v| Mode::parse(&v).ok_or_else(|| bad(&v)))?,
            "--nosync" => a.nosync = true,
            "--json" => a.json = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !have_dir {
        return Err("--dir is required".into());
    }
    // A power of two in 4k..=4M is block-aligned and divides the object size.
    if a.bs < 4096 || a.bs > OBJECT_SIZE || !a.bs.is_power_of_two() {
        return Err(format!(
            "--bs must be a power-of-two multiple of 4k up to 4M, not {}",
            a.bs
        ));
    }
    if a.size < a.bs || a.size > MAX_SPAN {
        return Err(format!(
            "--size must be between --bs and {}T",
            MAX_SPAN >> 40
        ));
    }
    if a.qd == 0 || a.qd > MAX_QD {
        return Err(format!("--qd must be in 1..={MAX_QD}"));
    }
    if !(a.seconds > 0.0 && a.seconds.is_finite()) {
        return Err("--seconds must be positive".into());
    }
    if a.shards == Some(0) || a.partitions == Some(0) || a.ops == 0 {
        return Err("--shards, --partitions and --ops must be positive".into());
    }
    Ok(a)
}

/// A small xorshift generator: one per task, no shared state.
struct XorShift(u64);
impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n
    }
}

/// What one shard does in a phase: `qd` tasks issuing at most `ops` ops of `bs` bytes on
/// the `bs`-sized slots of its objects (object-major order), until `deadline`.
#[derive(Clone)]
struct Job {
    oids: Arc<[u64]>,
    bs: u64,
    qd: usize,
    ops: u64,
    write: bool,
    random: bool,
    deadline: Option<Instant>,
    seed: u64,
    /// An empty histogram that each task clones.
    empty: Histogram<u64>,
}

/// One shard's figures for a phase.
struct Outcome {
    ops: u64,
    latency_ns: Histogram<u64>,
    error: Option<String>,
}

/// An empty latency histogram in nanoseconds, 3 significant digits.
fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).map_err(|e| format!("latency histogram: {e}"))
}

/// Runs one shard's part of a phase inside its executor.
async fn run_shard(shard: Rc<Shard>, job: Job) -> Outcome {
    let per_object = OBJECT_SIZE / job.bs;
    let slots = job.oids.len() as u64 * per_object;
    let issued = Rc::new(Cell::new(0u64));
    let cursor = Rc::new(Cell::new(0u64));
    let failed = Rc::new(Cell::new(false));
    let mut tasks = Vec::with_capacity(job.qd);
    for t in 0..job.qd {
        let (shard, job, issued, cursor, failed) = (
            shard.clone(),
            job.clone(),
            issued.clone(),
            cursor.clone(),
            failed.clone(),
        );
        tasks.push(glommio::spawn_local(async move {
            let mut rng = XorShift::new(job.seed ^ ((t as u64 + 1) << 20));
            let data: Vec<u8> = (0..job.bs).map(|_| rng.below(256) as u8).collect();
            let meta = WriteMeta {
                object_size: OBJECT_SIZE,
                version: 1,
                epoch: 1,
            };
            let mut hist = job.empty.clone();
            let mut error = None;
            loop {
                let n = issued.get();
                if n >= job.ops || failed.get() || job.deadline.is_some_and(|d| Instant::now() >= d)
                {
                    break;
                }
                issued.set(n + 1);
                let slot = if job.random {
                    rng.below(slots)
                } else {
                    let c = cursor.get();
                    cursor.set((c + 1) % slots);
                    c
                };
                let oid = job.oids[(slot / per_object) as usize];
                let offset = (slot % per_object) * job.bs;
                let start = Instant::now();
                let r = if job.write {
                    shard.write(oid, offset, &data, meta).await
                } else {
                    shard.read(oid, offset, job.bs).await.map(|_| ())
                };
                hist.saturating_record(start.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64);
                if let Err(e) = r {
                    error = Some(format!(
                        "{} {oid:#018x}+{offset}: {e}",
                        if job.write { "write" } else { "read" }
                    ));
                    failed.set(true);
                    break;
                }
            }
            (hist, error)
        }));
    }
    let mut out = Outcome {
        ops: 0,
        latency_ns: job.empty.clone(),
        error: None,
    };
    for task in tasks {
        let (hist, error) = task.await;
        out.ops += hist.len();
        let _ = out.latency_ns.add(&hist);
        if out.error.is_none() {
            out.error = error;
        }
    }
    out
}

/// Runs a phase on every shard at once; returns the merged figures and the wall time.
fn run_phase(store: &Store, jobs: Vec<(usize, Job)>) -> Result<(Outcome, Duration), String> {
    let mut total = Outcome {
        ops: 0,
        latency_ns: histogram()?,
        error: None,
    };
    let start = Instant::now();
    let results: Vec<Result<Outcome, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(shard, job)| {
                scope.spawn(move || {
                    store
                        .run_on(shard, move |s| run_shard(s, job))
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a driver thread panicked".into()))
            })
            .collect()
    });
    let wall = start.elapsed();
    for r in results {
        let o = r?;
        total.ops += o.ops;
        let _ = total.latency_ns.add(&o.latency_ns);
        if total.error.is_none() {
            total.error = o.error;
        }
    }
    match total.error.take() {
        Some(e) => Err(e),
        None => Ok((total, wall)),
    }
}

/// Splits `qd` and `ops` over the shards that own objects, in proportion to queue depth.
fn plan(
    per_shard: &[Arc<[u64]>],
    qd: usize,
    ops: u64,
    bs: u64,
    mode: Mode,
    deadline: Option<Instant>,
    empty: &Histogram<u64>,
) -> Vec<(usize, Job)> {
    let active: Vec<usize> = (0..per_shard.len())
        .filter(|&s| !per_shard[s].is_empty())
        .collect();
    let n = active.len().max(1);
    active
        .iter()
        .enumerate()
        .filter_map(|(i, &s)| {
            let qd_s = qd / n + usize::from(i < qd % n);
            let ops_s = ops / n as u64 + u64::from((i as u64) < ops % n as u64);
            (qd_s > 0 && ops_s > 0).then(|| {
                (
                    s,
                    Job {
                        oids: per_shard[s].clone(),
                        bs,
                        qd: qd_s,
                        ops: ops_s,
                        write: mode.is_write(),
                        random: mode.is_random(),
                        deadline,
                        seed: 0x5eed + s as u64,
                        empty: empty.clone(),
                    },
                )
            })
        })
        .collect()
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}G", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}M", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}k", b >> 10),
        b => b.to_string(),
    }
}

fn run(a: &Args) -> Result<(), String> {
    let mut cfg = StoreConfig::new(&a.dir);
    cfg.nosync = a.nosync;
    if let Some(s) = a.shards {
        cfg.shards = s;
    }
    if let Some(p) = a.partitions {
        cfg.partitions = p;
    }
    if let Some(s) = a.segment_size {
        cfg.segment_size = s;
    }
    let store =
        Store::open(cfg).map_err(|e| format!("opening store in {}: {e}", a.dir.display()))?;
    if !store.direct_io() {
        eprintln!(
            "storebench: warning: {} refuses O_DIRECT (tmpfs?): figures are not about a disk",
            a.dir.display()
        );
    }
    let objects = a.size.div_ceil(OBJECT_SIZE);
    let mut per_shard: Vec<Vec<u64>> = vec![Vec::new(); store.shard_count()];
    for i in 0..objects {
        let oid = (VID << 32) | i;
        per_shard[store.owner(oid)].push(oid);
    }
    let per_shard: Vec<Arc<[u64]>> = per_shard.into_iter().map(Arc::from).collect();
    let empty = histogram()?;

    if !a.rw.is_write() {
        // Reads need data: write every byte of the span once, 1 MiB at a time.
        let fill_bs = (1 << 20).min(OBJECT_SIZE);
        let slots = objects * (OBJECT_SIZE / fill_bs);
        let jobs: Vec<(usize, Job)> = per_shard
            .iter()
            .enumerate()
            .filter(|(_, o)| !o.is_empty())
            .map(|(s, o)| {
                let ops = o.len() as u64 * (OBJECT_SIZE / fill_bs);
                let job = Job {
                    oids: o.clone(),
                    bs: fill_bs,
                    qd: 8,
                    ops,
                    write: true,
                    random: false,
                    deadline: None,
                    seed: 7,
                    empty: empty.clone(),
                };
                (s, job)
            })
            .collect();
        let (filled, wall) =
            run_phase(&store, jobs).map_err(|e| format!("filling the span: {e}"))?;
        debug_assert_eq!(filled.ops, slots);
        if !a.json {
            println!(
                "filled {} in {:.2} s",
                human(objects * OBJECT_SIZE),
                wall.as_secs_f64()
            );
        }
    }

    let deadline = Instant::now() + Duration::from_secs_f64(a.seconds);
    let jobs = plan(&per_shard, a.qd, a.ops, a.bs, a.rw, Some(deadline), &empty);
    let (out, wall) = run_phase(&store, jobs)?;
    let shards = store.shard_count();
    store
        .shutdown()
        .map_err(|e| format!("closing store: {e}"))?;

    let secs = wall.as_secs_f64().max(1e-9);
    let iops = out.ops as f64 / secs;
    let mib_s = iops * a.bs as f64 / (1 << 20) as f64;
    let h = &out.latency_ns;
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let (p50, p99, p999, mean, max) = (
        us(0.5),
        us(0.99),
        us(0.999),
        h.mean() / 1000.0,
        h.max() as f64 / 1000.0,
    );
    if a.json {
        println!(
            "{{\"rw\":\"{}\",\"bs\":{},\"qd\":{},\"shards\":{},\"size\":{},\"nosync\":{},\"ops\":{},\
             \"seconds\":{secs:.3},\"iops\":{iops:.1},\"mib_s\":{mib_s:.2},\"lat_us\":{{\"mean\":{mean:.1},\
             \"p50\":{p50:.1},\"p99\":{p99:.1},\"p99_9\":{p999:.1},\"max\":{max:.1}}}}}",
            a.rw.name(),
            a.bs,
            a.qd,
            shards,
            objects * OBJECT_SIZE,
            a.nosync,
            out.ops,
        );
    } else {
        println!(
            "{} bs={} qd={} shards={} size={} {}",
            a.rw.name(),
            human(a.bs),
            a.qd,
            shards,
            human(objects * OBJECT_SIZE),
            if a.nosync {
                "nosync (NOT durable)"
            } else {
                "durable (fdatasync per batch)"
            }
        );
        println!(
            "  {} ops in {secs:.2} s: {iops:.0} IOPS, {mib_s:.1} MiB/s",
            out.ops
        );
        println!("  latency us: mean {mean:.0}  p50 {p50:.0}  p99 {p99:.0}  p99.9 {p999:.0}  max {max:.0}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("storebench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storebench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn queue_depth_and_ops_split_over_shards_that_own_objects() {
        let owned: Vec<Arc<[u64]>> = vec![
            Arc::from(vec![1u64, 2]),
            Arc::from(Vec::new()),
            Arc::from(vec![3u64]),
        ];
        let jobs = plan(
            &owned,
            5,
            11,
            4096,
            Mode::RandWrite,
            None,
            &histogram().unwrap(),
        );
        let shards: Vec<usize> = jobs.iter().map(|(s, _)| *s).collect();
        assert_eq!(shards, vec![0, 2]);
        assert_eq!(jobs.iter().map(|(_, j)| j.qd).sum::<usize>(), 5);
        assert_eq!(jobs.iter().map(|(_, j)| j.ops).sum::<u64>(), 11);
    }
}
