#!/usr/bin/env bash
# The README's quick start: build, start Sheepdog's six-node quick-start cluster on this
# machine, create a VDI with three copies and an erasure-coded one, write and read them
# through NBD on different nodes, and show what dog reports. As Sheepdog's quick start:
#
#   for i in `seq 0 5`; do sheep $BASE/store$i -n -c local -z $i -p 700$i; done
#   dog cluster format
#   dog vdi create -c 3 replica 20G
#   dog vdi create -c 4:2 erasure 20G
#
# usage: tools/quickstart.sh [DIR]     (default DIR: /var/tmp/collie-quickstart)
# Ports: 7000-7005 (dog) and 10809-10814 (NBD) on 127.0.0.1; the nodes find each other
# through the local cluster driver's default state file, /tmp/collie-local-cluster.
# Stop it with the command it prints.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BASE=${1:-/var/tmp/collie-quickstart}
NODES=6

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

for ((i = 0; i < NODES; i++)); do
    pidfile="$BASE/store$i/sheep.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        die "a quick-start sheep already runs (pid $(cat "$pidfile"), $BASE/store$i); stop it first: dog cluster shutdown"
    fi
done

# Every node needs its admin port, 700i, and its NBD port, 700i + 3809 (10809-10814).
ports=()
for ((i = 0; i < NODES; i++)); do ports+=($((7000 + i))); done
for ((i = 0; i < NODES; i++)); do ports+=($((10809 + i))); done
if command -v ss >/dev/null; then
    busy=()
    listening=$(ss -Htln | awk '{ sub(/.*:/, "", $4); print $4 }' | sort -un)
    for p in "${ports[@]}"; do grep -qx "$p" <<<"$listening" && busy+=("$p"); done
else
    busy=()
    for p in "${ports[@]}"; do (: <"/dev/tcp/127.0.0.1/$p") 2>/dev/null && busy+=("$p"); done
fi
if ((${#busy[@]})); then
    die "port(s) ${busy[*]} already in use; the quick start needs 7000-7005 and 10809-10814 free (another Collie or Sheepdog? stop it, e.g. dog -p PORT cluster shutdown)"
fi

rm -rf "$BASE"
mkdir -p "$BASE"

say "starting $NODES sheep (zones 0-5, ports 7000-7005, NBD ports 10809-10814)"
# sheep daemonizes and returns once it has joined and listens, so a loop can start them.
# -n: no fdatasync before acknowledging a write (as in Sheepdog's quick start: fast,
# not crash-safe). -c local: the nodes of this machine form one cluster through the
# state file /tmp/collie-local-cluster.
for i in $(seq 0 5); do sheep "$BASE/store$i" -n -c local -z "$i" -p "700$i"; done
# Node 0 sees the later joins at its next poll of the state file (every ~200 ms). Once it
# sees all six, the cluster must be just them: any other member is a sheep of another
# cluster on this machine sharing the default state file.
ours=$(for i in $(seq 0 5); do echo "127.0.0.1:700$i"; done)
for ((t = 0; t < 50; t++)); do
    members=$(dog node list -r | awk '{ print $2 }' | sort)
    [ "$(grep -cxF "$ours" <<<"$members")" = "$NODES" ] && break
    sleep 0.1
done
if [ "$members" != "$ours" ]; then
    dog node list >&2 || true
    for i in $(seq 0 5); do kill "$(cat "$BASE/store$i/sheep.pid")" 2>/dev/null || true; done
    die "the cluster is not just the six quick-start nodes (above): other sheep on this machine use /tmp/collie-local-cluster; stop them first (the quick-start ones are stopped)"
fi

say "formatting the cluster, creating a VDI with 3 copies and a 4:2 erasure-coded one"
dog cluster format
dog vdi create -c 3 replica 20G
dog vdi create -c 4:2 erasure 20G

say "writing through node 0 (NBD port 10809), reading through node 5 (port 10814)"
img="$BASE/some.img"
head -c 64M /dev/urandom >"$img"
qemu-img convert -n -f raw -O raw "$img" nbd://127.0.0.1:10809/replica
qemu-img dd -f raw -O raw bs=1M count=64 if=nbd://127.0.0.1:10814/replica of="$BASE/back.img"
cmp "$img" "$BASE/back.img" || die "data read back through node 5 differs from what node 0 wrote"
echo "64 MiB written with qemu-img through node 0 and read back identical through node 5"
rm -f "$img" "$BASE/back.img"

say "a pattern written through node 2 (port 10811), checked through node 4 (port 10813)"
qemu-io -f raw -c 'write -P 0x5a 100M 1M' nbd://127.0.0.1:10811/replica | grep -v '/sec'
qemu-io -f raw -c 'read -P 0x5a 100M 1M' nbd://127.0.0.1:10813/replica | grep -v '/sec'

say "nbdinfo --map through node 1 (port 10810): written data, the rest holes"
nbdinfo --map nbd://127.0.0.1:10810/replica

say "the erasure-coded VDI: 64 MiB through node 3 (port 10812), read back through node 1 (port 10810)"
img="$BASE/some.img"
head -c 64M /dev/urandom >"$img"
qemu-img convert -n -f raw -O raw "$img" nbd://127.0.0.1:10812/erasure
qemu-img compare -f raw -F raw "$img" nbd://127.0.0.1:10810/erasure
rm -f "$img"
qemu-io -f raw -c 'write -P 0xec 5000 70000' nbd://127.0.0.1:10809/erasure | grep -v '/sec'
qemu-io -f raw -c 'read -P 0xec 5000 70000' nbd://127.0.0.1:10814/erasure | grep -v '/sec'

say "dog vdi object location replica 0: the 3 copies of object 0, in 3 zones"
dog vdi object location replica 0
say "dog vdi object location erasure 0: fragment holders of object 0, in order"
dog vdi object location erasure 0
say "dog vdi check erasure: every stripe verified (parity matches data)"
dog vdi check erasure

say "dog vdi list"
dog vdi list
say "dog node list"
dog node list
say "dog node info"
dog node info
say "dog cluster info"
dog cluster info
say "dog node recovery"
dog node recovery

cat <<EOF

Collie is running: 6 nodes, VDIs "replica" (20 GiB, 3 copies) and "erasure" (20 GiB,
4 data + 2 parity fragments), on any node's NBD port:
  nbd://127.0.0.1:10809/replica ... nbd://127.0.0.1:10814/replica
  nbd://127.0.0.1:10809/erasure ... nbd://127.0.0.1:10814/erasure
  (qemu-img, qemu-io, nbdcopy, fio, or QEMU:
   -drive file=nbd://127.0.0.1:10809/replica,format=raw)
  dog is at $ROOT/target/release/dog (export PATH="$ROOT/target/release:\$PATH")
  logs: $BASE/store0/sheep.log ... $BASE/store5/sheep.log
Stop it (every node):  $ROOT/target/release/dog cluster shutdown
EOF
