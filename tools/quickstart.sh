#!/usr/bin/env bash
# The README's quick start: build, start a Collie node, create a VDI, write and read it
# through NBD, and show what dog reports. Until the cluster issue lands this is one node
# (Sheepdog's six-node loop comes with the local cluster driver); the erasure-coded VDI
# comes with erasure coding.
#
# usage: tools/quickstart.sh [DIR]     (default DIR: /var/tmp/collie-quickstart)
# Ports: 7000 (dog) and 10809 (NBD) on 127.0.0.1; stop with the command it prints.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BASE=${1:-/var/tmp/collie-quickstart}

say() { printf '\n== %s\n' "$*"; }
die() { echo "quickstart: $*" >&2; exit 1; }

# The NBD clients used below (qemu-img, qemu-io, nbdinfo); installed when missing.
need=()
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v nbdinfo >/dev/null || need+=(libnbd-bin)
if ((${#need[@]})); then
    [ "$(id -u)" = 0 ] || die "please install ${need[*]} (needs root)"
    say "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

say "building (release)"
cargo build --release --quiet -p collie-tools --bin sheep --bin dog
export PATH="$ROOT/target/release:$PATH"

if [ -f "$BASE/store0/sheep.pid" ] && kill -0 "$(cat "$BASE/store0/sheep.pid")" 2>/dev/null; then
    die "a quick-start sheep already runs (pid $(cat "$BASE/store0/sheep.pid")); stop it first: dog cluster shutdown"
fi
rm -rf "$BASE"
mkdir -p "$BASE"

say "starting sheep (one node, zone 0, port 7000, NBD port 10809)"
# sheep daemonizes and returns once it listens, so a loop can start several.
for i in 0; do sheep "$BASE/store$i" -c local -z "$i" -p "700$i"; done

say "formatting the cluster and creating a VDI"
# One node is one zone, so the default of 3 copies cannot be placed: ask for 1.
dog cluster format -c 1
dog vdi create -c 1 replica 1G

say "writing and reading through NBD"
img="$BASE/some.img"
head -c 64M /dev/urandom >"$img"
qemu-img convert -n -f raw -O raw "$img" nbd://127.0.0.1:10809/replica
qemu-img convert -f raw -O raw nbd://127.0.0.1:10809/replica "$BASE/back.img"
cmp -n $((64 << 20)) "$img" "$BASE/back.img" || die "data read back differs"
echo "64 MiB written with qemu-img and read back identical"
qemu-io -f raw -c 'write -P 0x5a 100M 1M' -c 'read -P 0x5a 100M 1M' \
    nbd://127.0.0.1:10809/replica | grep -v '/sec'
nbdinfo --map nbd://127.0.0.1:10809/replica
rm -f "$img" "$BASE/back.img"

say "dog vdi list"
dog vdi list
say "dog node info"
dog node info
say "dog cluster info"
dog cluster info

cat <<EOF

Collie is running: nbd://127.0.0.1:10809/replica (qemu-img, qemu-io, nbdcopy, fio, or
QEMU: -drive file=nbd://127.0.0.1:10809/replica,format=raw).
  dog is at $ROOT/target/release/dog (export PATH="$ROOT/target/release:\$PATH")
  logs: $BASE/store0/sheep.log
Stop it:  $ROOT/target/release/dog cluster shutdown
EOF
