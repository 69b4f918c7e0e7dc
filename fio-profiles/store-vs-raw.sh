#!/usr/bin/env bash
# store-vs-raw.sh: the node-local store beside raw fio on the same disk, in one run.
#
# Runs, on one directory's file system:
#   randwrite-4k  fio: io_uring direct=1 bs=4k iodepth=32 fdatasync=32 rw=randwrite
#                 store: storebench --bs 4k --qd 32 --rw randwrite (fdatasync per batch)
#   write-1M      fio: io_uring direct=1 bs=1M iodepth=8 fdatasync=8 rw=write
#                 store: storebench --bs 1M --qd 8 --rw write
# each for --seconds, over a --size span, and prints a table with store/raw ratios.
# See fio-profiles/README.md for how to read it.
#
# usage: fio-profiles/store-vs-raw.sh [options] [DIR]
#   DIR               where the fio file and the stores go (default: target/store-vs-raw
#                     in the repository); must be a real disk, not tmpfs
#   --seconds N       run time per job (default 10)
#   --rounds N        run every raw/store pair N times, alternating which goes first,
#                     and report means (default 1)
#   --size SIZE       data span per job (default 1G)
#   --shards N        storebench shard executors (default: one per core)
#   --partitions N    store partitions (default: the store's default)
#   --raw-fresh       do not prefill fio's file: raw writes then land on freshly
#                     allocated blocks, as the store's new segments do
#   --keep            keep the fio file, the stores and the JSON outputs
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNTIME=10
ROUNDS=1
SIZE=1G
SHARDS=()
PARTITIONS=()
PREFILL=1
KEEP=0
DIR=""

die() { echo "store-vs-raw: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) RUNTIME=${2:?--seconds needs a value}; shift 2 ;;
        --rounds) ROUNDS=${2:?--rounds needs a value}; shift 2 ;;
        --size) SIZE=${2:?--size needs a value}; shift 2 ;;
        --shards) SHARDS=(--shards "${2:?--shards needs a value}"); shift 2 ;;
        --partitions) PARTITIONS=(--partitions "${2:?--partitions needs a value}"); shift 2 ;;
        --raw-fresh) PREFILL=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (try --help)" ;;
        *) [ -z "$DIR" ] || die "only one DIR"; DIR=$1; shift ;;
    esac
done
case "$RUNTIME" in ''|*[!0-9]*|0) die "--seconds must be a positive whole number" ;; esac
case "$ROUNDS" in ''|*[!0-9]*|0) die "--rounds must be a positive whole number" ;; esac

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
DIR=${DIR:-$TARGET/store-vs-raw}
mkdir -p "$DIR"
if [ "$(stat -f -c %T "$DIR")" = tmpfs ]; then
    die "$DIR is on tmpfs: give a directory on the disk to measure"
fi

if ! command -v fio >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing fio ..." >&2
        (apt-get install -y -qq fio >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq fio; }) >&2 \
            || die "could not install fio"
    else
        die "fio is not installed (apt-get install fio)"
    fi
fi
command -v python3 >/dev/null || die "python3 is needed to read fio's JSON"

echo "building storebench (release) ..." >&2
(cd "$ROOT" && cargo build --release --quiet -p collie-tools --bin storebench) || die "build failed"
STOREBENCH=$TARGET/release/storebench

WORK=$(mktemp -d "$DIR/run.XXXXXX")
cleanup() { [ "$KEEP" = 1 ] && echo "kept $WORK" >&2 || rm -rf "$WORK"; }
trap cleanup EXIT
RAWFILE=$WORK/raw.fio

# fio's options common to every raw job: one file, O_DIRECT through io_uring.
fio_raw() {  # NAME then job options
    local name=$1; shift
    fio --name="$name" --filename="$RAWFILE" --size="$SIZE" --ioengine=io_uring --direct=1 \
        --output-format=json --output="$WORK/$name.json" "$@" >/dev/null 2>"$WORK/$name.err" \
        || { cat "$WORK/$name.err" >&2; die "fio job $name failed"; }
}

storebench() {  # NAME then storebench options
    local name=$1; shift
    rm -rf "$WORK/store"
    "$STOREBENCH" --dir "$WORK/store" --size "$SIZE" --seconds "$RUNTIME" --json "${SHARDS[@]}" "${PARTITIONS[@]}" "$@" \
        >"$WORK/$name.json" 2>"$WORK/$name.err" \
        || { cat "$WORK/$name.err" >&2; die "storebench job $name failed"; }
    rm -rf "$WORK/store"
}

echo "disk: $(df -h --output=source,fstype "$DIR" | tail -1 | tr -s ' ')  dir: $DIR" >&2
if [ "$PREFILL" = 1 ]; then
    echo "prefilling fio's $SIZE file (raw jobs overwrite allocated blocks) ..." >&2
    fio_raw prefill --rw=write --bs=1M --iodepth=8 --end_fsync=1
fi

# One raw/store pair; odd rounds run the store first, so drift in the disk's speed over
# the run (shared hosts, SSD housekeeping) does not always favour the same side.
pair() {  # ROUND JOB then: fio options -- storebench options
    local round=$1 job=$2; shift 2
    local fio_opts=() sb_opts=()
    while [ "$1" != -- ]; do fio_opts+=("$1"); shift; done
    shift
    sb_opts=("$@")
    local raw=(fio_raw "raw-$job.$round" "${fio_opts[@]}" --time_based --runtime="$RUNTIME")
    local store=(storebench "store-$job.$round" "${sb_opts[@]}")
    if [ $((round % 2)) = 1 ]; then
        echo "round $round: $job: raw fio, then store, ${RUNTIME}s each ..." >&2
        "${raw[@]}"; "${store[@]}"
    else
        echo "round $round: $job: store, then raw fio, ${RUNTIME}s each ..." >&2
        "${store[@]}"; "${raw[@]}"
    fi
}

for round in $(seq 1 "$ROUNDS"); do
    pair "$round" randwrite-4k --rw=randwrite --bs=4k --iodepth=32 --fdatasync=32 -- --rw randwrite --bs 4k --qd 32
    pair "$round" write-1M --rw=write --bs=1M --iodepth=8 --fdatasync=8 -- --rw write --bs 1M --qd 8
done

python3 - "$WORK" "$PREFILL" "$ROUNDS" <<'EOF'
import json, sys

work, prefill, rounds = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
jobs = [("randwrite-4k", 0.7), ("write-1M", 0.9)]

def fio(name):
    with open(name) as f:
        j = json.load(f)["jobs"][0]
    w = j["write"]
    pct = w["clat_ns"].get("percentile", {})
    syncs = j.get("sync", {}).get("lat_ns", {}).get("N", 0)
    return {
        "iops": w["iops"],
        "mib_s": w["bw_bytes"] / (1 << 20),
        "p50": pct.get("50.000000", 0) / 1000,
        "p99": pct.get("99.000000", 0) / 1000,
        "ops": w["total_ios"],
        "syncs": syncs,
    }

def store(name):
    with open(name) as f:
        j = json.load(f)
    return {"iops": j["iops"], "mib_s": j["mib_s"], "p50": j["lat_us"]["p50"], "p99": j["lat_us"]["p99"],
            "ops": j["ops"], "shards": j["shards"]}

def mean(runs):
    out = {k: sum(r[k] for r in runs) / len(runs) for k in ("iops", "mib_s", "p50", "p99")}
    out["ops"] = sum(r["ops"] for r in runs)
    out["syncs"] = sum(r.get("syncs", 0) for r in runs)
    return out

head = ("job", "raw IOPS", "store IOPS", "ratio", "raw MiB/s", "store MiB/s",
        "raw p50/p99 us", "store p50/p99 us", "target")
rows, notes = [], []
for name, want in jobs:
    raws = [fio(f"{work}/raw-{name}.{i}.json") for i in range(1, rounds + 1)]
    stores = [store(f"{work}/store-{name}.{i}.json") for i in range(1, rounds + 1)]
    r, s = mean(raws), mean(stores)
    if rounds > 1:
        per = ", ".join(f"{b['iops'] / a['iops']:.3f}" for a, b in zip(raws, stores) if a["iops"])
        notes.append(f"{name}: ratio per round: {per}")
    ratio = s["iops"] / r["iops"] if r["iops"] else 0.0
    verdict = f">={want:.1f} {'ok' if ratio >= want else 'BELOW'}"
    rows.append((name, f"{r['iops']:.0f}", f"{s['iops']:.0f}", f"{ratio:.3f}", f"{r['mib_s']:.1f}",
                 f"{s['mib_s']:.1f}", f"{r['p50']:.0f}/{r['p99']:.0f}", f"{s['p50']:.0f}/{s['p99']:.0f}", verdict))
    if r["syncs"]:
        notes.append(f"{name}: fio issued {r['syncs']} fdatasyncs for {r['ops']} writes "
                     f"(one per {r['ops'] / r['syncs']:.1f})")
widths = [max(len(str(x[i])) for x in [head] + rows) for i in range(len(head))]
line = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
print(line(head))
print("  ".join("-" * w for w in widths))
for row in rows:
    print(line(row))
print()
print("ratio = store IOPS / raw IOPS (same bs, so also the MiB/s ratio)"
      + (f"; every figure is the mean of {rounds} rounds." if rounds > 1 else "."))
print("raw latency: fio's write completion (clat), its fdatasyncs are separate ops; store latency:")
print("submit to durable (the write's batch written and fdatasync'd).")
print("raw file " + ("prefilled: fio overwrites allocated blocks." if prefill
                     else "fresh (--raw-fresh): fio writes into newly allocated blocks."))
for n in notes:
    print(n)
EOF
