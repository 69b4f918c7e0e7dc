//! glommio pitfall: io_uring needs locked memory (at least 512 KiB per executor). With a
//! lower RLIMIT_MEMLOCK the store must fail to open with an error that says so, not
//! panic or hang.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::process::CommandExt;

use collie_engine::Store;
use support::*;

#[test]
#[ignore = "run as a child process with a tiny RLIMIT_MEMLOCK"]
fn open_with_low_memlock_child() {
    let Ok(dir) = std::env::var("COLLIE_MEMLOCK_DIR") else {
        return;
    };
    match Store::open(small_config(dir)) {
        Ok(_) => println!("RESULT opened"),
        Err(e) => println!("RESULT error: {e}"),
    }
}

#[test]
fn low_memlock_is_a_clear_error() {
    let dir = test_dir("memlock");
    let mut cmd = child_command(
        "open_with_low_memlock_child",
        &[("COLLIE_MEMLOCK_DIR", dir.path().display().to_string())],
    );
    // SAFETY: setrlimit is async-signal-safe; runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64 << 10,
                rlim_max: 64 << 10,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.find("RESULT").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("child said nothing: {text}"));
    assert!(
        line.contains("locked memory") && line.contains("ulimit -l"),
        "{line}"
    );
}
