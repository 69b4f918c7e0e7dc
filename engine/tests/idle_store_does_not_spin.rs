//! glommio pitfalls: a shared-channel end that is never connected, or busy polling,
//! spins a core; six nodes on two cores must share them politely. An idle store
//! (two shards, maintenance timers running) must use almost no CPU.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use collie_engine::Store;
use support::*;

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills a zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[test]
fn idle_store_sleeps() {
    let dir = test_dir("idle");
    let mut cfg = small_config(dir.path());
    cfg.shards = 2;
    let store = Store::open(cfg).unwrap();
    store.write(1 << 32, 0, vec![7; 4096], meta(1)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_time();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_time() - before;
    store.shutdown().unwrap();
    // A spinning executor burns ~2 s here; a sleeping one a few milliseconds.
    assert!(
        used < Duration::from_millis(400),
        "idle store used {used:?} of CPU in 2 s"
    );
}
