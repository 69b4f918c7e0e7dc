//! SIGKILL while several NBD connections have pipelined writes in flight, then start
//! again on the same store, several rounds: every acknowledged write reads back, and
//! every 4 KiB block holds either its last acknowledged content or the content of the
//! write to it that was still in flight — never older data, zeros, or a mix within one
//! block.
//!
//! Bookkeeping that makes the check exact: each writer owns a disjoint region of the
//! VDI and never has two overlapping writes in flight at once, so for each block the
//! acknowledged writes are totally ordered and at most one unacknowledged write can be
//! pending. Every block written carries (offset, generation) in its first 16 bytes and a
//! pattern derived from both in the rest, and generations are never reused, so a read
//! tells exactly which write a block came from.
//!
//! Why the test fails if acknowledged data were lost: a block whose last acked write was
//! generation g (and with nothing pending) passes only if it reads back exactly
//! `block_bytes(offset, g)`; losing that write leaves an older generation or zeros there,
//! which `check_block` rejects. Each round re-checks this on real data read from the
//! sheep (`checker_rejects_lost_writes`); every in-flight write the kill did lose is
//! checked once more as if it had been acked, and must fail — a real loss, caught; and
//! the test asserts the rounds really had acked, in-flight, overwriting and
//! object-crossing writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::nbd_client::NbdClient;
use support::*;

use collie_net::nbd::Command as Cmd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const VDI: &str = "disk";
const BLOCK: u64 = 4096;
/// Sheepdog's object size: writes crossing a multiple of it touch two objects.
const OBJECT: u64 = 4 * MIB;
const WRITERS: usize = 4;
/// Each writer's region: three objects, so two object boundaries inside it.
const REGION: u64 = 3 * OBJECT;
/// Writes in flight per connection.
const DEPTH: usize = 4;
/// Largest write, in blocks (256 KiB).
const MAX_BLOCKS: u64 = 64;
const ROUNDS: usize = 5;
/// Acks every writer must have had in a round before the kill may come.
const MIN_ACKS: u64 = 5;

/// A small deterministic generator (xorshift64*), seeded per writer and round.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The content of the block at VDI offset `off` written by generation `gen` (>= 1).
fn block_bytes(off: u64, gen: u64) -> Vec<u8> {
    let mut b = pattern(
        off.rotate_left(17) ^ gen.wrapping_mul(0x0123_4567_89ab_cdef),
        BLOCK as usize,
    );
    b[..8].copy_from_slice(&off.to_le_bytes());
    b[8..16].copy_from_slice(&gen.to_le_bytes());
    b
}

/// Which generation a block read back holds (0: never written, all zeros).
fn observed_gen(data: &[u8], off: u64) -> Result<u64, String> {
    if data.iter().all(|&b| b == 0) {
        return Ok(0);
    }
    let o = u64::from_le_bytes(data[..8].try_into().unwrap());
    let g = u64::from_le_bytes(data[8..16].try_into().unwrap());
    if o != off || g == 0 || data != block_bytes(off, g).as_slice() {
        return Err(format!(
            "block at {off}: content of no write (header says offset {o}, generation {g}): \
             torn or misplaced"
        ));
    }
    Ok(g)
}

/// What a block may hold: its last acknowledged generation, or the one in flight.
#[derive(Clone, Copy, Debug, Default)]
struct BlockState {
    acked: u64,
    pending: Option<u64>,
}

/// Checks one block read back; returns the generation it holds.
fn check_block(data: &[u8], off: u64, st: BlockState) -> Result<u64, String> {
    let g = observed_gen(data, off)?;
    if g == st.acked || Some(g) == st.pending {
        Ok(g)
    } else {
        Err(format!(
            "block at {off} (object {}): holds generation {g}, but the last acknowledged write \
             was {} and the one in flight {:?}",
            off / OBJECT,
            st.acked,
            st.pending
        ))
    }
}

/// One writer's region and what it knows about each of its blocks.
struct Region {
    start: u64,
    blocks: Vec<BlockState>,
    next_gen: u64,
}

#[derive(Clone, Copy, Debug)]
struct Write {
    off: u64,
    blocks: u64,
    gen: u64,
}

impl Write {
    fn overlaps(&self, o: &Write) -> bool {
        self.off < o.off + o.blocks * BLOCK && o.off < self.off + self.blocks * BLOCK
    }
}

#[derive(Debug, Default)]
struct RoundLog {
    acked: u64,
    /// Writes sent (or being sent) and not acknowledged when the connection died.
    in_flight_at_kill: usize,
    crossing: u64,
    overwrites: u64,
    ended_by: String,
}

impl Region {
    fn index(&self, off: u64) -> usize {
        ((off - self.start) / BLOCK) as usize
    }

    /// A write of 4 KiB..256 KiB inside the region that overlaps none in flight; a
    /// third of them straddle an object boundary.
    fn pick(&mut self, in_flight: &[(u64, Write)], rng: &mut Rng) -> Option<Write> {
        let total = REGION / BLOCK;
        for _ in 0..32 {
            let mut blocks = 1 + rng.below(MAX_BLOCKS);
            let first = if rng.below(3) == 0 {
                blocks = blocks.max(2);
                let boundary = (1 + rng.below(REGION / OBJECT - 1)) * (OBJECT / BLOCK);
                boundary - 1 - rng.below(blocks - 1)
            } else {
                rng.below(total - blocks + 1)
            };
            let w = Write {
                off: self.start + first * BLOCK,
                blocks,
                gen: self.next_gen,
            };
            if in_flight.iter().all(|(_, o)| !w.overlaps(o)) {
                self.next_gen += 1;
                return Some(w);
            }
        }
        None
    }
}

/// Writes with DEPTH requests in flight until the connection dies (the kill).
fn write_until_killed(port: u16, region: &mut Region, seed: u64, acks: &AtomicU64) -> RoundLog {
    let mut log = RoundLog::default();
    let mut rng = Rng::new(seed);
    let mut c =
        NbdClient::connect_timeout(port, VDI, Duration::from_secs(20)).expect("writer connects");
    let mut in_flight: Vec<(u64, Write)> = Vec::new();
    log.ended_by = 'run: loop {
        while in_flight.len() < DEPTH {
            let Some(w) = region.pick(&in_flight, &mut rng) else {
                break;
            };
            let first = region.index(w.off);
            let mut data = Vec::with_capacity((w.blocks * BLOCK) as usize);
            let mut overwrite = false;
            for i in 0..w.blocks as usize {
                let b = &mut region.blocks[first + i];
                assert!(b.pending.is_none(), "overlapping writes in flight");
                overwrite |= b.acked != 0;
                b.pending = Some(w.gen);
                data.extend_from_slice(&block_bytes(w.off + i as u64 * BLOCK, w.gen));
            }
            log.overwrites += u64::from(overwrite);
            if w.off / OBJECT != (w.off + w.blocks * BLOCK - 1) / OBJECT {
                log.crossing += 1;
            }
            match c.send(Cmd::Write, w.off, w.blocks * BLOCK, &data) {
                Ok(cookie) => in_flight.push((cookie, w)),
                Err(e) => {
                    // Perhaps partly sent: it stays pending like the others.
                    log.in_flight_at_kill = in_flight.len() + 1;
                    break 'run format!("send: {e}");
                }
            }
        }
        let r = match c.reply() {
            Ok(r) => r,
            Err(e) => {
                log.in_flight_at_kill = in_flight.len();
                break format!("reply: {e}");
            }
        };
        let i = in_flight
            .iter()
            .position(|(k, _)| *k == r.cookie)
            .unwrap_or_else(|| panic!("reply for unknown cookie {}", r.cookie));
        let (_, w) = in_flight.swap_remove(i);
        assert_eq!(r.error, 0, "write {w:?} failed with NBD error {}", r.error);
        let first = region.index(w.off);
        for b in &mut region.blocks[first..first + w.blocks as usize] {
            *b = BlockState {
                acked: w.gen,
                pending: None,
            };
        }
        log.acked += 1;
        acks.fetch_add(1, Ordering::SeqCst);
    };
    log
}

/// Reads every region back and checks every block; afterwards what was read is what
/// each block holds (nothing pending). Returns one block that holds data (offset,
/// bytes, generation) for the checker's self-test, and how many blocks of writes in
/// flight at the kill did not land.
fn verify(port: u16, regions: &mut [Region], round: usize, seed: u64) -> (u64, Vec<u8>, u64, u64) {
    let mut c = NbdClient::connect(port, VDI).expect("connect after restart");
    c.stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut failures = Vec::new();
    let (mut landed, mut lost_in_flight) = (0u64, 0u64);
    let mut sample = None;
    for r in regions.iter_mut() {
        for chunk in 0..REGION / OBJECT {
            let base = r.start + chunk * OBJECT;
            let data = c.read(base, OBJECT as usize).expect("read back");
            for (i, block) in data.chunks(BLOCK as usize).enumerate() {
                let off = base + i as u64 * BLOCK;
                let idx = r.index(off);
                let st = r.blocks[idx];
                match check_block(block, off, st) {
                    Ok(g) => {
                        if let Some(p) = st.pending {
                            if g == p {
                                landed += 1;
                            } else {
                                // A write that did not land looks exactly like a lost
                                // acked one: had it been acked, the check must fail.
                                lost_in_flight += 1;
                                let as_if_acked = BlockState {
                                    acked: p,
                                    pending: None,
                                };
                                assert!(check_block(block, off, as_if_acked).is_err());
                            }
                        }
                        if g != 0 && st.pending.is_none() && sample.is_none() {
                            sample = Some((off, block.to_vec(), g));
                        }
                        r.blocks[idx] = BlockState {
                            acked: g,
                            pending: None,
                        };
                    }
                    Err(e) => failures.push(e),
                }
            }
        }
    }
    c.disconnect();
    assert!(
        failures.is_empty(),
        "round {round} (seed {seed}): {} blocks wrong after kill -9 and restart; first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    eprintln!(
        "round {round}: in-flight blocks that landed {landed}, that did not {lost_in_flight}"
    );
    let (off, data, g) = sample.expect("no written block found");
    (off, data, g, lost_in_flight)
}

/// The checker is not vacuous: on a real block (acked generation `g`), losing that
/// write — reading an older generation or zeros — or holding a write never sent fails.
fn checker_rejects_lost_writes(off: u64, data: &[u8], g: u64) {
    let acked = |acked| BlockState {
        acked,
        pending: None,
    };
    assert_eq!(check_block(data, off, acked(g)), Ok(g));
    // The block as it would read had the write to it been lost:
    assert!(check_block(&vec![0u8; BLOCK as usize], off, acked(g)).is_err());
    if g > 1 {
        assert!(check_block(&block_bytes(off, g - 1), off, acked(g)).is_err());
    }
    // The block holds g but we expect a later acked generation (g was overwritten).
    assert!(check_block(data, off, acked(g + 1)).is_err());
    // A block one byte off from what generation g wrote.
    let mut torn = data.to_vec();
    torn[BLOCK as usize - 1] ^= 1;
    assert!(check_block(&torn, off, acked(g)).is_err());
    // The content of another block's write at this offset.
    assert!(check_block(&block_bytes(off + BLOCK, g), off, acked(g)).is_err());
}

#[test]
fn kill9_during_writes_keeps_acked_data() {
    let seed = std::env::var("COLLIE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("seed {seed} (set COLLIE_SEED to replay the write pattern and kill times)");
    let started = Instant::now();
    let mut sheep = Sheep::formatted("kill9", &[]);
    sheep.create_vdi(VDI, &format!("{}M", WRITERS as u64 * REGION / MIB));
    let mut regions: Vec<Region> = (0..WRITERS)
        .map(|i| Region {
            start: i as u64 * REGION,
            blocks: vec![BlockState::default(); (REGION / BLOCK) as usize],
            next_gen: 1,
        })
        .collect();
    let mut rng = Rng::new(seed);
    let (mut acked, mut in_flight, mut crossing, mut overwrites) = (0, 0, 0, 0);
    let mut not_landed = 0;

    for round in 0..ROUNDS {
        let port = sheep.nbd_port;
        let acks: Vec<AtomicU64> = (0..WRITERS).map(|_| AtomicU64::new(0)).collect();
        let pause = Duration::from_millis(rng.below(400));
        let logs: Vec<RoundLog> = std::thread::scope(|s| {
            let handles: Vec<_> = regions
                .iter_mut()
                .zip(&acks)
                .enumerate()
                .map(|(i, (r, a))| {
                    let wseed = seed ^ ((round * WRITERS + i) as u64 + 1).wrapping_mul(0x5851_f42d);
                    s.spawn(move || write_until_killed(port, r, wseed, a))
                })
                .collect();
            // Kill only once every writer has had a few acks, at a random moment after.
            let deadline = Instant::now() + Duration::from_secs(20);
            while acks.iter().any(|a| a.load(Ordering::SeqCst) < MIN_ACKS)
                && !handles.iter().any(|h| h.is_finished())
            {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: writers made no progress"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(pause);
            // kill9 returns once the process has exited and its ports are free.
            sheep.kill9();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        for (i, l) in logs.iter().enumerate() {
            eprintln!("round {round} writer {i}: {l:?}");
            assert!(
                l.acked >= MIN_ACKS,
                "round {round} writer {i} ended early: {l:?}"
            );
        }
        acked += logs.iter().map(|l| l.acked).sum::<u64>();
        in_flight += logs.iter().map(|l| l.in_flight_at_kill).sum::<usize>();
        crossing += logs.iter().map(|l| l.crossing).sum::<u64>();
        overwrites += logs.iter().map(|l| l.overwrites).sum::<u64>();

        sheep.launch();
        let (off, data, g, lost) = verify(sheep.nbd_port, &mut regions, round, seed);
        checker_rejects_lost_writes(off, &data, g);
        not_landed += lost;
    }
    eprintln!(
        "{ROUNDS} rounds in {:?}: {acked} writes acked, {in_flight} in flight at the kills, \
         {crossing} crossing objects, {overwrites} overwriting",
        started.elapsed()
    );
    assert!(in_flight > 0, "no kill caught a write in flight");
    // Blocks of unacked writes that did not land were checked as if acked and failed:
    // the check has caught real losses.
    assert!(
        not_landed > 0,
        "no in-flight write was lost: the check was never exercised"
    );
    assert!(crossing > 0 && overwrites > 0);
    let log = sheep.log();
    assert!(!log.contains("panicked"), "{log}");
}
