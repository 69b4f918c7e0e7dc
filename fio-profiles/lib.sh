# shellcheck shell=bash
# lib.sh: what the benchmark runners in fio-profiles/ share, sourced by each of them.
#
# One home for the shell they would otherwise repeat: messages, --help and --size, the
# measured directory, installing tools, building, ports, sheep by pid, a local cluster of
# several sheep, fio runs and reading fio's JSON. Sourcing it defines functions and a few constants and runs nothing.
# The script sets what the functions read: PROG (message prefix), and where used DIR,
# WORK, KEEP, SHEEP, DOG, DOG_PORT.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)   # the repository
JOBS_DIR=$ROOT/fio-profiles/jobs   # the fio job files, one per job
MIB=$((1024 * 1024))

# die MESSAGE...: prints "PROG: MESSAGE" on stderr and exits 1 (in $(...) only that subshell).
die() { echo "$PROG: $*" >&2; exit 1; }

# say MESSAGE...: prints MESSAGE on stderr (progress for the person watching); returns 0.
say() { echo "$*" >&2; }

# print_help: prints the script's header comment, its usage, without the "# "; returns 0.
print_help() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

# common_arg ARG: takes an argument every runner takes besides its own options: --keep
# (sets KEEP=1), -h/--help (prints the usage and exits 0) or DIR (sets DIR, only once);
# dies on any other option.
common_arg() {
    case "$1" in
        --keep) KEEP=1 ;;
        -h|--help) print_help; exit 0 ;;
        -*) die "unknown option $1 (try --help)" ;;
        *) [ -z "$DIR" ] || die "only one DIR"; DIR=$1 ;;
    esac
}

# cluster_arg ARG [VALUE...]: takes an argument every cluster runner takes: --seconds N
# (sets RUNTIME), --size SIZE (SIZE), --base-port N (BASE_PORT), --disk MBPS[:IOPS]
# (read_disk_limit), else common_arg's; sets ARGS_USED to how many arguments it took,
# for the caller's `shift "$ARGS_USED"`. check_cluster_args checks the values.
cluster_arg() {
    ARGS_USED=2
    case "$1" in
        --seconds) RUNTIME=${2:?--seconds needs a value} ;;
        --size) SIZE=${2:?--size needs a value} ;;
        --base-port) BASE_PORT=${2:?--base-port needs a value} ;;
        --disk) read_disk_limit "${2:?--disk needs a value}" ;;
        *) common_arg "$1"; ARGS_USED=1 ;;   # --keep, --help, DIR
    esac
}

# check_cluster_args NODES: dies unless RUNTIME is a positive whole number and NODES
# nodes' ports fit from BASE_PORT (need_base_port).
check_cluster_args() {
    need_positive "$RUNTIME" --seconds
    need_base_port "$BASE_PORT" "$1"
}

# need_positive VALUE OPTION: returns if VALUE is a positive whole number, else dies naming OPTION.
need_positive() { case "$1" in ''|*[!0-9]*|0) die "$2 must be a positive whole number" ;; esac; }

# read_size SIZE EXAMPLE: sets SIZE_BYTES (bytes, binary units) and SIZE_DOG (dog's "2G" or
# "512M") from SIZE, e.g. 512M, 2G, 2GiB; dies (suggesting 512M or EXAMPLE) unless it is a
# positive whole number of MiB. fio reads "2GB" as 2 GiB but truncate as 2 * 10^9, so
# nothing after this should see the user's spelling.
# shellcheck disable=SC2034  # SIZE_DOG is for the scripts that create VDIs
read_size() {
    SIZE_BYTES=$(python3 - "$1" <<'EOF'
import re, sys
m = re.fullmatch(r"(\d+)\s*([kmgt]?)(i?b)?", sys.argv[1].strip(), re.I)
if not m:
    sys.exit(1)
print(int(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower()))
EOF
) || die "--size: cannot read '$1' (use e.g. 512M or $2)"
    if [ $((SIZE_BYTES % MIB)) != 0 ] || [ "$SIZE_BYTES" -le 0 ]; then
        die "--size must be a whole number of MiB"
    fi
    if [ $((SIZE_BYTES % (1024 * MIB))) = 0 ]; then
        SIZE_DOG=$((SIZE_BYTES / 1024 / MIB))G
    else
        SIZE_DOG=$((SIZE_BYTES / MIB))M
    fi
}

# bench_dir NAME: sets TARGET (cargo's target directory) and DIR (DIR as given, else
# TARGET/NAME), creates DIR and makes it absolute; dies if it is on tmpfs.
bench_dir() {
    TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
    DIR=${DIR:-$TARGET/$1}
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    if [ "$(stat -f -c %T "$DIR")" = tmpfs ]; then
        die "$DIR is on tmpfs: give a directory on the disk to measure"
    fi
}

# disk_of PATH: prints the device and file system type PATH is on ("/dev/vda1 ext4").
disk_of() { df -h --output=source,fstype "$1" | tail -1 | tr -s ' '; }

# disk_stat PATH FIELD [SCALE]: prints counter FIELD (1-based) of the block device PATH is
# on (/sys/class/block/DEV/stat) times SCALE (default 1), or 0 if that cannot be read.
disk_stat() {
    local dev
    dev=$(basename "$(df --output=source "$1" | tail -1)")
    # %.0f: awk prints large products in exponent form, which bash cannot count with.
    awk -v f="$2" -v s="${3:-1}" '{ printf "%.0f\n", $f * s }' "/sys/class/block/$dev/stat" \
        2>/dev/null || echo 0
}

# disk_written PATH: prints the bytes written so far to the disk PATH is on (its
# sectors-written counter, 512-byte units).
disk_written() { disk_stat "$1" 7 512; }

# disk_reads PATH: prints the read requests the disk PATH is on completed so far.
disk_reads() { disk_stat "$1" 1; }

# need COMMAND PACKAGE: returns once COMMAND exists, installing PACKAGE with apt-get (as
# root) when it is missing; dies if it cannot.
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

# need_fio: returns once fio (installed if missing) and python3 (reads fio's JSON) exist; dies otherwise.
need_fio() {
    need fio fio
    command -v python3 >/dev/null || die "python3 is needed to read fio's JSON"
}

# need_nbd_client: returns once nbdinfo (installed if missing) and fio's nbd engine exist; dies otherwise.
need_nbd_client() {
    need nbdinfo libnbd-bin   # waits for an export to be up and checks its size
    fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine (Debian's fio package has it)"
}

# need_ss PURPOSE: returns if ss exists, else dies saying it is needed to PURPOSE.
need_ss() { command -v ss >/dev/null || die "ss (iproute2) is needed to $1"; }

# build_release BIN...: builds collie-tools' BINs in release, saying so; returns cargo's status.
build_release() {
    local bins=() bin what=$1
    for bin in "$@"; do bins+=(--bin "$bin"); done
    [ $# -lt 2 ] || what="${*:1:$#-1} and ${!#}"
    say "building $what (release) ..."
    (cd "$ROOT" && cargo build --release --quiet -p collie-tools "${bins[@]}")
}

# listening: prints the TCP ports something listens on, one a line, ascending.
listening() { ss -Htln | awk '{ sub(/.*:/, "", $4); print $4 }' | sort -un; }

# free_port FROM COUNT: prints the first port at or above FROM (in steps of COUNT) that
# starts a run of COUNT free ports; dies if there is none.
free_port() {
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

# busy_ports PORT...: prints those of PORT... that something listens on, space-separated
# (an empty line when all are free).
busy_ports() {
    local used p busy=()
    used=$(listening)
    for p in "$@"; do
        if grep -qx "$p" <<<"$used"; then busy+=("$p"); fi
    done
    echo "${busy[*]}"
}

# A node's NBD port is its admin port + NBD_OFFSET, as sheep's default (7000 -> 10809).
NBD_OFFSET=3809

# need_base_port BASE NODES: returns if BASE is a port number from which NODES admin ports
# BASE.. and their NBD ports (+NBD_OFFSET) fit; else dies naming --base-port.
need_base_port() {
    case "$1" in ''|*[!0-9]*) die "--base-port must be a port number" ;; esac
    if [ "$1" -lt 1024 ] || [ $(($1 + $2 - 1 + NBD_OFFSET)) -gt 65535 ]; then
        die "--base-port must be at least 1024 and at most $((65535 - NBD_OFFSET - $2 + 1))"
    fi
}

# need_node_ports BASE NODES: returns if nothing listens on the NODES admin ports BASE..
# nor on their NBD ports; else dies naming the busy ones. The ports are fixed
# (--base-port), not searched for: a runner refuses to start on a busy one.
need_node_ports() {
    local ports=() in_use i
    for ((i = 0; i < $2; i++)); do ports+=($(($1 + i)) $(($1 + NBD_OFFSET + i))); done
    in_use=$(busy_ports "${ports[@]}")
    [ -z "$in_use" ] || die "port(s) $in_use already in use (this run needs $1-$(($1 + $2 - 1)) and $(($1 + NBD_OFFSET))-$(($1 + NBD_OFFSET + $2 - 1)); try --base-port)"
}

# wait_gone PID SECONDS: returns 0 if PID exited within SECONDS, 1 if not (it is not our
# child: poll). A zombie counts as gone: daemons are reparented, and their reaper may lag.
wait_gone() {
    local i state
    for ((i = 0; i < $2 * 10; i++)); do
        state=$(ps -o stat= -p "$1" 2>/dev/null) || return 0
        case "$state" in Z*) return 0 ;; esac
        sleep 0.1
    done
    return 1
}

# The pids of the sheep this run started and has not stopped yet.
SHEEP_PIDS=()

# start_sheep_node N STORE ARG...: starts `SHEEP ARG... STORE` (sheep daemonizes once it
# listens), notes the command in WORK/sheep-cmds.txt and appends the daemon's pid to
# SHEEP_PIDS; dies, naming sheep N (or just sheep when N is empty), if it does not start.
start_sheep_node() {
    local name="sheep${1:+ $1}" log="$WORK/sheep-start${1:+.$1}.log" store=$2 pid
    shift 2
    mkdir -p "$store"
    rm -f "$store/sheep.pid"   # a stale one would name a previous, stopped run
    echo "sheep $* $store" >>"$WORK/sheep-cmds.txt"
    "$SHEEP" "$@" "$store" >"$log" 2>&1 \
        || { cat "$log" >&2; die "$name did not start (log: $store/sheep.log)"; }
    pid=$(cat "$store/sheep.pid") || die "$name left no $store/sheep.pid"
    SHEEP_PIDS+=("$pid")
}

# Per-node disk limits (--disk): every sheep of a local cluster shares this machine's
# one disk, so without limits the cluster is CPU-bound and measures CPU per byte. A
# blkio cgroup per sheep gives each node a disk of its own speed, as a real cluster has
# (all stores still sit on the one disk, which must be faster than the sum of the
# limits). Only direct I/O is throttled that way, which is all sheep does for data.
DISK_MBPS=""   # MB/s (10^6 bytes) per node in each direction; empty: no limits
DISK_IOPS=""   # I/O operations per second per node in each direction; empty: none
DISK_GROUPS=() # the cgroup directories made for sheep, removed by drop_disk_groups

# read_disk_limit VALUE: sets DISK_MBPS and DISK_IOPS from --disk's "MBPS[:IOPS]"
# (e.g. 200 or 200:5000); dies if either is not a positive whole number.
read_disk_limit() {
    DISK_MBPS=${1%%:*}
    need_positive "$DISK_MBPS" "--disk's MB/s"
    if [ "$1" != "$DISK_MBPS" ]; then
        DISK_IOPS=${1#*:}
        need_positive "$DISK_IOPS" "--disk's IOPS"
    fi
}

# disk_limits: prints the limits as the reports name them ("200 MB/s and 5000 IOPS"),
# or "none".
disk_limits() {
    if [ -z "$DISK_MBPS" ]; then echo none; return; fi
    echo "$DISK_MBPS MB/s${DISK_IOPS:+ and $DISK_IOPS IOPS} per node, reads and writes each"
}

# disk_device PATH: prints MAJ:MIN of the whole disk PATH is on (throttling rules name
# disks, not partitions); dies if it cannot tell.
disk_device() {
    local src parent
    src=$(df --output=source "$1" | tail -1)
    parent=$(lsblk -no PKNAME "$src" 2>/dev/null | head -1)
    lsblk -dno MAJ:MIN "/dev/${parent:-${src#/dev/}}" 2>/dev/null | tr -d ' ' | grep . \
        || die "cannot tell which disk $1 is on (for --disk)"
}

# limit_disk PID: moves sheep PID (every thread) into a cgroup of its own that limits its
# I/O on DIR's disk to DISK_MBPS and DISK_IOPS; returns at once when no limit is set;
# dies if neither cgroup v2's io controller nor v1's blkio can be used (needs root).
limit_disk() {
    [ -n "$DISK_MBPS" ] || return 0
    local dev bps=$((DISK_MBPS * 1000000)) g v2=/sys/fs/cgroup v1=/sys/fs/cgroup/blkio
    dev=$(disk_device "$DIR")
    if grep -qw io "$v2/cgroup.controllers" 2>/dev/null; then
        grep -qw io "$v2/cgroup.subtree_control" || echo +io >"$v2/cgroup.subtree_control" \
            || die "cannot enable the io controller in $v2"
        g=$v2/collie-bench.$1
        mkdir "$g" || die "cannot make cgroup $g (--disk needs root)"
        DISK_GROUPS+=("$g")
        echo "$dev rbps=$bps wbps=$bps${DISK_IOPS:+ riops=$DISK_IOPS wiops=$DISK_IOPS}" >"$g/io.max" \
            || die "cannot set $g/io.max"
    elif [ -w "$v1/cgroup.procs" ]; then
        g=$v1/collie-bench.$1
        mkdir "$g" || die "cannot make cgroup $g (--disk needs root)"
        DISK_GROUPS+=("$g")
        echo "$dev $bps" >"$g/blkio.throttle.read_bps_device"
        echo "$dev $bps" >"$g/blkio.throttle.write_bps_device"
        if [ -n "$DISK_IOPS" ]; then
            echo "$dev $DISK_IOPS" >"$g/blkio.throttle.read_iops_device"
            echo "$dev $DISK_IOPS" >"$g/blkio.throttle.write_iops_device"
        fi
    else
        die "--disk needs cgroup v2's io controller or v1's blkio, writable (as root)"
    fi
    echo "$1" >"$g/cgroup.procs" || die "cannot move sheep (pid $1) into $g"
}

# drop_disk_groups: removes the cgroups limit_disk made (their sheep must have exited:
# a cgroup with a process in it stays, saying so); returns 0.
drop_disk_groups() {
    local g
    for g in "${DISK_GROUPS[@]}"; do rmdir "$g" 2>/dev/null || say "could not remove cgroup $g"; done
    DISK_GROUPS=()
}

# stop_sheep: SIGTERM to every sheep in SHEEP_PIDS, SIGKILL to any still running 20 s
# later (saying so); empties SHEEP_PIDS and returns 0.
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

# start_local_cluster NODES BASE STATE ARG...: starts NODES sheep on this machine with
# ARG... (e.g. -n), node I in zone I with its store in WORK/storeI, admin port BASE+I and
# NBD port BASE+NBD_OFFSET+I on 127.0.0.1, all in the local cluster whose state file is
# STATE (their own: no other sheep on the machine joins them); returns once node 0 sees
# all NODES, dies if one does not start or node 0 does not see them within 10 s.
start_local_cluster() {
    local nodes=$1 base=$2 state=$3 i t members=0
    shift 3
    for ((i = 0; i < nodes; i++)); do
        # Each returns once it has joined and listens.
        start_sheep_node "$i" "$WORK/store$i" "$@" -b 127.0.0.1 -c "local:$state" -z "$i" \
            -p "$((base + i))" --nbd-port "$((base + NBD_OFFSET + i))"
        limit_disk "${SHEEP_PIDS[-1]}"
    done
    # Node 0 sees the later joins at its next poll of the state file (every ~200 ms).
    for ((t = 0; t < 100; t++)); do
        members=$("$DOG" -p "$base" node list -r 2>/dev/null | wc -l) || members=0
        [ "$members" -ge "$nodes" ] && break
        sleep 0.1
    done
    [ "$members" = "$nodes" ] || die "node 0 sees $members nodes, not $nodes"
}

# start_bench_cluster NAME NODES: how a cluster runner starts. The measured directory
# (bench_dir NAME), fio, an NBD client, ss and free ports BASE_PORT.. (see
# need_node_ports), a release build of sheep and dog, a work directory WORK with the
# run's own cluster state file STATE, the EXIT trap that stops every sheep, then NODES
# sheep -n (start_local_cluster). Sets SHEEP, DOG, DOG_PORT and NBD_PORT (node 0's:
# every job goes through it), WORK and STATE; returns once node 0 sees all NODES.
start_bench_cluster() {
    local name=$1 nodes=$2
    bench_dir "$name"
    need_fio
    need_nbd_client
    need_ss "check the ports"
    need_node_ports "$BASE_PORT" "$nodes"
    build_release sheep dog || die "build failed"
    SHEEP=$TARGET/release/sheep
    DOG=$TARGET/release/dog
    DOG_PORT=$BASE_PORT
    # shellcheck disable=SC2034  # read by the runner that called this
    NBD_PORT=$((BASE_PORT + NBD_OFFSET))
    WORK=$(mktemp -d "$DIR/run.XXXXXX")
    STATE=$WORK/cluster
    trap stop_sheep_drop_work EXIT
    trap 'exit 130' INT TERM
    say "disk: $(disk_of "$DIR")  dir: $WORK"
    say "starting $nodes sheep -n (zones 0-$((nodes - 1)), ports $BASE_PORT-$((BASE_PORT + nodes - 1)), cluster state $STATE) ..."
    start_local_cluster "$nodes" "$BASE_PORT" "$STATE" -n
}

# dog ARG...: runs `DOG -p DOG_PORT ARG...`, its output appended to WORK/dog.log; returns
# 0, or prints that log and dies if dog fails.
dog() {
    "$DOG" -p "$DOG_PORT" "$@" >>"$WORK/dog.log" 2>&1 || { cat "$WORK/dog.log" >&2; die "dog $* failed"; }
}

# wait_export URI BYTES: returns once the NBD export URI answers (30 s at most); dies if it
# does not, or if it is smaller than BYTES.
wait_export() {
    local i size
    for ((i = 0; i < 300; i++)); do
        if size=$(nbdinfo --size "$1" 2>/dev/null); then
            [ "$size" -ge "$2" ] || die "$1 is $size bytes, smaller than --size ($2)"
            return 0
        fi
        sleep 0.1
    done
    nbdinfo --size "$1" >&2 || true
    die "$1 did not come up"
}

# run_fio JOB LABEL ENGINE TARGET BYTES SECONDS: runs JOBS_DIR/JOB.fio with FIO_IOENGINE,
# FIO_TARGET, FIO_SIZE and FIO_RUNTIME set from ENGINE..SECONDS, into WORK/JOB.LABEL.json
# and .log; returns 0, or 1 after printing the log's tail (the JSON becomes .failed.json).
run_fio() {
    local job=$1 label=$2 out=$WORK/$1.$2
    say "  $job on $label ..."
    if (cd "$WORK" && FIO_IOENGINE=$3 FIO_TARGET=$4 FIO_SIZE=$5 FIO_RUNTIME=$6 \
            fio --output-format=json --output="$out.json" "$JOBS_DIR/$job.fio" >"$out.log" 2>&1); then
        return 0
    fi
    say "fio $job on $label failed:"; tail -n 20 "$out.log" >&2
    mv -f "$out.json" "$out.failed.json" 2>/dev/null || true
    return 1
}

# drop_work: removes WORK, or with KEEP=1 says where it is kept; returns 0.
drop_work() { if [ "$KEEP" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi; }

# stop_sheep_drop_work: the EXIT trap of a runner whose only servers are sheep: stops
# them (stop_sheep), then drop_work; returns 0.
stop_sheep_drop_work() {
    stop_sheep || true
    drop_disk_groups
    drop_work
}

# Python put ahead of every fio_py program: imports json, os and sys, and reads fio's JSON.
FIO_PY=$(cat <<'EOF'
import json, os, sys

def fio_json(path):
    """The first job in fio's JSON output file; raises if it cannot be read. The nbd
    engine may log a line ahead of the JSON, so it is read from the first brace."""
    text = open(path).read()
    return json.loads(text[text.index("{"):])["jobs"][0]

def fio_result(path):
    """fio_json(path); None if there is no such file; "err" if it does not parse or fio
    reported an error."""
    if not os.path.exists(path):
        return None
    try:
        j = fio_json(path)
    except (ValueError, KeyError, IndexError):
        return "err"
    return "err" if j["error"] else j

def clat_us(d, p):
    """Completion-latency percentile p ("99.000000") of one direction of a job
    (job["read"] or job["write"]) in us; 0 if fio did not report it."""
    return d["clat_ns"].get("percentile", {}).get(p, 0) / 1000

def figures(d):
    """iops, mib_s, p50 and p99 (us), ops and bytes of one direction of a job."""
    return {"iops": d["iops"], "mib_s": d["bw_bytes"] / 2**20, "p50": clat_us(d, "50.000000"),
            "p99": clat_us(d, "99.000000"), "ops": d["total_ios"], "bytes": d["io_bytes"]}

def run_figures(path, rw):
    """figures() of one direction rw ("read" or "write") of the fio run whose JSON is
    path; "err" if there is no such file (run_fio renames a failed run's), it does not
    parse or fio reported an error."""
    j = fio_result(path)
    return figures(j[rw]) if isinstance(j, dict) else "err"

def span_written(f, span):
    """Bytes from the start of a span of span bytes that a sequential write job wrote,
    given its figures f: all of them once it wrapped around."""
    return min(f["bytes"], span)

def table_widths(rows):
    """The width of each column of rows: its widest cell."""
    return [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]

def print_table(rows, left=(0,)):
    """Prints rows[0] (the header), a rule of dashes, then the other rows, two spaces
    between columns; the columns numbered in left are left-aligned, the others right."""
    widths = table_widths(rows)
    for n, r in enumerate(rows):
        print("  ".join(str(c).ljust(w) if i in left else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
EOF
)

# fio_py ARG...: runs the Python program on stdin after FIO_PY, with ARG... as
# sys.argv[1:]; returns python's exit status.
fio_py() { python3 -c "$FIO_PY"$'\n\n'"$(cat)" "$@"; }
