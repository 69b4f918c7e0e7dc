//! Shared helpers for the engine's integration tests: where test stores live, a small
//! store configuration, and re-running this test binary as a child process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use collie_engine::{StoreConfig, WriteMeta};

pub const OBJ: u64 = 4 << 20;

/// A fresh directory on the disk that holds `target/` (a real file system, not tmpfs,
/// so O_DIRECT is exercised). Removed when the guard drops.
pub fn test_dir(name: &str) -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(base)
        .unwrap()
}

/// Small segments and eager maintenance, so tests reach compaction and checkpoints.
pub fn small_config(dir: impl Into<PathBuf>) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.shards = 2;
    c.partitions = 8;
    c.segment_size = 1 << 20;
    c.checkpoint_every = 2 << 20;
    c.maintenance_every = Duration::from_millis(50);
    c
}

pub fn meta(version: u64) -> WriteMeta {
    WriteMeta {
        object_size: OBJ,
        version,
        epoch: 1,
    }
}

// Not every test binary writes patterns.
#[allow(unused_imports)]
pub use collie_placement::pattern::pattern;

/// Runs the test named `test` of this same test binary in a child process, with `env`
/// set; the child finds its instructions in the environment.
pub fn child_command(test: &str, env: &[(&str, String)]) -> std::process::Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A file system mounted for one test (tmpfs, or a small ext4 on a loop device), unmounted
/// when dropped. Needs root, as CI and the developers' machines have.
pub struct Mount {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
    image: Option<PathBuf>,
}

fn run(cmd: &str, args: &[&str]) {
    let st = std::process::Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        st.success(),
        "{cmd} {args:?} failed (this test needs root to mount a file system)"
    );
}

impl Mount {
    pub fn tmpfs(size: &str) -> Mount {
        let dir = test_dir("mnt");
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                path.to_str().unwrap(),
            ],
        );
        Mount {
            path,
            _dir: dir,
            image: None,
        }
    }

    /// A small ext4 (real O_DIRECT, real ENOSPC) in an image file on the test disk.
    pub fn ext4(mib: u64) -> Mount {
        let dir = test_dir("mnt");
        let image = dir.path().join("fs.img");
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(mib << 20).unwrap();
        drop(f);
        run(
            "mkfs.ext4",
            &["-q", "-F", "-m", "0", image.to_str().unwrap()],
        );
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).unwrap();
        run(
            "mount",
            &[
                "-o",
                "loop",
                image.to_str().unwrap(),
                path.to_str().unwrap(),
            ],
        );
        Mount {
            path,
            _dir: dir,
            image: Some(image),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // A file the store closed asynchronously may still be open for a moment: retry,
        // then detach lazily so no mount outlives the test run.
        let unmounted = (0..20).any(|i| {
            if i > 0 {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            std::process::Command::new("umount")
                .arg(&self.path)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if !unmounted {
            eprintln!(
                "warning: {} still busy after 1 s; unmounting lazily",
                self.path.display()
            );
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.path)
                .status();
        }
        if let Some(img) = &self.image {
            let _ = std::fs::remove_file(img);
        }
    }
}
