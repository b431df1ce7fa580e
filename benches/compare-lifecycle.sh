#!/usr/bin/env bash
# compare-lifecycle.sh: the berth-runtime LIBRARY against the crun and runc command lines, on
# the same busybox bundle, in one run (issue 4's benchmark).
#
# One cycle = create + start + wait + delete of /bin/true.
# - berth: through the library API, in one process: the `lifecycle` criterion bench binary in
#   its plain mode (BERTH_LIFECYCLE_CYCLES=N), which times each step of N cycles after warm-up.
# - crun, runc: their command lines, one process per step, driven by
#   ../shared/bench/lifecycle.py --mode cycle (subreaper + waitpid for the init).
# Peak memory: /usr/bin/time's maximum RSS of the process that creates the containers:
# - `run-bundle` (examples/run-bundle.rs: the library embedded in a std-only front end) in its
#   shipping build (scripts/build-dist.sh: dist profile, static-pie, RELR), running N_MEM
#   cycles in one process: the library's cost to a front end (the headline figure);
# - `berth-runc create` (same build), like for like with `crun create` / `runc create`
#   (lifecycle.py --mode mem, median of N_MEM);
# - the criterion bench process (it links criterion, rayon, plotters...), for the record.
# Everything runs under ../shared/bench/cgv1-view.sh (only the v1 cgroup hierarchies visible):
# crun 1.8 refuses this host's hybrid cgroups otherwise, and all must see the same host.
# State roots: all three runtimes keep their state under the same directory, by default on
# /dev/shm (a tmpfs, like /run where they keep it on a normal host: /run/berth, /run/crun,
# /run/runc). STATE_DIR=DIR puts them elsewhere, e.g. STATE_DIR=/tmp to see a disk file
# system's cost (on an ext4 without a journal, every new inode scans past the recently deleted
# ones, so the runtime that creates more files per container pays more).
# Peak RSS of the library process is also printed as the bench binary's own startup RSS (before
# its first container: std, libc, and the relocations of a binary that links criterion) plus
# the library's share.
#
# Output: the medians, the peak RSS, then one line per peer:
#   ratio berth/PEER X.XX      (the library's median cycle time over the peer's)
# Knobs (env): N (30), WARMUP (3), N_MEM (5), STATE_DIR (/dev/shm), KEEP=1 keeps the work dir.
# Needs root, python3, /usr/bin/time, busybox-static, crun, runc.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
REPO=$(pwd)
SHARED=${SHARED:-$REPO/../shared}
CGV1=$SHARED/bench/cgv1-view.sh
DRIVER=$SHARED/bench/lifecycle.py
N=${N:-30}
WARMUP=${WARMUP:-3}
N_MEM=${N_MEM:-5}

die() { echo "compare-lifecycle.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (namespaces, mounts, cgroups)"
for f in "$CGV1" "$DRIVER" /bin/busybox /usr/bin/time; do [ -e "$f" ] || die "missing $f"; done
for t in crun runc python3; do command -v "$t" >/dev/null || die "missing $t"; done

echo "building the lifecycle bench (bench profile)..." >&2
BENCH=$(cargo bench -q -p berth --bench lifecycle --no-run --message-format=json 2>/dev/null \
    | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "lifecycle" \
            and m.get("executable"):
        print(m["executable"])
')
[ -x "$BENCH" ] || die "could not build the lifecycle bench"
# The smallest embedding of the library (examples/run-bundle.rs: runtime + std, no criterion):
# its peak RSS is the library's cost to a front end, measured beside the bench binary's.
echo "building run-bundle and berth-runc (scripts/build-dist.sh)..." >&2
mapfile -t DIST < <(bash scripts/build-dist.sh run-bundle berth-runc)
RUN_BUNDLE=${DIST[0]}
BERTH_RUNC=${DIST[1]}

WORK=$(mktemp -d /tmp/berth-compare-lifecycle.XXXXXX)
STATE_DIR=${STATE_DIR:-/dev/shm}
[ -d "$STATE_DIR" ] || STATE_DIR=$WORK
STATE=$(mktemp -d "$STATE_DIR/berth-compare-state.XXXXXX")
cleanup() {
    set +e
    for rt in crun runc berth-runc; do
        root=$STATE/root-$rt
        [ -d "$root" ] || continue
        bin=$rt
        [ "$rt" = berth-runc ] && bin=${BERTH_RUNC:-}
        [ -n "$bin" ] || continue
        for id in $("$bin" --root "$root" list -q 2>/dev/null); do
            "$bin" --root "$root" delete -f "$id" >/dev/null 2>&1
        done
    done
    [ "${KEEP:-0}" = 1 ] && { echo "work dir kept: $WORK (state: $STATE)" >&2; return; }
    rm -rf "$WORK" "$STATE"
}
trap cleanup EXIT

# The bundle all three run: busybox rootfs, a runc-style spec running /bin/true (no terminal).
B=$WORK/bundle
mkdir -p "$B/rootfs"/{bin,proc,sys,dev,tmp,etc}
cp /bin/busybox "$B/rootfs/bin/busybox"
for a in sh true; do ln -s busybox "$B/rootfs/bin/$a"; done
runc spec --bundle "$B"
python3 - "$B/config.json" <<'EOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
caps = c["process"].get("capabilities", {})
for k in ("ambient", "inheritable"):
    caps.pop(k, None)
json.dump(c, open(p, "w"), indent=1)
EOF

export WORK  # cgv1-view.sh makes its scratch dir under $WORK
# berth: the library in one process.
echo "state roots under $STATE ($(stat -f -c %T "$STATE"))" >&2
"$CGV1" env BERTH_LIFECYCLE_CYCLES="$N" BERTH_LIFECYCLE_OUT="$WORK/berth-cycle.json" \
    BERTH_LIFECYCLE_BUNDLE="$B" BERTH_LIFECYCLE_ROOT="$STATE" "$BENCH" >&2
"$CGV1" /usr/bin/time -v -o "$WORK/berth.time" env BERTH_LIFECYCLE_CYCLES="$N_MEM" \
    BERTH_LIFECYCLE_OUT="$WORK/berth-mem-cycles.json" BERTH_LIFECYCLE_BUNDLE="$B" \
    BERTH_LIFECYCLE_ROOT="$STATE" "$BENCH" >&2
"$CGV1" /usr/bin/time -f %M -o "$WORK/run-bundle.rss" "$RUN_BUNDLE" --root "$STATE/root-rb" \
    --repeat "$N_MEM" "$B" >&2
mkdir -p "$STATE/root-berth-runc"
"$CGV1" python3 "$DRIVER" --name berth-runc-mem --mode mem --runtime "$BERTH_RUNC" \
    --root "$STATE/root-berth-runc" --bundle "$B" -n "$N_MEM" --warmup 1 \
    --log "$WORK/berth-runc.log" --out "$WORK/berth-runc-mem.json" >&2
# The peers: their command lines.
for rt in crun runc; do
    mkdir -p "$STATE/root-$rt"
    "$CGV1" python3 "$DRIVER" --name "$rt" --mode cycle --runtime "$(command -v $rt)" \
        --root "$STATE/root-$rt" --bundle "$B" -n "$N" --warmup "$WARMUP" \
        --log "$WORK/$rt.log" --out "$WORK/$rt-cycle.json" >&2
    "$CGV1" python3 "$DRIVER" --name "$rt-mem" --mode mem --runtime "$(command -v $rt)" \
        --root "$STATE/root-$rt" --bundle "$B" -n "$N_MEM" --warmup 1 \
        --log "$WORK/$rt.log" --out "$WORK/$rt-mem.json" >&2
done

python3 - "$WORK" <<'EOF'
import json, os, sys
w = sys.argv[1]
def steps(name):
    return json.load(open(os.path.join(w, name)))["steps"]
berth = steps("berth-cycle.json")
startup_rss = json.load(open(os.path.join(w, "berth-mem-cycles.json"))).get("startup_rss_kB")
rss = None
for line in open(os.path.join(w, "berth.time")):
    if "Maximum resident set size" in line:
        rss = int(line.rsplit(":", 1)[1])
peers = ["crun", "runc"]
cyc = {p: steps(p + "-cycle.json") for p in peers}
mem = {p: steps(p + "-mem.json") for p in peers}
print("median ms               create   start    wait  delete   total | peak RSS kB of the creating process")
print("%-22s %7.2f %7.2f %7.2f %7.2f %7.2f | %d" % (
    "berth (library)", berth["create"]["median"], berth["start"]["median"], berth["wait"]["median"],
    berth["delete"]["median"], berth["total"]["median"], rss))
for p in peers:
    c = cyc[p]
    print("%-22s %7.2f %7.2f %7.2f %7.2f %7.2f | %d" % (
        p + " (CLI)", c["create"]["median"], c["start"]["median"], c["wait"]["median"],
        c["delete"]["median"], c["total"]["median"], mem[p]["create_kB"]["median"]))
rb = int(open(os.path.join(w, "run-bundle.rss")).read().split()[-1])
brc = steps("berth-runc-mem.json")["create_kB"]["median"]
print()
print("peak RSS kB of the creating process:")
print("  run-bundle, N_MEM cycles in one process (dist build) %6d" % rb)
print("  berth-runc create (dist build)                       %6d" % brc)
for p in peers:
    print("  %-52s %6d" % (p + " create", mem[p]["create_kB"]["median"]))
print("  the criterion bench process (for the record)         %6d" % rss)
if startup_rss:
    print("    = before its first container %d kB + library %d kB" % (startup_rss, rss - startup_rss))
for p in peers:
    c = mem[p]["create_kB"]["median"]
    print("peak-rss run-bundle/%s %.2f" % (p, rb / c))
    print("peak-rss berth-runc-create/%s %.2f" % (p, brc / c))
    print("peak-rss berth-bench/%s %.2f" % (p, rss / c))
for p in peers:
    print("ratio berth/%s %.2f" % (p, berth["total"]["median"] / cyc[p]["total"]["median"]))
EOF
