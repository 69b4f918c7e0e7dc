#!/usr/bin/env bash
# replication-c1-vs-c3.sh: what three copies cost, on a six-node cluster on one machine.
#
# Starts 6 sheep (-n, zones 0-5, ports BASE..BASE+5, their own local cluster state file),
# formats with -c 1, creates VDI c1 (-c 1) and VDI c3 (-c 3), and runs, through node 0's
# NBD port, fio-profiles/jobs/write-1M-qd8.fio and randwrite-4k-qd32.fio on each VDI.
# No prefill: the jobs write fresh VDIs. The sequential job runs first; how much of the
# span it covered on each VDI (all of it, or only a part at c3's lower rate) is printed
# under the table: the random job then overwrites that part and allocates the rest.
# Every copy lands on the same disk, so 3 copies ideally get a third of 1 copy's figure:
# the table prints c1, c3, that ideal (c1/3) and c3 / (c1/3) against the target >= 0.8,
# with IOPS, MiB/s and p50/p99 completion latency. See fio-profiles/README.md.
#
# usage: fio-profiles/replication-c1-vs-c3.sh [options] [DIR]
#   DIR              where the stores go (default: target/replication-bench in the
#                    repository); must be a real disk, not tmpfs
#   --seconds N      run time per job and VDI (default 15)
#   --size SIZE      size of both VDIs = span of every job; a whole number of MiB:
#                    512M, 1G (default 1G)
#   --base-port N    admin ports N..N+5, NBD ports N+3809..N+3814 (default 7100)
#   --keep           keep the stores, the cluster state file and every job's JSON
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JOBS_DIR=$ROOT/fio-profiles/jobs
RUNTIME=15
SIZE=1G
BASE_PORT=7100
KEEP=0
DIR=""
NODES=6
JOBS=(write-1M-qd8 randwrite-4k-qd32)
VDIS=(c1 c3)

die() { echo "replication-c1-vs-c3: $*" >&2; exit 1; }
say() { echo "$*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) RUNTIME=${2:?--seconds needs a value}; shift 2 ;;
        --size) SIZE=${2:?--size needs a value}; shift 2 ;;
        --base-port) BASE_PORT=${2:?--base-port needs a value}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (try --help)" ;;
        *) [ -z "$DIR" ] || die "only one DIR"; DIR=$1; shift ;;
    esac
done
case "$RUNTIME" in ''|*[!0-9]*|0) die "--seconds must be a positive whole number" ;; esac
case "$BASE_PORT" in ''|*[!0-9]*) die "--base-port must be a port number" ;; esac
[ "$BASE_PORT" -ge 1024 ] && [ $((BASE_PORT + NODES - 1 + 3809)) -le 65535 ] \
    || die "--base-port must be at least 1024 and at most $((65535 - 3809 - NODES + 1))"

# One size in bytes for fio and nbdinfo, and one spelling for dog: fio reads "2GB" as
# 2 GiB, so nothing below sees the user's spelling.
SIZE_BYTES=$(python3 - "$SIZE" <<'EOF'
import re, sys
m = re.fullmatch(r"(\d+)\s*([kmgt]?)(i?b)?", sys.argv[1].strip(), re.I)
if not m:
    sys.exit(1)
print(int(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower()))
EOF
) || die "--size: cannot read '$SIZE' (use e.g. 512M or 1G)"
MIB=$((1024 * 1024))
[ $((SIZE_BYTES % MIB)) = 0 ] && [ "$SIZE_BYTES" -gt 0 ] || die "--size must be a whole number of MiB"
if [ $((SIZE_BYTES % (1024 * MIB))) = 0 ]; then SIZE_DOG=$((SIZE_BYTES / 1024 / MIB))G; else SIZE_DOG=$((SIZE_BYTES / MIB))M; fi

for j in "${JOBS[@]}"; do [ -f "$JOBS_DIR/$j.fio" ] || die "missing $JOBS_DIR/$j.fio"; done

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
DIR=${DIR:-$TARGET/replication-bench}
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
need nbdinfo libnbd-bin   # waits for an export to be up and checks its size
command -v python3 >/dev/null || die "python3 is needed to read fio's JSON"
command -v ss >/dev/null || die "ss (iproute2) is needed to check the ports"
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine (Debian's fio package has it)"

# The ports are fixed (--base-port), not searched for: refuse to start on a busy one.
PORTS=()
for ((i = 0; i < NODES; i++)); do PORTS+=($((BASE_PORT + i)) $((BASE_PORT + 3809 + i))); done
listening=$(ss -Htln | awk '{ sub(/.*:/, "", $4); print $4 }' | sort -un)
busy=()
for p in "${PORTS[@]}"; do grep -qx "$p" <<<"$listening" && busy+=("$p"); done
((${#busy[@]} == 0)) || die "port(s) ${busy[*]} already in use (this run needs $BASE_PORT-$((BASE_PORT + NODES - 1)) and $((BASE_PORT + 3809))-$((BASE_PORT + 3809 + NODES - 1)); try --base-port)"

say "building sheep and dog (release) ..."
(cd "$ROOT" && cargo build --release --quiet -p collie-tools --bin sheep --bin dog) || die "build failed"
SHEEP=$TARGET/release/sheep
DOG=$TARGET/release/dog
NBD_PORT=$((BASE_PORT + 3809))   # node 0's: every job goes through it

WORK=$(mktemp -d "$DIR/run.XXXXXX")
STATE=$WORK/cluster   # this run's own local cluster: no other sheep joins it
SHEEP_PIDS=()

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
# stop_sheep: SIGTERM to every sheep this run started (by pid), SIGKILL after 20 s.
stop_sheep() {
    local pid
    for pid in "${SHEEP_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${SHEEP_PIDS[@]}"; do
        if ! wait_gone "$pid" 20; then
            say "sheep (pid $pid) still running 20 s after SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 5 || say "sheep (pid $pid) survived SIGKILL"
        fi
    done
    SHEEP_PIDS=()
}
cleanup() {
    stop_sheep || true
    if [ "$KEEP" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

dog() {
    "$DOG" -p "$BASE_PORT" "$@" >>"$WORK/dog.log" 2>&1 || { cat "$WORK/dog.log" >&2; die "dog $* failed"; }
}

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

# run_fio JOB VDI: JOB's file against VDI through node 0 into WORK/JOB.VDI.json. A failed
# run is reported and shows as "err" in the table, so it does not cost the other figures.
run_fio() {
    local job=$1 vdi=$2 out=$WORK/$1.$2
    say "  $job on $vdi ..."
    if (cd "$WORK" && FIO_IOENGINE=nbd FIO_TARGET="uri=nbd://127.0.0.1:$NBD_PORT/$vdi" \
            FIO_SIZE=$SIZE_BYTES FIO_RUNTIME=$RUNTIME \
            fio --output-format=json --output="$out.json" "$JOBS_DIR/$job.fio" >"$out.log" 2>&1); then
        return 0
    fi
    say "fio $job on $vdi failed:"; tail -n 20 "$out.log" >&2
    mv -f "$out.json" "$out.failed.json" 2>/dev/null || true
    return 1
}

say "disk: $(df -h --output=source,fstype "$DIR" | tail -1 | tr -s ' ')  dir: $WORK"
say "starting $NODES sheep -n (zones 0-$((NODES - 1)), ports $BASE_PORT-$((BASE_PORT + NODES - 1)), cluster state $STATE) ..."
for ((i = 0; i < NODES; i++)); do
    store=$WORK/store$i
    mkdir -p "$store"
    cmd=("$SHEEP" -n -b 127.0.0.1 -c "local:$STATE" -z "$i" -p "$((BASE_PORT + i))"
         --nbd-port "$((BASE_PORT + 3809 + i))" "$store")
    echo "${cmd[*]}" >>"$WORK/sheep-cmds.txt"
    # sheep daemonizes and returns once it has joined and listens (or prints why not).
    "${cmd[@]}" >"$WORK/sheep-start.$i.log" 2>&1 \
        || { cat "$WORK/sheep-start.$i.log" >&2; die "sheep $i did not start (log: $store/sheep.log)"; }
    SHEEP_PIDS+=("$(cat "$store/sheep.pid")") || die "sheep $i left no $store/sheep.pid"
done
# Node 0 sees the later joins at its next poll of the state file (every ~200 ms).
for ((t = 0; t < 100; t++)); do
    members=$("$DOG" -p "$BASE_PORT" node list -r 2>/dev/null | wc -l) || members=0
    [ "$members" -ge "$NODES" ] && break
    sleep 0.1
done
[ "$members" = "$NODES" ] || die "node 0 sees $members nodes, not $NODES"

dog cluster format -c 1
dog vdi create -c 1 c1 "$SIZE_DOG"
dog vdi create -c 3 c3 "$SIZE_DOG"
for v in "${VDIS[@]}"; do wait_export "nbd://127.0.0.1:$NBD_PORT/$v"; done
"$DOG" -p "$BASE_PORT" vdi list >&2

say "about $((${#JOBS[@]} * ${#VDIS[@]} * RUNTIME)) s of fio ..."
# Each job on c1 then c3 back to back, so drift in the disk's speed over the run lands
# on both VDIs of a job rather than between them.
for j in "${JOBS[@]}"; do
    for v in "${VDIS[@]}"; do run_fio "$j" "$v" || true; done
done
"$DOG" -p "$BASE_PORT" node info >&2 || true

stop_sheep

python3 - "$WORK" "$SIZE_DOG" "$SIZE_BYTES" "$RUNTIME" "$BASE_PORT" "$NBD_PORT" "${JOBS[@]}" <<'EOF'
import json, os, sys

work, size, size_bytes, seconds, base_port, nbd_port, *jobs = sys.argv[1:]
size_bytes = int(size_bytes)
SEQ = "write-1M-qd8"
TARGET = 0.8
# job -> (what it is, the figure compared)
WHAT = {
    "write-1M-qd8": ("1 MiB sequential writes, QD 8", "mib_s"),
    "randwrite-4k-qd32": ("4 KiB random writes, QD 32", "iops"),
}
UNIT = {"mib_s": "MiB/s", "iops": "IOPS"}

def load(job, vdi):
    """The write figures of one run, or "err" (failed, or fio reported an error)."""
    path = f"{work}/{job}.{vdi}.json"
    if not os.path.exists(path):
        return "err"
    text = open(path).read()
    try:
        # The nbd engine may log a line ahead of the JSON; start at the first brace.
        j = json.loads(text[text.index("{"):])["jobs"][0]
    except (ValueError, KeyError, IndexError):
        return "err"
    if j["error"]:
        return "err"
    w = j["write"]
    pct = w["clat_ns"].get("percentile", {})
    return {"iops": w["iops"], "mib_s": w["bw_bytes"] / 2**20, "bytes": w["io_bytes"],
            "p50": pct.get("50.000000", 0) / 1000, "p99": pct.get("99.000000", 0) / 1000}

def table(rows):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, r in enumerate(rows):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))

summary = []
for job in jobs:
    desc, key = WHAT[job]
    c1, c3 = load(job, "c1"), load(job, "c3")
    print(f"{job}: {desc}; figure: {UNIT[key]}")
    rows = [["", "IOPS", "MiB/s", "p50us", "p99us"]]
    for name, f in (("c1 (-c 1)", c1), ("c3 (-c 3)", c3)):
        if isinstance(f, dict):
            rows.append([name, f"{f['iops']:.0f}", f"{f['mib_s']:.1f}", f"{f['p50']:.0f}", f"{f['p99']:.0f}"])
        else:
            rows.append([name, "err", "err", "err", "err"])
    ratio = None
    if isinstance(c1, dict):
        rows.append(["ideal c3 = c1/3", f"{c1['iops'] / 3:.0f}", f"{c1['mib_s'] / 3:.1f}", "-", "-"])
        if isinstance(c3, dict) and c1[key]:
            ratio = c3[key] / (c1[key] / 3)
    table(rows)
    verdict = "n/a (a run failed)" if ratio is None else ("met" if ratio >= TARGET else "missed")
    rtext = "n/a" if ratio is None else f"{ratio:.2f}"
    print(f"c3 / (c1/3) = {rtext}   target >= {TARGET}: {verdict}")
    print()
    fig = lambda f: f"{f[key]:.1f}" if key == "mib_s" and isinstance(f, dict) else (f"{f[key]:.0f}" if isinstance(f, dict) else "err")
    ideal = f"{c1[key] / 3:.1f}" if key == "mib_s" and isinstance(c1, dict) else (f"{c1[key] / 3:.0f}" if isinstance(c1, dict) else "n/a")
    summary.append([job, UNIT[key], fig(c1), fig(c3), ideal, rtext, f">= {TARGET} {verdict}"])

print("summary")
table([["job", "figure", "c1", "c3", "ideal c1/3", "c3/ideal", "target"]] + summary)
print()
print(f"6 sheep -n on one machine and one disk (zones 0-5, ports {base_port}-{int(base_port) + 5}),")
print(f"cluster formatted -c 1; VDIs c1 (-c 1) and c3 (-c 3) of {size}, not prefilled; fio's nbd")
print(f"engine through node 0 (nbd://127.0.0.1:{nbd_port}/VDI), {seconds} s per job and VDI.")
print("ideal: every copy goes to the same disk, so 3 copies at best get a third of one copy's")
print("figure. p50us/p99us: fio's completion latency (clat). Both VDIs' jobs have one block")
print("size, so the ratio is the same in IOPS and MiB/s.")
if SEQ in jobs:
    for vdi in ("c1", "c3"):
        f = load(SEQ, vdi)
        if isinstance(f, dict):
            covered = min(f["bytes"], size_bytes) / size_bytes
            print(f"{SEQ} wrote {f['bytes'] / 2**30:.2f} GiB to {vdi}: {covered:.0%} of the span was "
                  "written before the random job")
EOF
