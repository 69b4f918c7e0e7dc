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
#   --disk MBPS[:IOPS]
#                    give each sheep a throttled disk of its own (see
#                    erasure-vs-replica.sh; needs root; default: no limit)
#   --keep           keep the stores, the cluster state file and every job's JSON
set -euo pipefail

PROG="replication-c1-vs-c3"   # prefix of die's messages
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"   # sets ROOT (the repository) and JOBS_DIR
RUNTIME=15
SIZE=1G
BASE_PORT=7100
KEEP=0
DIR=""
NODES=6
JOBS=(write-1M-qd8 randwrite-4k-qd32)
VDIS=(c1 c3)

while [ $# -gt 0 ]; do cluster_arg "$@"; shift "$ARGS_USED"; done
check_cluster_args "$NODES"

# One size in bytes for fio and nbdinfo, and one spelling for dog.
read_size "$SIZE" 1G

for j in "${JOBS[@]}"; do [ -f "$JOBS_DIR/$j.fio" ] || die "missing $JOBS_DIR/$j.fio"; done

start_bench_cluster replication-bench "$NODES"

dog cluster format -c 1
dog vdi create -c 1 c1 "$SIZE_DOG"
dog vdi create -c 3 c3 "$SIZE_DOG"
for v in "${VDIS[@]}"; do wait_export "nbd://127.0.0.1:$NBD_PORT/$v" "$SIZE_BYTES"; done
"$DOG" -p "$BASE_PORT" vdi list >&2

say "about $((${#JOBS[@]} * ${#VDIS[@]} * RUNTIME)) s of fio ..."
# Each job on c1 then c3 back to back, so drift in the disk's speed over the run lands
# on both VDIs of a job rather than between them. A failed run is reported and shows as
# "err" in the table, so it does not cost the other figures.
for j in "${JOBS[@]}"; do
    for v in "${VDIS[@]}"; do
        run_fio "$j" "$v" nbd "uri=nbd://127.0.0.1:$NBD_PORT/$v" "$SIZE_BYTES" "$RUNTIME" || true
    done
done
"$DOG" -p "$BASE_PORT" node info >&2 || true

stop_sheep

fio_py "$WORK" "$SIZE_DOG" "$SIZE_BYTES" "$RUNTIME" "$BASE_PORT" "$NBD_PORT" "${JOBS[@]}" <<'EOF'
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
    return run_figures(f"{work}/{job}.{vdi}.json", "write")

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
    print_table(rows)
    verdict = "n/a (a run failed)" if ratio is None else ("met" if ratio >= TARGET else "missed")
    rtext = "n/a" if ratio is None else f"{ratio:.2f}"
    print(f"c3 / (c1/3) = {rtext}   target >= {TARGET}: {verdict}")
    print()
    fig = lambda f: f"{f[key]:.1f}" if key == "mib_s" and isinstance(f, dict) else (f"{f[key]:.0f}" if isinstance(f, dict) else "err")
    ideal = f"{c1[key] / 3:.1f}" if key == "mib_s" and isinstance(c1, dict) else (f"{c1[key] / 3:.0f}" if isinstance(c1, dict) else "n/a")
    summary.append([job, UNIT[key], fig(c1), fig(c3), ideal, rtext, f">= {TARGET} {verdict}"])

print("summary")
print_table([["job", "figure", "c1", "c3", "ideal c1/3", "c3/ideal", "target"]] + summary)
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
            covered = span_written(f, size_bytes) / size_bytes
            print(f"{SEQ} wrote {f['bytes'] / 2**30:.2f} GiB to {vdi}: {covered:.0%} of the span was "
                  "written before the random job")
EOF
