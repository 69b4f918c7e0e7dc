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

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JOBS_DIR=$ROOT/fio-profiles/jobs
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

die() { echo "nbd-vs-qemu-nbd: $*" >&2; exit 1; }
say() { echo "$*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) RUNTIME=${2:?--seconds needs a value}; shift 2 ;;
        --size) SIZE=${2:?--size needs a value}; shift 2 ;;
        --jobs) JOBS=${2:?--jobs needs a value}; shift 2 ;;
        --targets) TARGETS=${2:?--targets needs a value}; shift 2 ;;
        --sheep-args) read -r -a SHEEP_ARGS <<<"${2?--sheep-args needs a value}"; shift 2 ;;
        --nosync-compare) NOSYNC_COMPARE=1; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (try --help)" ;;
        *) [ -z "$DIR" ] || die "only one DIR"; DIR=$1; shift ;;
    esac
done
case "$RUNTIME" in ''|*[!0-9]*|0) die "--seconds must be a positive whole number" ;; esac

# One size in bytes for fio, truncate and nbdinfo, and one spelling for dog: fio reads
# "2GB" as 2 GiB but truncate as 2 * 10^9, so nothing below sees the user's spelling.
SIZE_BYTES=$(python3 - "$SIZE" <<'EOF'
import re, sys
m = re.fullmatch(r"(\d+)\s*([kmgt]?)(i?b)?", sys.argv[1].strip(), re.I)
if not m:
    sys.exit(1)
print(int(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower()))
EOF
) || die "--size: cannot read '$SIZE' (use e.g. 512M or 2G)"
MIB=$((1024 * 1024))
[ $((SIZE_BYTES % MIB)) = 0 ] && [ "$SIZE_BYTES" -gt 0 ] || die "--size must be a whole number of MiB"
if [ $((SIZE_BYTES % (1024 * MIB))) = 0 ]; then SIZE_DOG=$((SIZE_BYTES / 1024 / MIB))G; else SIZE_DOG=$((SIZE_BYTES / MIB))M; fi
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

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
DIR=${DIR:-$TARGET/nbd-bench}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
if [ "$(stat -f -c %T "$DIR")" = tmpfs ]; then
    die "$DIR is on tmpfs: give a directory on the disk to measure"
fi

# need COMMAND PACKAGE: install PACKAGE with apt-get when COMMAND is missing.
need() {
    command -v "$1" >/dev/null && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing $2 ..."
        (apt-get install -y -qq "$2" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$2"; }) >&2 \
            || die "could not install $2"
    else
        die "$1 is not installed (apt-get install $2)"
    fi
}
need fio fio
command -v python3 >/dev/null || die "python3 is needed to read fio's JSON"
command -v ss >/dev/null || die "ss (iproute2) is needed to find free ports"
if want_target qemu-nbd || want_target collie; then
    need nbdinfo libnbd-bin   # waits for an export to be up and checks its size
    fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine (Debian's fio package has it)"
fi
want_target qemu-nbd && need qemu-nbd qemu-utils

if want_target collie; then
    say "building sheep and dog (release) ..."
    (cd "$ROOT" && cargo build --release --quiet -p collie-tools --bin sheep --bin dog) \
        || die "build failed (no sheep yet? --targets raw,qemu-nbd measures the other two)"
fi
SHEEP=$TARGET/release/sheep
DOG=$TARGET/release/dog

# Ports: the first free ones at or above fixed bases, loopback only. A sheep also opens
# per-shard peer ports next to its main port, so keep a run of 16 free there.
listening() { ss -Htln | awk '{ sub(/.*:/, "", $4); print $4 }' | sort -un; }
free_port() {  # FROM COUNT
    local p=$1 used i ok
    used=$(listening)
    while [ $((p + $2)) -lt 65536 ]; do
        ok=1
        for ((i = 0; i < $2; i++)); do
            if grep -qx "$((p + i))" <<<"$used"; then ok=0; break; fi
        done
        [ "$ok" = 1 ] && { echo "$p"; return 0; }
        p=$((p + $2))
    done
    die "no free port at or above $1"
}
QEMU_PORT=$(free_port 20809 1)
SHEEP_PORT=$(free_port 27000 16)
NBD_PORT=$(free_port 30809 1)

WORK=$(mktemp -d "$DIR/run.XXXXXX")
RAW_FILE=$WORK/raw.img
QEMU_FILE=$WORK/qemu-nbd.img
SHEEP_DIR=$WORK/sheep
QEMU_PID=""
SHEEP_PID=""

# wait_gone PID SECONDS: whether PID exited within SECONDS (it is not our child: poll).
# A zombie counts as gone: daemons are reparented, and their reaper may lag a little.
wait_gone() {
    local i state
    for ((i = 0; i < $2 * 10; i++)); do
        state=$(ps -o stat= -p "$1" 2>/dev/null) || return 0
        case "$state" in Z*) return 0 ;; esac
        sleep 0.1
    done
    return 1
}
stop_qemu_nbd() {
    [ -n "$QEMU_PID" ] || return 0
    kill -TERM "$QEMU_PID" 2>/dev/null || true
    wait_gone "$QEMU_PID" 10 || { kill -KILL "$QEMU_PID" 2>/dev/null || true; wait_gone "$QEMU_PID" 5 || true; }
    QEMU_PID=""
}
stop_sheep() {
    [ -n "$SHEEP_PID" ] || return 0
    kill -TERM "$SHEEP_PID" 2>/dev/null || true
    if ! wait_gone "$SHEEP_PID" 20; then
        say "sheep (pid $SHEEP_PID) still running 20 s after SIGTERM: SIGKILL"
        kill -KILL "$SHEEP_PID" 2>/dev/null || true
        wait_gone "$SHEEP_PID" 5 || say "sheep (pid $SHEEP_PID) survived SIGKILL"
    fi
    SHEEP_PID=""
}
cleanup() {
    stop_sheep || true
    stop_qemu_nbd || true
    if [ "$KEEP" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_export URI: until the export answers with at least SIZE_BYTES (30 s at most).
wait_export() {
    local i size
    for ((i = 0; i < 300; i++)); do
        if size=$(nbdinfo --size "$1" 2>/dev/null); then
            [ "$size" -ge "$SIZE_BYTES" ] || die "$1 is $size bytes, smaller than --size ($SIZE_BYTES)"
            return 0
        fi
        sleep 0.1
    done
    nbdinfo --size "$1" >&2 || true
    die "$1 did not come up"
}

start_qemu_nbd() {
    truncate -s "$SIZE_BYTES" "$QEMU_FILE"
    QEMU_CMD=(qemu-nbd --cache=none --aio=io_uring --format=raw --persistent --shared=8
              --bind 127.0.0.1 --port "$QEMU_PORT" --pid-file "$WORK/qemu-nbd.pid" --fork "$QEMU_FILE")
    "${QEMU_CMD[@]}" >"$WORK/qemu-nbd.log" 2>&1 || { cat "$WORK/qemu-nbd.log" >&2; die "qemu-nbd did not start"; }
    QEMU_PID=$(cat "$WORK/qemu-nbd.pid")
    wait_export "nbd://127.0.0.1:$QEMU_PORT/"
}

# start_sheep nosync|durable: one node, one directory; the durable run restarts the same
# node on the same directory (not a second node: with the local cluster driver a second
# node on this machine would join the first one's cluster and share the VDI's objects).
SHEEP_MODE=""
start_sheep() {
    local flags=(-p "$SHEEP_PORT" --nbd-port "$NBD_PORT" -b 127.0.0.1)
    [ "$1" = nosync ] && flags+=(-n)
    flags+=("${SHEEP_ARGS[@]}")
    mkdir -p "$SHEEP_DIR"
    rm -f "$SHEEP_DIR/sheep.pid"   # a stale one would name the previous, stopped run
    echo "sheep ${flags[*]} $SHEEP_DIR" >>"$WORK/sheep-cmds.txt"
    # sheep daemonizes and returns once it listens (or prints why it could not).
    "$SHEEP" "${flags[@]}" "$SHEEP_DIR" >"$WORK/sheep-start.log" 2>&1 \
        || { cat "$WORK/sheep-start.log" >&2; die "sheep did not start (log: $SHEEP_DIR/sheep.log)"; }
    SHEEP_PID=$(cat "$SHEEP_DIR/sheep.pid") || die "sheep left no $SHEEP_DIR/sheep.pid"
    SHEEP_MODE=$1
}
dog() {
    "$DOG" -p "$SHEEP_PORT" "$@" >>"$WORK/dog.log" 2>&1 || { cat "$WORK/dog.log" >&2; die "dog $* failed"; }
}

engine_of() { case "$1" in raw) echo io_uring ;; *) echo nbd ;; esac; }
target_of() {
    case "$1" in
        raw) echo "filename=${RAW_FILE//:/\\:}" ;;   # fio splits filename= at colons
        qemu-nbd) echo "uri=nbd://127.0.0.1:$QEMU_PORT/" ;;
        collie-*) echo "uri=nbd://127.0.0.1:$NBD_PORT/$VDI" ;;
    esac
}

# run_fio JOB LABEL BYTES SECONDS: JOB's file against LABEL (raw, qemu-nbd, collie-nosync,
# collie-durable) into WORK/JOB.LABEL.json. A failed job is reported and left out of the
# table ("err"), so one broken target does not cost the other figures.
run_fio() {
    local job=$1 label=$2 out=$WORK/$1.$2
    say "  $job on $label ..."
    if (cd "$WORK" && FIO_IOENGINE=$(engine_of "$label") FIO_TARGET=$(target_of "$label") \
            FIO_SIZE=$3 FIO_RUNTIME=$4 \
            fio --output-format=json --output="$out.json" "$JOBS_DIR/$job.fio" >"$out.log" 2>&1); then
        return 0
    fi
    say "fio $job on $label failed:"; tail -n 20 "$out.log" >&2
    mv -f "$out.json" "$out.failed.json" 2>/dev/null || true
    return 1
}

# prefill LABEL: write the whole span once, so reads read data rather than holes and
# writes overwrite allocated blocks, as a disk in steady state does. The bound on its run
# time is generous and the span is checked, because a short prefill would leave holes.
prefill() {
    run_fio prefill "$1" "$SIZE_BYTES" 1800 || die "prefill on $1 failed"
    python3 - "$WORK/prefill.$1.json" "$SIZE_BYTES" <<'EOF' || die "prefill on $1 did not write the whole span"
import json, sys
text = open(sys.argv[1]).read()
job = json.loads(text[text.index("{"):])["jobs"][0]
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
say "disk: $(df -h --output=source,fstype "$DIR" | tail -1 | tr -s ' ')  dir: $WORK"
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
    wait_export "nbd://127.0.0.1:$NBD_PORT/$VDI"
fi

say "prefilling the $SIZE_DOG span on every target ..."
for t in $(labels collie-nosync); do prefill "$t"; done

# Phase 1, sheep -n: the plain jobs, each on every target in turn, so drift in the disk's
# speed over the run spreads over the targets rather than landing on one of them.
for j in "${PLAIN[@]}"; do
    for t in $(labels collie-nosync); do run_fio "$j" "$t" "$SIZE_BYTES" "$RUNTIME" || true; done
done
if [ "$NOSYNC_COMPARE" = 1 ] && want_target collie; then
    for j in "${FSYNC[@]}"; do run_fio "$j" collie-nosync "$SIZE_BYTES" "$RUNTIME" || true; done
fi

# Phase 2, durable sheep (the same node restarted without -n; the VDI and its data stay).
if want_target collie && [ $((${#FSYNC[@]} + ${#VERIFY[@]} + NOSYNC_COMPARE)) -gt 0 ]; then
    say "restarting sheep without -n (durable: acks after fdatasync) ..."
    stop_sheep
    start_sheep durable
    wait_export "nbd://127.0.0.1:$NBD_PORT/$VDI"
fi
for j in "${FSYNC[@]}"; do
    for t in $(labels collie-durable); do run_fio "$j" "$t" "$SIZE_BYTES" "$RUNTIME" || true; done
done
if [ "$NOSYNC_COMPARE" = 1 ] && want_target collie; then
    for j in "${PLAIN[@]}"; do run_fio "$j" collie-durable "$SIZE_BYTES" "$RUNTIME" || true; done
fi
if [ ${#VERIFY[@]} -gt 0 ] && want_target collie; then
    run_fio "$VERIFY_JOB" collie-durable "$VERIFY_BYTES" 600 || true
fi

stop_sheep
stop_qemu_nbd

QEMU_DESC="n/a"
want_target qemu-nbd && QEMU_DESC="${QEMU_CMD[*]//$WORK\//}"
SHEEP_DESC="n/a"
[ -f "$WORK/sheep-cmds.txt" ] && SHEEP_DESC=$(sed "s|$WORK/||" "$WORK/sheep-cmds.txt" | paste -sd ';' | sed 's/;/; then /')

python3 - "$WORK" "$TARGETS" "$NOSYNC_COMPARE" "$FSYNC_JOB" "$VERIFY_JOB" "$VERIFY_BYTES" \
    "$SIZE_DOG" "$RUNTIME" "$QEMU_DESC" "$SHEEP_DESC" "${SELECTED[@]}" <<'EOF'
import json, os, sys

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
    path = f"{work}/{job}.{label}.json"
    if not os.path.exists(path):
        return "err" if os.path.exists(f"{work}/{job}.{label}.failed.json") else None
    text = open(path).read()
    try:
        # The nbd engine may log a line ahead of the JSON; start at the first brace.
        j = json.loads(text[text.index("{"):])["jobs"][0]
    except (ValueError, KeyError, IndexError):
        return "err"
    return "err" if j["error"] else j

def pct(d, p):
    return d["clat_ns"].get("percentile", {}).get(p, 0) / 1000

def figures(j, job):
    if j is None or j == "err":
        return j
    if job == MIXED:
        r, w = j["read"], j["write"]
        return {"iops": r["iops"] + w["iops"], "mib_s": (r["bw_bytes"] + w["bw_bytes"]) / 2**20,
                "p50": pct(w, "50.000000"), "p99": pct(w, "99.000000"),
                "p50s": f"{pct(r, '50.000000'):.0f}/{pct(w, '50.000000'):.0f}",
                "p99s": f"{pct(r, '99.000000'):.0f}/{pct(w, '99.000000'):.0f}"}
    d = j["read"] if j["read"]["total_ios"] else j["write"]
    f = {"iops": d["iops"], "mib_s": d["bw_bytes"] / 2**20, "p50": pct(d, "50.000000"),
         "p99": pct(d, "99.000000")}
    f["p50s"], f["p99s"] = f"{f['p50']:.0f}", f"{f['p99']:.0f}"
    f["ops"], f["syncs"] = d["total_ios"], j.get("sync", {}).get("total_ios", 0)
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
    raw = figures(load(job, "raw"), job)
    qemu = figures(load(job, "qemu-nbd"), job)
    main = "collie-durable" if job == fsync_job else "collie-nosync"
    other = "collie-nosync" if job == fsync_job else "collie-durable"
    variants = [(main, True)] + ([(other, False)] if nosync_compare and "collie" in targets else [])
    for label, primary in variants:
        col = figures(load(job, label), job) if "collie" in targets else None
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
widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
col = 0
spans = []
for name, n in groups:
    w = sum(widths[col:col + n]) + 2 * (n - 1)
    spans.append(name.center(w, "-") if name else " " * w)
    col += n
print("  ".join(spans).rstrip())
line = lambda cs: "  ".join(str(c).ljust(w) if i in (0, 1, len(cs) - 1) else str(c).rjust(w)
                            for i, (c, w) in enumerate(zip(cs, widths))).rstrip()
print(line(head))
print("  ".join("-" * w for w in widths))
for r in rows:
    print(line(r))
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
