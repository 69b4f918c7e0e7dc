#!/usr/bin/env bash
# recovery.sh: how fast a cluster rebuilds what a dead node held, and what that costs a
# client meanwhile, on a seven-node cluster on one machine.
#
# Starts 7 sheep (-n, zones 0-6, ports BASE..BASE+6, their own local cluster state file),
# formats with -c 3, sets every node's recovery rate limit (dog cluster recover rate,
# --rate), creates VDI c3 (-c 3) of --size and fills all of it with
# fio-profiles/jobs/prefill.fio (1 MiB sequential writes) through node 0's NBD port.
# Then runs jobs/randread-4k-qd4.fio (4 KiB random reads, QD 4) through node 0 twice,
# --seconds each: idle, then started right after SIGKILL to node 6, while
# `dog node recovery -r` is polled every 0.2 s until every node reports recovery
# complete at one epoch newer than before the kill (for at most 10 minutes after the
# kill: recovery that outlasts the client run is waited for). The client logs every
# read, so its run after the kill is also split where recovery was seen complete.
# Prints the client's IOPS and p50/p99 completion latency idle, after the kill and
# while recovery ran, the p99 ratio against the target (during recovery <= 3x idle),
# and the recovery's seconds, MiB copied onto the nodes and MiB/s. See
# fio-profiles/README.md.
#
# usage: fio-profiles/recovery.sh [options] [DIR]
#   DIR              where the stores go (default: target/recovery-bench in the
#                    repository); must be a real disk, not tmpfs
#   --seconds N      run time of each client run, idle and after the kill (default 10)
#   --size SIZE      size of VDI c3, filled completely before the client runs; a whole
#                    number of MiB: 512M, 1G (default 1G)
#   --rate RATE      each node's recovery limit in bytes per second, as dog takes it:
#                    50M, 200M, 0 for no limit (default: the nodes' own, 64 MiB/s)
#   --base-port N    admin ports N..N+6, NBD ports N+3809..N+3815 (default 7300)
#   --disk MBPS[:IOPS]
#                    give each sheep a throttled disk of its own (see
#                    erasure-vs-replica.sh; needs root; default: no limit)
#   --no-build       use target/release/sheep and dog as they are (default: build them)
#   --keep           keep the stores, the cluster state file, fio's JSON and latency
#                    logs and the recovery poll log
set -euo pipefail

PROG="recovery"   # prefix of die's messages
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"   # sets ROOT (the repository) and JOBS_DIR
COMMAND_LINE="$0$(printf ' %q' "$@")"   # printed at the end, to rerun the same
RUNTIME=10
SIZE=1G
RATE=""
BASE_PORT=7300
KEEP=0
NO_BUILD=0
DIR=""
NODES=7
VICTIM=6   # the node killed (zone 6, admin port BASE+6)
VDI=c3
OBJECT_BYTES=$((4 * MIB))   # a VDI's data objects (dog vdi create's default)
FILL=prefill
CLIENT=randread-4k-qd4
POLL_SECONDS=0.2   # between two `dog node recovery -r`
GIVE_UP=600        # seconds after the kill without complete recovery: stop waiting
SETTLE=60          # seconds the fresh cluster has to report recovery complete

while [ $# -gt 0 ]; do
    case "$1" in
        --rate) RATE=${2:?--rate needs a value}; shift 2 ;;
        --no-build) NO_BUILD=1; shift ;;
        *) cluster_arg "$@"; shift "$ARGS_USED" ;;
    esac
done
check_cluster_args "$NODES"
case "$RATE" in -*) die "--rate needs a value such as 50M (0: no limit)" ;; esac   # dog checks the rest

# One size in bytes for fio and nbdinfo, and one spelling for dog.
read_size "$SIZE" 1G

for j in "$FILL" "$CLIENT"; do [ -f "$JOBS_DIR/$j.fio" ] || die "missing $JOBS_DIR/$j.fio"; done

# --no-build: start_bench_cluster builds through build_release; this one only checks
# that the binaries are there (TARGET is set by then).
if [ "$NO_BUILD" = 1 ]; then
    build_release() {
        local bin
        for bin in "$@"; do
            [ -x "$TARGET/release/$bin" ] || die "--no-build: there is no $TARGET/release/$bin"
        done
        say "not building (--no-build): $* as they are in $TARGET/release"
    }
fi

# now_ms: prints the wall-clock time in Unix milliseconds (fio's latency logs use it).
now_ms() { local us=${EPOCHREALTIME//[.,]/}; echo $((us / 1000)); }

# settled AFTER: reads `dog node recovery -r` lines (IDX ADDR EPOCH STATE DONE TOTAL
# BYTES LOST) on stdin; prints "EPOCH NODES OBJECTS BYTES" (objects looked at and bytes
# copied, summed over the nodes) if every line says complete at one epoch newer than
# AFTER, nothing otherwise (a node that did not answer says unknown).
settled() {
    awk -v after="$1" '
        { n++; if ($4 != "complete" || $3 !~ /^[0-9]+$/ || (n > 1 && $3 != e)) bad = 1
          e = $3; done += $5; bytes += $7 }
        END { if (n && !bad && e + 0 > after + 0) print e, n, done, bytes }'
}

# recovery_now: prints `dog node recovery -r` through node 0, nothing if dog fails (its
# message goes to WORK/recovery-poll.err).
recovery_now() { "$DOG" -p "$DOG_PORT" node recovery -r 2>>"$WORK/recovery-poll.err" || true; }

# poll_recovery AFTER T_KILL: every POLL_SECONDS (plus dog's own time) appends
# recovery_now to WORK/recovery-poll.log, each line stamped with Unix ms; writes that
# time to WORK/recovery.epoch the first time a node reports an epoch newer than AFTER;
# once every node reports recovery complete in such an epoch (settled), writes
# "MS EPOCH NODES OBJECTS BYTES" to WORK/recovery.done and returns 0. Returns 1 if that
# has not happened GIVE_UP seconds after T_KILL (Unix ms). Runs in the background: the
# script's traps are not this subshell's.
poll_recovery() {
    local after=$1 deadline=$(($2 + GIVE_UP * 1000)) out now done_line
    while :; do
        out=$(recovery_now)
        now=$(now_ms)
        [ -z "$out" ] || awk -v t="$now" '{ print t, $0 }' <<<"$out" >>"$WORK/recovery-poll.log"
        if [ ! -e "$WORK/recovery.epoch" ] &&
            awk -v a="$after" '$3 ~ /^[0-9]+$/ && $3 + 0 > a + 0 { f = 1 } END { exit !f }' <<<"$out"; then
            echo "$now" >"$WORK/recovery.epoch"
        fi
        done_line=$(settled "$after" <<<"$out")
        if [ -n "$done_line" ]; then
            echo "$now $done_line" >"$WORK/recovery.done"
            return 0
        fi
        [ "$now" -lt "$deadline" ] || return 1
        sleep "$POLL_SECONDS"
    done
}

# keep_clat_log LABEL: renames the client's per-read completion latency log in WORK to
# CLIENT.LABEL.clat.log and drops the _lat and _slat logs fio wrote beside it.
keep_clat_log() {
    rm -f "$WORK/${CLIENT}_lat.1.log" "$WORK/${CLIENT}_slat.1.log"
    if [ -f "$WORK/${CLIENT}_clat.1.log" ]; then
        mv "$WORK/${CLIENT}_clat.1.log" "$WORK/$CLIENT.$1.clat.log"
    fi
}

POLL_PID=""
# stop_poller: ends the background poll_recovery, if it runs; returns 0.
stop_poller() {
    if [ -n "$POLL_PID" ]; then kill "$POLL_PID" 2>/dev/null || true; wait "$POLL_PID" 2>/dev/null || true; fi
    POLL_PID=""
}

start_bench_cluster recovery-bench "$NODES"
# The poller is ours too: stopped with the sheep on exit, Ctrl-C or error.
trap 'stop_poller; stop_sheep_drop_work' EXIT

dog cluster format -c 3
if [ -n "$RATE" ]; then dog cluster recover rate "$RATE"; fi
dog vdi create -c 3 "$VDI" "$SIZE_DOG"
URI=nbd://127.0.0.1:$NBD_PORT/$VDI
wait_export "$URI" "$SIZE_BYTES"
# What every node took, in bytes per second (0: no limit); recovery must be enabled.
RATE_BYTES=$("$DOG" -p "$DOG_PORT" cluster recover info -r |
    awk '{ n++; if ($3 != "enabled" || (n > 1 && $4 != r)) bad = 1; r = $4 } END { if (n && !bad) print r }')
[ -n "$RATE_BYTES" ] || { "$DOG" -p "$DOG_PORT" cluster recover info >&2; die "the nodes do not all recover at one rate"; }

say "filling $VDI ($SIZE_DOG) with 1 MiB sequential writes through node 0 ..."
run_fio "$FILL" "$VDI" nbd "uri=$URI" "$SIZE_BYTES" 1800 || die "the fill failed"
fio_py "$WORK/$FILL.$VDI.json" "$SIZE_BYTES" <<'EOF' || die "the fill did not write all of $VDI"
job = fio_json(sys.argv[1])
sys.exit(0 if job["error"] == 0 and job["write"]["io_bytes"] >= int(sys.argv[2]) else 1)
EOF

# Before the kill every node must report recovery complete, at one epoch (the one to
# beat after the kill).
settled_line=""
for ((t = 0; t < SETTLE * 10; t++)); do
    settled_line=$(recovery_now | settled 0)
    [ -z "$settled_line" ] || break
    sleep 0.1
done
[ -n "$settled_line" ] || { recovery_now >&2; die "the nodes did not report recovery complete within $SETTLE s of the fill"; }
read -r EPOCH0 seen _ <<<"$settled_line"
[ "$seen" = "$NODES" ] || die "node 0 reports recovery for $seen nodes, not $NODES"

# What the victim holds, for scale beside the bytes recovery copies: the bytes it
# reports in use (dog node info, found by its zone), and the copies of c3's data objects
# it holds (dog vdi object location: ADDR ZONE USED CRC target|misplaced), with their
# bytes. The VDI has the default 4 MiB objects; the inode and other metadata are not
# counted.
VICTIM_USED=$("$DOG" -p "$DOG_PORT" node list -r | awk -v z="$VICTIM" '$4 == z { print $1 }' |
    { read -r id && "$DOG" -p "$DOG_PORT" node info -r | awk -v id="$id" '$1 == id { print $3 }'; }) || VICTIM_USED=""
say "counting the copies node $VICTIM holds ($((SIZE_BYTES / OBJECT_BYTES)) objects) ..."
VICTIM_COPIES=$(for ((i = 0; i < SIZE_BYTES / OBJECT_BYTES; i++)); do
        "$DOG" -p "$DOG_PORT" vdi object location -r "$VDI" "$i" || echo failed
    done | awk -v z="$VICTIM" '$1 == "failed" { bad = 1 } $2 == z { n++; b += $3 } END { if (!bad) print n + 0, b + 0 }')
VICTIM_PID=$(cat "$WORK/store$VICTIM/sheep.pid") || die "no pid file for node $VICTIM"
[ "$VICTIM_PID" = "${SHEEP_PIDS[$VICTIM]}" ] || die "node $VICTIM's pid file says $VICTIM_PID, not ${SHEEP_PIDS[$VICTIM]}"
"$DOG" -p "$DOG_PORT" node info >&2 || true

say "idle: $CLIENT through node 0 for $RUNTIME s ..."
run_fio "$CLIENT" idle nbd "uri=$URI" "$SIZE_BYTES" "$RUNTIME" || die "the idle client run failed"
keep_clat_log idle

# The kill, then at once the poller and the same client run.
say "SIGKILL to node $VICTIM (pid $VICTIM_PID, epoch $EPOCH0), then $CLIENT for $RUNTIME s while recovery runs ..."
kill -KILL "$VICTIM_PID"
T_KILL=$(now_ms)
poll_recovery "$EPOCH0" "$T_KILL" &
POLL_PID=$!
CLIENT_FAILED=0
run_fio "$CLIENT" recovery nbd "uri=$URI" "$SIZE_BYTES" "$RUNTIME" || CLIENT_FAILED=1
keep_clat_log recovery
wait_gone "$VICTIM_PID" 10 || die "node $VICTIM (pid $VICTIM_PID) still runs after SIGKILL"
remaining=()
for p in "${SHEEP_PIDS[@]}"; do [ "$p" = "$VICTIM_PID" ] || remaining+=("$p"); done
SHEEP_PIDS=("${remaining[@]}")

if [ ! -e "$WORK/recovery.done" ] && kill -0 "$POLL_PID" 2>/dev/null; then
    say "the client run is over, recovery is not: polling on (until $GIVE_UP s after the kill) ..."
fi
RECOVERED=1
wait "$POLL_PID" || RECOVERED=0
POLL_PID=""
if [ "$RECOVERED" = 0 ]; then
    say "recovery not complete $GIVE_UP s after the kill; the last poll said:"
    recovery_now >&2
fi
"$DOG" -p "$DOG_PORT" node recovery >&2 || true
"$DOG" -p "$DOG_PORT" node info >&2 || true

stop_sheep

fio_py "$WORK" "$CLIENT" "$RUNTIME" "$SIZE_DOG" "$SIZE_BYTES" "$RATE_BYTES" "$BASE_PORT" "$NBD_PORT" \
       "$NODES" "$VICTIM" "$EPOCH0" "$T_KILL" "$CLIENT_FAILED" "$VICTIM_USED" "$VICTIM_COPIES" "$COMMAND_LINE" <<'EOF'
(work, client, seconds, size, size_bytes, rate, base_port, nbd_port, nodes, victim, epoch0,
 t_kill, client_failed, victim_used, victim_copies, command_line) = sys.argv[1:]
base_port, nodes, t_kill, size_bytes = int(base_port), int(nodes), int(t_kill), int(size_bytes)
TARGET = 3.0        # during-recovery p99 at most this times idle p99
MIN_READS = 100     # fewer reads in a slice give no p99 worth printing

def read_file(name):
    """A small file of WORK as its whitespace-separated words; [] if it is missing."""
    try:
        return open(f"{work}/{name}").read().split()
    except OSError:
        return []

def clat_log(label):
    """The client run's reads as (completion time in Unix ms, completion latency in ns),
    from fio's per-I/O log; None if there is none."""
    try:
        with open(f"{work}/{client}.{label}.clat.log") as f:
            return [(int(a), int(b)) for a, b, *_ in (line.split(",") for line in f if line.strip())]
    except OSError:
        return None

def span(reads):
    """(start, end) of a run in Unix ms: the earliest submission (completion time less
    latency) and the last completion."""
    return min(t - ns / 1e6 for t, ns in reads), max(t for t, _ in reads)

def slice_figures(reads, start, end):
    """Reads completed in (start, end] (Unix ms): count, IOPS over that time and
    nearest-rank p50/p99 latency in us (None below MIN_READS reads for p99, or none)."""
    lats = sorted(ns for t, ns in reads if start < t <= end)
    n, secs = len(lats), (end - start) / 1000
    pct = lambda p: lats[max(0, -(-n * p // 100) - 1)] / 1000 if n else None
    return {"n": n, "secs": secs, "iops": n / secs if secs > 0 else 0,
            "p50": pct(50), "p99": pct(99) if n >= MIN_READS else None}

def num(x, fmt="{:.0f}"):
    return "-" if x is None else fmt.format(x)

idle_reads, rec_reads = clat_log("idle"), clat_log("recovery")
idle_fio = run_figures(f"{work}/{client}.idle.json", "read")
rec_fio = run_figures(f"{work}/{client}.recovery.json", "read")
done = read_file("recovery.done")        # MS EPOCH NODES OBJECTS BYTES
epoch_seen = read_file("recovery.epoch")  # MS
t_done = int(done[0]) if done else None

# The client's figures, all from its per-read logs (one method for every row).
idle = slice_figures(idle_reads, *span(idle_reads)) if idle_reads else None
rows = [["client run", "reads", "IOPS", "p50us", "p99us", "p99/idle"]]
def row(name, f):
    ratio = f["p99"] / idle["p99"] if f and idle and f["p99"] and idle["p99"] else None
    rows.append([name] + ([f["n"], num(f["iops"]), num(f["p50"]), num(f["p99"]), num(ratio, "{:.2f}")]
                          if f else ["err"] * 5))
    return ratio
row("idle", idle)
during = whole = None
overlap = None
if rec_reads:
    r0, r1 = span(rec_reads)
    whole = slice_figures(rec_reads, r0, r1)
    row("after the kill, whole run", whole)
    rel = lambda t: (t - t_kill) / 1000
    if t_done is not None and t_done < r1:
        during = slice_figures(rec_reads, r0, t_done)
        after = slice_figures(rec_reads, t_done, r1)
        row(f"  while recovering ({rel(r0):.2f}-{rel(t_done):.2f} s)", during)
        row(f"  after recovery ({rel(t_done):.2f}-{rel(r1):.2f} s)", after)
        overlap = (t_done - r0) / (r1 - r0)
    else:
        during = whole   # recovery outlasted the client run (or never completed)
        overlap = 1.0
else:
    row("after the kill, whole run", None)

print(f"client: {client} (4 KiB random reads, QD 4) on VDI c3 through node 0, {seconds} s per run")
print_table(rows)
ratio = during["p99"] / idle["p99"] if during and idle and during["p99"] and idle["p99"] else None
if ratio is None:
    why = ("the client run after the kill failed" if client_failed == "1" or not rec_reads else
           f"fewer than {MIN_READS} reads while recovering" if during else "no idle figures")
    print(f"during-recovery p99 / idle p99 = n/a ({why})   target <= {TARGET:g}: n/a")
else:
    print(f"during-recovery p99 / idle p99 = {ratio:.2f}   target <= {TARGET:g}: "
          f"{'met' if ratio <= TARGET else 'not met'}")
if client_failed == "1":
    print("the client run after the kill failed (fio's log is printed above; err in fio's figures)")
print()

rate = int(rate)
print(f"recovery: node {victim} killed (SIGKILL); recovery rate limit: "
      f"{f'{rate / 2**20:g} MiB/s per node' if rate else 'none'}")
rec = [["recovery", "value"]]
if epoch_seen:
    rec.append(["new epoch reported after (s)", f"{(int(epoch_seen[0]) - t_kill) / 1000:.2f}"])
if done:
    _, epoch, n_nodes, objects, nbytes = done
    secs, mib = (t_done - t_kill) / 1000, int(nbytes) / 2**20
    rec += [["complete after (s)", f"{secs:.2f}"],
            ["epoch before / after", f"{epoch0} / {epoch}"],
            ["nodes reporting", n_nodes],
            ["objects looked at", objects],
            ["MiB copied onto the nodes", f"{mib:.1f}"],
            ["MiB/s (kill to complete)", f"{mib / secs:.1f}" if secs > 0 else "-"]]
    if epoch_seen and t_done > int(epoch_seen[0]):
        rec.append(["MiB/s (new epoch to complete)", f"{mib / ((t_done - int(epoch_seen[0])) / 1000):.1f}"])
else:
    rec.append(["complete after (s)", "not within 600 s: gave up"])
if victim_copies:
    copies, copy_bytes = victim_copies.split()
    rec.append([f"c3 data copies node {victim} held (MiB)", f"{copies} ({int(copy_bytes) / 2**20:.1f})"])
if victim_used:
    rec.append([f"node {victim} reported in use (MiB)", f"{int(victim_used) / 2**20:.1f}"])
print_table(rec)
print()

print(f"{nodes} sheep -n on one machine and one disk (zones 0-{nodes - 1}, ports {base_port}-{base_port + nodes - 1}),")
print(f"cluster formatted -c 3; VDI c3 (-c 3) of {size}, filled with 1 MiB sequential writes")
print(f"before the client runs; fio's nbd engine through node 0 (nbd://127.0.0.1:{nbd_port}/c3).")
polls = sorted({int(w[0]) for w in (l.split() for l in open(f"{work}/recovery-poll.log")) if w}
                if os.path.exists(f"{work}/recovery-poll.log") else [])
every = f", {(polls[-1] - polls[0]) / 1000 / (len(polls) - 1):.2f} s apart on average" if len(polls) > 1 else ""
print("Recovery is timed from the SIGKILL to the first `dog node recovery -r` (polled every")
print(f"0.2 s plus dog's own time: {len(polls)} polls{every}) in which every node says")
print(f"complete at one epoch newer than {epoch0}: it includes noticing the death, and may be late")
print("by up to one poll. MiB copied: the BYTES column summed over the nodes (bytes copied or")
print("rebuilt onto them in the new epoch).")
if rec_reads and t_done is not None:
    r0, r1 = span(rec_reads)
    print(f"The client run after the kill started {(r0 - t_kill) / 1000:.2f} s after it and lasted "
          f"{(r1 - r0) / 1000:.2f} s;")
    print(f"recovery covered {overlap:.0%} of it (times in the table: seconds after the kill).")
    if overlap < 1:
        print("'while recovering' is the part of the run before recovery was seen complete (its")
        print("reads completed by then); the target compares its p99 with the idle run's.")
    else:
        print("Recovery outlasted the client run: the whole run is 'during recovery'.")
elif rec_reads:
    print("Recovery was not seen complete: the whole client run after the kill counts as during it.")
print(f"p50us/p99us: completion latency (clat), nearest rank over every read fio logged;")
print(f"p99 is left out (-) below {MIN_READS} reads. fio's own figures (its histogram, whole runs):")
for name, f in (("idle", idle_fio), ("after the kill", rec_fio)):
    print(f"  {name}: " + (f"{f['iops']:.0f} IOPS, p50 {f['p50']:.0f} us, p99 {f['p99']:.0f} us"
                           if isinstance(f, dict) else "err"))
print()
print(f"command: {command_line}")
EOF

[ "$RECOVERED" = 1 ] || die "recovery did not complete within $GIVE_UP s of the kill"
