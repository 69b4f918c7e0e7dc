#!/usr/bin/env bash
# erasure-vs-replica.sh: erasure coding 4:2 beside three copies, on a six-node cluster on
# one machine.
#
# Starts 6 sheep (-n, zones 0-5, ports BASE..BASE+5, their own local cluster state file),
# formats with -c 3, creates VDI c3 (-c 3) and VDI ec42 (-c 4:2), and runs on each VDI,
# through node 0's NBD port, the fio jobs write-1M-qd8, read-1M-qd8, randread-4k-qd32,
# randwrite-4k-qd32 and write-4k-qd32 from fio-profiles/jobs, in that order. No prefill: the sequential
# write runs first on fresh VDIs and allocates the span; the other three jobs then run
# over the part of the span it wrote on both VDIs (printed under the table), so the reads
# read data and the random writes overwrite it. If `dog vdi create -c 4:2` fails (erasure
# coding not served yet), the c3 jobs still run and ec42's cells say n/a.
# Prints IOPS, MiB/s and p50/p99 completion latency per job and VDI, and ec42/c3 against
# the targets: 1 MiB sequential write >= 1.6, 1 MiB sequential read >= 1.0, 4 KiB random
# write >= 0.5 (IOPS), 4 KiB random read and sequential write none; and the disk reads
# per write of both 4 KiB write jobs. See fio-profiles/README.md.
#
# usage: fio-profiles/erasure-vs-replica.sh [options] [DIR]
#   DIR              where the stores go (default: target/erasure-bench in the
#                    repository); must be a real disk, not tmpfs
#   --seconds N      run time per job and VDI (default 15)
#   --size SIZE      size of both VDIs = span of the sequential write; a whole number of
#                    MiB: 512M, 1G (default 1G)
#   --base-port N    admin ports N..N+5, NBD ports N+3809..N+3814 (default 7200)
#   --disk MBPS[:IOPS]
#                    give each sheep a disk of that speed (MB/s, and I/O operations per
#                    second, in each direction) through a cgroup of its own: the cluster
#                    is then disk-bound, as one with a disk per node is, instead of
#                    bound by this machine's CPUs (needs root; default: no limit)
#   --rounds N       run the jobs after the sequential write N times (default 1), c3
#                    first in odd rounds and ec42 first in even ones; figures are the
#                    means, and each ratio is printed with its range over the rounds
#   --keep           keep the stores, the cluster state file and every job's JSON
set -euo pipefail

PROG="erasure-vs-replica"   # prefix of die's messages
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"   # sets ROOT (the repository) and JOBS_DIR
RUNTIME=15
SIZE=1G
BASE_PORT=7200
KEEP=0
DIR=""
NODES=6
SEQ_WRITE=write-1M-qd8   # first: allocates the span the others use
AFTER=(read-1M-qd8 randread-4k-qd32 randwrite-4k-qd32 write-4k-qd32)   # over what it wrote on both VDIs
EC_VDI=ec42
ROUNDS=1

while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=${2:?--rounds needs a value}; shift 2 ;;
        *) cluster_arg "$@"; shift "$ARGS_USED" ;;
    esac
done
check_cluster_args "$NODES"
need_positive "$ROUNDS" --rounds

# One size in bytes for fio and nbdinfo, and one spelling for dog.
read_size "$SIZE" 1G

for j in "$SEQ_WRITE" "${AFTER[@]}"; do [ -f "$JOBS_DIR/$j.fio" ] || die "missing $JOBS_DIR/$j.fio"; done

start_bench_cluster erasure-bench "$NODES"

dog cluster format -c 3
dog vdi create -c 3 c3 "$SIZE_DOG"
# Erasure coding may not be served yet: then measure c3 alone and say why ec42 is missing.
VDIS=(c3)
EC_ERROR=""
if ec_out=$("$DOG" -p "$DOG_PORT" vdi create -c 4:2 "$EC_VDI" "$SIZE_DOG" 2>&1); then
    VDIS+=("$EC_VDI")
else
    EC_ERROR=$(head -n 1 <<<"$ec_out")   # "dog: why"
    say "dog vdi create -c 4:2 $EC_VDI failed, measuring c3 alone: $EC_ERROR"
fi
echo "$ec_out" >>"$WORK/dog.log"
for v in "${VDIS[@]}"; do wait_export "nbd://127.0.0.1:$NBD_PORT/$v" "$SIZE_BYTES"; done
"$DOG" -p "$DOG_PORT" vdi list >&2

say "about $(((1 + ${#AFTER[@]} * ROUNDS) * ${#VDIS[@]} * RUNTIME)) s of fio ..."
# Each job on c3 then ec42 back to back, so drift in the disk's speed over the run lands
# on both VDIs of a job rather than between them. A failed run is reported and shows as
# "err" in the table, so it does not cost the other figures.
# The disk's own write counter around each sequential write: bytes on disk per byte
# written, what erasure coding saves (sheep writes with O_DIRECT, so nothing lingers in
# the page cache between runs).
for v in "${VDIS[@]}"; do
    before=$(disk_written "$DIR")
    run_fio "$SEQ_WRITE" "$v" nbd "uri=nbd://127.0.0.1:$NBD_PORT/$v" "$SIZE_BYTES" "$RUNTIME" || true
    echo $(($(disk_written "$DIR") - before)) >"$WORK/$SEQ_WRITE.$v.disk"
done
# The other jobs run on the VDIs the sequential write wrote (WROTE), over SPAN: what it
# wrote from offset 0 on all of them, in whole MiB (the 1 MiB read job's block). The same
# span on both VDIs, so both read and overwrite the same data; 0 if it wrote nothing.
span_out=$(fio_py "$WORK" "$SEQ_WRITE" "$SIZE_BYTES" "${VDIS[@]}" <<'EOF'
work, job, size_bytes, *vdis = sys.argv[1:]
runs = {v: run_figures(f"{work}/{job}.{v}.json", "write") for v in vdis}
written = {v: span_written(f, int(size_bytes)) // 2**20 * 2**20 for v, f in runs.items() if isinstance(f, dict)}
written = {v: b for v, b in written.items() if b}
print(min(written.values(), default=0), ",".join(written) or "-")
EOF
) || die "could not read $SEQ_WRITE's JSON"
read -r SPAN WROTE <<<"$span_out"
IFS=, read -r -a WROTE_VDIS <<<"${WROTE/#-/}"
if [ "$SPAN" -gt 0 ]; then
    say "$SEQ_WRITE wrote the first $((SPAN / MIB)) MiB of the span on ${WROTE_VDIS[*]}: ${AFTER[*]} run over it there"
    # The disk's read counter around each job: a small write on ec42 reads what it
    # keeps (docs/erasure.md, Performance), three copies read nothing. Even rounds run
    # the VDIs in reverse order, so that what one leaves behind (compaction, say)
    # does not always land on the other.
    for ((r = 1; r <= ROUNDS; r++)); do
        order=("${WROTE_VDIS[@]}")
        if ((r % 2 == 0)); then order=(); for v in "${WROTE_VDIS[@]}"; do order=("$v" "${order[@]}"); done; fi
        [ "$ROUNDS" = 1 ] || say "round $r of $ROUNDS: ${order[*]}"
        for j in "${AFTER[@]}"; do
            for v in "${order[@]}"; do
                before=$(disk_reads "$DIR")
                run_fio "$j" "$v.$r" nbd "uri=nbd://127.0.0.1:$NBD_PORT/$v" "$SPAN" "$RUNTIME" || true
                echo $(($(disk_reads "$DIR") - before)) >"$WORK/$j.$v.$r.reads"
            done
        done
    done
else
    say "$SEQ_WRITE wrote nothing: ${AFTER[*]} are left out (their reads would read holes)"
fi
"$DOG" -p "$DOG_PORT" node info >&2 || true

stop_sheep

fio_py "$WORK" "$SIZE_DOG" "$SIZE_BYTES" "$SPAN" "$WROTE" "$RUNTIME" "$BASE_PORT" "$NBD_PORT" \
       "$EC_ERROR" "$(disk_limits)" "$ROUNDS" "$SEQ_WRITE" "${AFTER[@]}" <<'EOF'
work, size, size_bytes, span, wrote, seconds, base_port, nbd_port, ec_error, limits, rounds, seq, *after = sys.argv[1:]
size_bytes, span, wrote, rounds = int(size_bytes), int(span), wrote.split(","), int(rounds)
jobs = [seq] + after
VDIS = (("c3", "c3 (-c 3)"), ("ec42", "ec42 (-c 4:2)"))
# job -> (what it is, direction fio reports, the figure compared, target for ec42/c3)
WHAT = {
    "write-1M-qd8": ("1 MiB sequential writes, QD 8", "write", "mib_s", 1.6),
    "read-1M-qd8": ("1 MiB sequential reads, QD 8", "read", "mib_s", 1.0),
    "randread-4k-qd32": ("4 KiB random reads, QD 32", "read", "iops", None),
    "randwrite-4k-qd32": ("4 KiB random writes, QD 32", "write", "iops", 0.5),
    "write-4k-qd32": ("4 KiB sequential writes, QD 32", "write", "iops", None),
}
UNIT = {"mib_s": "MiB/s", "iops": "IOPS"}
SMALL_WRITES = ("randwrite-4k-qd32", "write-4k-qd32")   # their disk reads per write are printed

def round_runs(job, vdi):
    """The figures of each round of a job after the sequential write (or "err")."""
    return [run_figures(f"{work}/{job}.{vdi}.{r}.json", WHAT[job][1]) for r in range(1, rounds + 1)]

def load(job, vdi):
    """The figures of a job on a VDI: of its one run, or the mean of its rounds (ops and
    bytes summed); "n/a" if it did not run (no ec42, or nothing written on the VDI to
    read), "err" if it (or any of its rounds) failed."""
    if (vdi == "ec42" and ec_error) or (job != seq and vdi not in wrote):
        return "n/a"
    if job == seq:
        return run_figures(f"{work}/{job}.{vdi}.json", WHAT[job][1])
    runs = round_runs(job, vdi)
    if any(not isinstance(f, dict) for f in runs):
        return "err"
    mean = {k: sum(f[k] for f in runs) / len(runs) for k in ("iops", "mib_s", "p50", "p99")}
    return mean | {k: sum(f[k] for f in runs) for k in ("ops", "bytes")}

def round_ratios(job, key):
    """The ec42/c3 ratio of each of a job's rounds; None if it ran once or a round is
    missing."""
    if job == seq or rounds == 1 or ec_error or not {"c3", "ec42"} <= set(wrote):
        return None
    pairs = zip(round_runs(job, "c3"), round_runs(job, "ec42"))
    rs = [e[key] / c[key] if isinstance(c, dict) and isinstance(e, dict) and c[key] else None
          for c, e in pairs]
    return None if None in rs else rs

def fig(f, key):
    """One figure of a run as the tables print it, or the run's n/a/err."""
    if not isinstance(f, dict):
        return f
    return f"{f[key]:.1f}" if key == "mib_s" else f"{f[key]:.0f}"

summary = []
for job in jobs:
    desc, rw, key, target = WHAT[job]
    runs = {vdi: load(job, vdi) for vdi, _ in VDIS}
    print(f"{job}: {desc}; figure: {UNIT[key]}")
    rows = [["", "IOPS", "MiB/s", "p50us", "p99us"]]
    for vdi, name in VDIS:
        rows.append([name] + [fig(runs[vdi], k) for k in ("iops", "mib_s", "p50", "p99")])
    print_table(rows)
    c3, ec = runs["c3"], runs["ec42"]
    ratio = ec[key] / c3[key] if isinstance(c3, dict) and isinstance(ec, dict) and c3[key] else None
    rtext = "n/a" if ratio is None else f"{ratio:.2f}"
    each = round_ratios(job, key)
    if ratio is not None and each:
        print(f"ec42 / c3 by round: {' '.join(f'{r:.2f}' for r in each)}")
        rtext += f" ({min(each):.2f}-{max(each):.2f})"
    if target is None:
        ttext, verdict = "-", "-"
        print(f"ec42 / c3 = {rtext}   no target")
    else:
        ttext = f">= {target}"
        verdict = "n/a" if ratio is None else ("met" if ratio >= target else "not met")
        print(f"ec42 / c3 = {rtext}   target {ttext}: {verdict}")
    print()
    summary.append([job, UNIT[key], fig(c3, key), fig(ec, key), rtext, ttext, verdict])

print("summary")
print_table([["job", "figure", "c3", "ec42", "ec42/c3", "target", "result"]] + summary, left=(0, 1, 5, 6))
print()
print(f"6 sheep -n on one machine and one disk (zones 0-5, ports {base_port}-{int(base_port) + 5}),")
print(f"cluster formatted -c 3; VDIs c3 (-c 3) and ec42 (-c 4:2) of {size}, not prefilled; fio's")
print(f"nbd engine through node 0 (nbd://127.0.0.1:{nbd_port}/VDI), {seconds} s per job and VDI.")
if rounds > 1:
    print(f"The jobs after {seq} ran {rounds} rounds: their figures are means, and each")
    print("ratio is the ratio of the means with the lowest and highest round's in brackets")
    print("(each job's table shows every round's). Later rounds run on what the random")
    print("writes of the earlier ones left: objects in many small pieces.")
print(f"Disk limits (--disk): {limits}.")
print("Bytes to the disk per byte written: ideally 3 for c3, 1.5 for ec42 (measured below).")
print("p50us/p99us: fio's completion latency (clat). Every job has one block size, so a ratio")
print("is the same in IOPS and MiB/s.")
if ec_error:
    print("ec42 not measured: `dog vdi create -c 4:2 ec42` failed:")
    print(f"  {ec_error}")
for vdi, _ in VDIS:
    f = load(seq, vdi)
    if isinstance(f, dict):
        try:
            disk = int(open(f"{work}/{seq}.{vdi}.disk").read())
        except (OSError, ValueError):
            disk = 0
        per = f", {disk / f['bytes']:.2f} bytes to the disk per byte" if disk and f["bytes"] else ""
        print(f"{seq} wrote {f['bytes'] / 2**30:.2f} GiB to {vdi}: "
              f"{span_written(f, size_bytes) / size_bytes:.0%} of the {size} span{per}")
for job in (j for j in SMALL_WRITES if j in after):
    for vdi, _ in VDIS:
        f = load(job, vdi)
        if isinstance(f, dict) and f["ops"]:
            try:
                reads = sum(int(open(f"{work}/{job}.{vdi}.{r}.reads").read())
                            for r in range(1, rounds + 1))
            except (OSError, ValueError):
                continue
            print(f"{job} on {vdi}: {reads / f['ops']:.2f} disk reads per write "
                  "(the whole disk's read counter: every sheep)")
if span:
    print(f"{', '.join(after)} ran on {' and '.join(wrote)} over the first {span // 2**20} MiB "
          f"({span / size_bytes:.0%} of the span),")
    print(f"which {seq} wrote on {'both' if len(wrote) > 1 else 'it'}: the reads read written data, "
          "the random writes overwrite it.")
else:
    print(f"{seq} wrote nothing: {', '.join(after)} did not run.")
EOF
