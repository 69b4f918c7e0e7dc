#!/usr/bin/env bash
# nbd-vs-qemu-nbd.sh: Collie's NBD front end beside qemu-nbd and the raw disk, in one run.
#
# Runs the jobs in fio-profiles/jobs/ (one file per job, the same file for every target)
# against, on one directory's file system:
#   raw       fio ioengine=io_uring direct=1 on a file
#   qemu-nbd  qemu-nbd --cache=none --aio=io_uring serving a raw file; fio ioengine=nbd
#   collie    a one-node Collie cluster (sheep + dog) serving VDI "bench"; fio ioengine=nbd
# each for --seconds over a --size span, and prints IOPS, MiB/s, p50/p99 completion
# latency per target with the ratios collie/qemu-nbd and collie/raw beside the targets.
# Plain jobs run against `sheep -n` (no flush before the ack, as qemu-nbd --cache=none);
# the fsync=32 job and the verify job run against a default, durable sheep.
# See fio-profiles/README.md for how to read it.
#
# usage: fio-profiles/nbd-vs-qemu-nbd.sh [options] [DIR]
#   DIR                where the files and the sheep store go (default: target/nbd-bench
#                      in the repository); must be a real disk, not tmpfs
#   --seconds N        run time per job and target (default 15)
#   --size SIZE        span of every job = size of the raw file, the qemu-nbd file and
#                      the VDI; a whole number of MiB: 512M, 2G (default 2G)
#   --jobs LIST        comma-separated subset of the jobs, named as fio-profiles/jobs/*.fio
#                      without .fio (default: all of them but prefill)
#   --targets LIST     comma-separated subset of raw,qemu-nbd,collie (default all three);
#                      without collie nothing is built and no sheep is started
#   --sheep-args ARGS  extra arguments for sheep (both runs), e.g. "--shards 2"
#   --nosync-compare   also run the plain jobs against the durable sheep and the fsync=32
#                      job against `sheep -n`: extra rows showing what the flush costs
#   --keep             keep the files, the sheep directory and every job's JSON
set -euo pipefail

PROG="nbd-vs-qemu-nbd"   # prefix of die's messages
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"   # sets ROOT (the repository) and JOBS_DIR
RUNTIME=15
SIZE=2G
JOBS=""
TARGETS=raw,qemu-nbd,collie
SHEEP_ARGS=()
NOSYNC_COMPARE=0
KEEP=0
DIR=""
FSYNC_JOB=randwrite-4k-qd32-fsync32
VERIFY_JOB=verify-randwrite-4k-qd32
VDI=bench

while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) RUNTIME=${2:?--seconds needs a value}; shift 2 ;;
        --size) SIZE=${2:?--size needs a value}; shift 2 ;;
        --jobs) JOBS=${2:?--jobs needs a value}; shift 2 ;;
        --targets) TARGETS=${2:?--targets needs a value}; shift 2 ;;
        --sheep-args) read -r -a SHEEP_ARGS <<<"${2?--sheep-args needs a value}"; shift 2 ;;
        --nosync-compare) NOSYNC_COMPARE=1; shift ;;
        *) common_arg "$1"; shift ;;   # --keep, --help, DIR
    esac
done
need_positive "$RUNTIME" --seconds
# One size in bytes for fio, truncate and nbdinfo, and one spelling for dog.
read_size "$SIZE" 2G
# The verify job writes its span once and reads it back: bounded, whatever --size is.
VERIFY_BYTES=$((SIZE_BYTES < 256 * MIB ? SIZE_BYTES : 256 * MIB))

want_target() { case ",$TARGETS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
IFS=, read -r -a target_list <<<"$TARGETS"
for t in "${target_list[@]}"; do
    case "$t" in raw|qemu-nbd|collie) ;; *) die "--targets: unknown target '$t' (raw, qemu-nbd, collie)" ;; esac
done

# Jobs in the order they run; prefill is not a job of its own, it runs before them all.
ALL_JOBS=(randread-4k-qd1 randread-4k-qd32 read-1M-qd8 randrw-70-30-4k-qd32
          randwrite-4k-qd1 randwrite-4k-qd32 write-1M-qd8 "$FSYNC_JOB" "$VERIFY_JOB")
for j in "${ALL_JOBS[@]}" prefill; do [ -f "$JOBS_DIR/$j.fio" ] || die "missing $JOBS_DIR/$j.fio"; done
SELECTED=()
if [ -z "$JOBS" ]; then
    SELECTED=("${ALL_JOBS[@]}")
else
    IFS=, read -r -a asked <<<"$JOBS"
    for a in "${asked[@]}"; do
        case " ${ALL_JOBS[*]} " in *" $a "*) ;; *) die "--jobs: unknown job '$a' (one of: ${ALL_JOBS[*]})" ;; esac
    done
    for j in "${ALL_JOBS[@]}"; do
        case ",$JOBS," in *",$j,"*) SELECTED+=("$j") ;; esac
    done
fi
PLAIN=() FSYNC=() VERIFY=()
for j in "${SELECTED[@]}"; do
    case "$j" in
        "$FSYNC_JOB") FSYNC=("$j") ;;
        "$VERIFY_JOB") VERIFY=("$j") ;;
        *) PLAIN+=("$j") ;;
    esac
done

bench_dir nbd-bench

need_fio
need_ss "find free ports"
if want_target qemu-nbd || want_target collie; then need_nbd_client; fi
want_target qemu-nbd && need qemu-nbd qemu-utils

if want_target collie; then
    build_release sheep dog || die "build failed (no sheep yet? --targets raw,qemu-nbd measures the other two)"
fi
SHEEP=$TARGET/release/sheep
DOG=$TARGET/release/dog

# Ports: the first free ones at or above fixed bases, loopback only. A sheep also opens
# per-shard peer ports next to its main port, so keep a run of 16 free there.
QEMU_PORT=$(free_port 20809 1)
SHEEP_PORT=$(free_port 27000 16)
NBD_PORT=$(free_port 30809 1)
DOG_PORT=$SHEEP_PORT

WORK=$(mktemp -d "$DIR/run.XXXXXX")
RAW_FILE=$WORK/raw.img
QEMU_FILE=$WORK/qemu-nbd.img
SHEEP_DIR=$WORK/sheep
QEMU_PID=""

stop_qemu_nbd() {
    [ -n "$QEMU_PID" ] || return 0
    kill -TERM "$QEMU_PID" 2>/dev/null || true
    wait_gone "$QEMU_PID" 10 || { kill -KILL "$QEMU_PID" 2>/dev/null || true; wait_gone "$QEMU_PID" 5 || true; }
    QEMU_PID=""
}
cleanup() {
    stop_sheep || true
    stop_qemu_nbd || true
    drop_work
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_qemu_nbd() {
    truncate -s "$SIZE_BYTES" "$QEMU_FILE"
    QEMU_CMD=(qemu-nbd --cache=none --aio=io_uring --format=raw --persistent --shared=8
              --bind 127.0.0.1 --port "$QEMU_PORT" --pid-file "$WORK/qemu-nbd.pid" --fork "$QEMU_FILE")
    "${QEMU_CMD[@]}" >"$WORK/qemu-nbd.log" 2>&1 || { cat "$WORK/qemu-nbd.log" >&2; die "qemu-nbd did not start"; }
    QEMU_PID=$(cat "$WORK/qemu-nbd.pid")
    wait_export "nbd://127.0.0.1:$QEMU_PORT/" "$SIZE_BYTES"
}

# start_sheep nosync|durable: one node, one directory, in a cluster of its own (its own
# local driver state file, so it never joins a quick-start cluster running here); the
# durable run restarts the same node on the same directory.
start_sheep() {
    local flags=(-p "$SHEEP_PORT" --nbd-port "$NBD_PORT" -b 127.0.0.1 -c "local:$WORK/cluster")
    [ "$1" = nosync ] && flags+=(-n)
    flags+=("${SHEEP_ARGS[@]}")
    start_sheep_node "" "$SHEEP_DIR" "${flags[@]}"
}

engine_of() { case "$1" in raw) echo io_uring ;; *) echo nbd ;; esac; }
target_of() {
    case "$1" in
        raw) echo "filename=${RAW_FILE//:/\\:}" ;;   # fio splits filename= at colons
        qemu-nbd) echo "uri=nbd://127.0.0.1:$QEMU_PORT/" ;;
        collie-*) echo "uri=nbd://127.0.0.1:$NBD_PORT/$VDI" ;;
    esac
}

# run_on JOB LABEL BYTES SECONDS: JOB's file against LABEL (raw, qemu-nbd, collie-nosync,
# collie-durable) into WORK/JOB.LABEL.json. A failed job is reported and left out of the
# table ("err"), so one broken target does not cost the other figures.
run_on() { run_fio "$1" "$2" "$(engine_of "$2")" "$(target_of "$2")" "$3" "$4"; }

# prefill LABEL: write the whole span once, so reads read data rather than holes and
# writes overwrite allocated blocks, as a disk in steady state does. The bound on its run
# time is generous and the span is checked, because a short prefill would leave holes.
prefill() {
    run_on prefill "$1" "$SIZE_BYTES" 1800 || die "prefill on $1 failed"
    fio_py "$WORK/prefill.$1.json" "$SIZE_BYTES" <<'EOF' || die "prefill on $1 did not write the whole span"
job = fio_json(sys.argv[1])
sys.exit(0 if job["error"] == 0 and job["write"]["io_bytes"] >= int(sys.argv[2]) else 1)
EOF
}

# the targets to run a job on, in order: raw, qemu-nbd, then the given collie label.
labels() {
    local out=()
    want_target raw && out+=(raw)
    want_target qemu-nbd && out+=(qemu-nbd)
    want_target collie && out+=("$1")
    echo "${out[@]}"
}

n_runs=$(((${#PLAIN[@]} + ${#FSYNC[@]}) * ${#target_list[@]}))
want_target collie && [ "$NOSYNC_COMPARE" = 1 ] && n_runs=$((n_runs + ${#PLAIN[@]} + ${#FSYNC[@]}))
say "disk: $(disk_of "$DIR")  dir: $WORK"
say "targets: $TARGETS  jobs: ${SELECTED[*]}"
say "about $((n_runs * RUNTIME)) s of fio, plus the prefills, the verify run and the build"
if want_target collie && [[ " ${SHEEP_ARGS[*]} " == *" -n "* ]]; then
    say "warning: --sheep-args has -n: the 'durable' sheep will not flush either"
fi

want_target qemu-nbd && start_qemu_nbd
if want_target collie; then
    start_sheep nosync
    dog cluster format -c 1
    dog vdi create -c 1 "$VDI" "$SIZE_DOG"
    wait_export "nbd://127.0.0.1:$NBD_PORT/$VDI" "$SIZE_BYTES"
fi

say "prefilling the $SIZE_DOG span on every target ..."
for t in $(labels collie-nosync); do prefill "$t"; done

# Phase 1, sheep -n: the plain jobs, each on every target in turn, so drift in the disk's
# speed over the run spreads over the targets rather than landing on one of them.
for j in "${PLAIN[@]}"; do
    for t in $(labels collie-nosync); do run_on "$j" "$t" "$SIZE_BYTES" "$RUNTIME" || true; done
done
if [ "$NOSYNC_COMPARE" = 1 ] && want_target collie; then
    for j in "${FSYNC[@]}"; do run_on "$j" collie-nosync "$SIZE_BYTES" "$RUNTIME" || true; done
fi

# Phase 2, durable sheep (the same node restarted without -n; the VDI and its data stay).
if want_target collie && [ $((${#FSYNC[@]} + ${#VERIFY[@]} + NOSYNC_COMPARE)) -gt 0 ]; then
    say "restarting sheep without -n (durable: acks after fdatasync) ..."
    stop_sheep
    start_sheep durable
    wait_export "nbd://127.0.0.1:$NBD_PORT/$VDI" "$SIZE_BYTES"
fi
for j in "${FSYNC[@]}"; do
    for t in $(labels collie-durable); do run_on "$j" "$t" "$SIZE_BYTES" "$RUNTIME" || true; done
done
if [ "$NOSYNC_COMPARE" = 1 ] && want_target collie; then
    for j in "${PLAIN[@]}"; do run_on "$j" collie-durable "$SIZE_BYTES" "$RUNTIME" || true; done
fi
if [ ${#VERIFY[@]} -gt 0 ] && want_target collie; then
    run_on "$VERIFY_JOB" collie-durable "$VERIFY_BYTES" 600 || true
fi

stop_sheep
stop_qemu_nbd

QEMU_DESC="n/a"
want_target qemu-nbd && QEMU_DESC="${QEMU_CMD[*]//$WORK\//}"
SHEEP_DESC="n/a"
[ -f "$WORK/sheep-cmds.txt" ] && SHEEP_DESC=$(sed "s|$WORK/||" "$WORK/sheep-cmds.txt" | paste -sd ';' | sed 's/;/; then /')

fio_py "$WORK" "$TARGETS" "$NOSYNC_COMPARE" "$FSYNC_JOB" "$VERIFY_JOB" "$VERIFY_BYTES" \
    "$SIZE_DOG" "$RUNTIME" "$QEMU_DESC" "$SHEEP_DESC" "${SELECTED[@]}" <<'EOF'
(work, targets, nosync_compare, fsync_job, verify_job, verify_bytes, size, seconds,
 qemu_desc, sheep_desc, *jobs) = sys.argv[1:]
targets = targets.split(",")
nosync_compare = nosync_compare == "1"
verify_bytes = int(verify_bytes)
MIXED = "randrw-70-30-4k-qd32"
# job -> (what is compared, factor): the targets from the project's plan.
GOALS = {
    "randwrite-4k-qd32": ("iops", 1.2),
    "randread-4k-qd32": ("iops", 1.2),
    "write-1M-qd8": ("mib_s", 1.0),
    "read-1M-qd8": ("mib_s", 1.0),
    "randread-4k-qd1": ("p50", None),
}

def load(job, label):
    """fio's JSON for one run, or None (not run), or "err" (failed or fio reported an error)."""
    j = fio_result(f"{work}/{job}.{label}.json")
    if j is None and os.path.exists(f"{work}/{job}.{label}.failed.json"):
        return "err"
    return j

def job_figures(j, job):
    if j is None or j == "err":
        return j
    if job == MIXED:
        r, w = j["read"], j["write"]
        return {"iops": r["iops"] + w["iops"], "mib_s": (r["bw_bytes"] + w["bw_bytes"]) / 2**20,
                "p50": clat_us(w, "50.000000"), "p99": clat_us(w, "99.000000"),
                "p50s": f"{clat_us(r, '50.000000'):.0f}/{clat_us(w, '50.000000'):.0f}",
                "p99s": f"{clat_us(r, '99.000000'):.0f}/{clat_us(w, '99.000000'):.0f}"}
    d = j["read"] if j["read"]["total_ios"] else j["write"]
    f = figures(d)
    f["p50s"], f["p99s"] = f"{f['p50']:.0f}", f"{f['p99']:.0f}"
    f["syncs"] = j.get("sync", {}).get("total_ios", 0)
    f["sync_mean"] = j.get("sync", {}).get("lat_ns", {}).get("mean", 0) / 1000
    return f

def cells(f, target):
    if target not in targets:
        return ["n/a"] * 4
    if f is None or f == "err":
        return [f or "-"] * 4
    return [f"{f['iops']:.0f}", f"{f['mib_s']:.1f}", f["p50s"], f["p99s"]]

def ratio(c, other):
    if not isinstance(c, dict) or not isinstance(other, dict) or not other["iops"]:
        return None
    return c["iops"] / other["iops"]

def goal(job, c, q, primary):
    if job not in GOALS:
        return "-"
    if not primary:
        return "(not a target)"
    what, want = GOALS[job]
    if not isinstance(c, dict) or not isinstance(q, dict):
        return "n/a"
    if what == "p50":
        ok = c["p50"] <= q["p50"]
        return f"p50<=qemu's {'ok' if ok else 'BELOW'}"
    ok = c[what] >= want * q[what]
    unit = "IOPS" if what == "iops" else "MiB/s"
    return f">={want:.1f}x qemu {unit} {'ok' if ok else 'BELOW'}"

rows, runs = [], {}
for job in jobs:
    if job == verify_job:
        continue
    raw = job_figures(load(job, "raw"), job)
    qemu = job_figures(load(job, "qemu-nbd"), job)
    main = "collie-durable" if job == fsync_job else "collie-nosync"
    other = "collie-nosync" if job == fsync_job else "collie-durable"
    variants = [(main, True)] + ([(other, False)] if nosync_compare and "collie" in targets else [])
    for label, primary in variants:
        col = job_figures(load(job, label), job) if "collie" in targets else None
        runs[(job, label)] = col
        rq, rr = ratio(col, qemu), ratio(col, raw)
        sheep = "durable" if label == "collie-durable" else "-n"
        rows.append([job, sheep if "collie" in targets else "n/a"]
                    + cells(raw, "raw") + cells(qemu, "qemu-nbd") + cells(col, "collie")
                    + [f"{rq:.2f}" if rq is not None else "n/a", f"{rr:.2f}" if rr is not None else "n/a",
                       goal(job, col, qemu, primary)])
    runs[(job, "raw")], runs[(job, "qemu-nbd")] = raw, qemu

head = ["job", "sheep"] + ["IOPS", "MiB/s", "p50us", "p99us"] * 3 + ["c/qemu", "c/raw", "target"]
groups = [("", 2), ("raw", 4), ("qemu-nbd", 4), ("collie", 4), ("ratio", 2), ("", 1)]
widths = table_widths([head] + rows)
col = 0
spans = []
for name, n in groups:
    w = sum(widths[col:col + n]) + 2 * (n - 1)
    spans.append(name.center(w, "-") if name else " " * w)
    col += n
print("  ".join(spans).rstrip())
print_table([head] + rows, left=(0, 1, len(head) - 1))
print()
print(f"{size} span per job, written once (prefill) before the jobs: reads read data, writes")
print(f"overwrite. {seconds} s per job and target. p50us/p99us: fio's completion latency (clat),")
print("submission to completion; the nbd engine's submit time (slat) is not in it.")
print("c/qemu, c/raw: collie IOPS / that target's IOPS (same block size, so also MiB/s).")
if MIXED in jobs:
    print(f"{MIXED}: IOPS and MiB/s are reads + writes, p50us and p99us are read/write.")
print("sheep -n: acks writes without fdatasync, as qemu-nbd --cache=none does (O_DIRECT, no")
print("flush unless the client sends one): the match for the plain jobs. durable: the default")
print(f"sheep (acks after fdatasync): for {fsync_job} and verify.")
if nosync_compare:
    print("--nosync-compare: the second row of a job is the same job on the other sheep.")
print(f"qemu-nbd: {qemu_desc}")
print(f"sheep:    {sheep_desc}")
for label in ("raw", "qemu-nbd", "collie-durable", "collie-nosync"):
    f = runs.get((fsync_job, label))
    if isinstance(f, dict) and f.get("syncs"):
        print(f"{fsync_job} on {label}: {f['syncs']} flushes for {f['ops']} writes "
              f"(one per {f['ops'] / f['syncs']:.1f}), flush mean {f['sync_mean']:.0f} us")
if verify_job in jobs:
    if "collie" not in targets:
        print(f"verify: not run (collie is not in --targets)")
    else:
        j = load(verify_job, "collie-durable")
        if isinstance(j, dict):
            w, r = j["write"]["io_bytes"], j["read"]["io_bytes"]
            ok = w >= verify_bytes and r >= w
            why = (f"{w >> 20} MiB written, {r >> 20} MiB read back and checked" if ok else
                   f"only {w >> 20} of {verify_bytes >> 20} MiB written, {r >> 20} MiB checked")
            print(f"verify ({verify_job}, crc32c, durable sheep): {'pass' if ok else 'FAIL'}: {why}")
        else:
            print(f"verify ({verify_job}, crc32c, durable sheep): FAIL: fio reported an error "
                  f"(see {verify_job}.collie-durable.log; --keep keeps it)")
EOF
