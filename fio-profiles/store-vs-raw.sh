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

PROG="store-vs-raw"   # prefix of die's messages
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"   # sets ROOT (the repository) and JOBS_DIR
RUNTIME=10
ROUNDS=1
SIZE=1G
SHARDS=()
PARTITIONS=()
PREFILL=1
KEEP=0
DIR=""

while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) RUNTIME=${2:?--seconds needs a value}; shift 2 ;;
        --rounds) ROUNDS=${2:?--rounds needs a value}; shift 2 ;;
        --size) SIZE=${2:?--size needs a value}; shift 2 ;;
        --shards) SHARDS=(--shards "${2:?--shards needs a value}"); shift 2 ;;
        --partitions) PARTITIONS=(--partitions "${2:?--partitions needs a value}"); shift 2 ;;
        --raw-fresh) PREFILL=0; shift ;;
        *) common_arg "$1"; shift ;;   # --keep, --help, DIR
    esac
done
need_positive "$RUNTIME" --seconds
need_positive "$ROUNDS" --rounds

bench_dir store-vs-raw

need_fio

build_release storebench || die "build failed"
STOREBENCH=$TARGET/release/storebench

WORK=$(mktemp -d "$DIR/run.XXXXXX")
trap drop_work EXIT
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

say "disk: $(disk_of "$DIR")  dir: $DIR"
if [ "$PREFILL" = 1 ]; then
    say "prefilling fio's $SIZE file (raw jobs overwrite allocated blocks) ..."
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
        say "round $round: $job: raw fio, then store, ${RUNTIME}s each ..."
        "${raw[@]}"; "${store[@]}"
    else
        say "round $round: $job: store, then raw fio, ${RUNTIME}s each ..."
        "${store[@]}"; "${raw[@]}"
    fi
}

for round in $(seq 1 "$ROUNDS"); do
    pair "$round" randwrite-4k --rw=randwrite --bs=4k --iodepth=32 --fdatasync=32 -- --rw randwrite --bs 4k --qd 32
    pair "$round" write-1M --rw=write --bs=1M --iodepth=8 --fdatasync=8 -- --rw write --bs 1M --qd 8
done

fio_py "$WORK" "$PREFILL" "$ROUNDS" <<'EOF'
work, prefill, rounds = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
jobs = [("randwrite-4k", 0.7), ("write-1M", 0.9)]

def fio(name):
    j = fio_json(name)
    f = figures(j["write"])
    f["syncs"] = j.get("sync", {}).get("lat_ns", {}).get("N", 0)
    return f

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
print_table([head] + rows)
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
