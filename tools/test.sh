#!/usr/bin/env bash
# The README's test command: installs what the tests need, then fmt, clippy and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests drive (real clients, real tools). Installed only if missing.
need=()
command -v fio >/dev/null || need+=(fio)
command -v nbdinfo >/dev/null || need+=(libnbd-bin)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
if ((${#need[@]})); then
  echo "test.sh: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --release -- -D warnings
# One release build serves every test: the process-level tests are only meaningful
# (and fast enough) optimised. Benches run once each in test mode to prove they work.
cargo test --workspace --all-targets --release
