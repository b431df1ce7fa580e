#!/usr/bin/env bash
# compare-cli.sh: berth-runc against crun and runc on the same busybox bundle, in one run
# (issue 5's benchmark).
#
# Each runtime goes through the same cycle, driven by ../shared/bench/lifecycle.py (a child
# subreaper that times each command and waits for the init with waitpid):
#   RT create --bundle B --pid-file P ID; RT start ID; waitpid(init); RT delete ID
# with /bin/true as the container's process, then its peak RSS (/usr/bin/time -v) of create,
# start, delete and run. Everything runs under ../shared/bench/cgv1-view.sh, a private mount
# namespace whose /sys/fs/cgroup shows only the v1 hierarchies: crun 1.8 refuses this host's
# hybrid cgroups otherwise, and all three must see the same host.
#
# Output: per runtime the median of each step, then one line per peer:
#   ratio berth/PEER X.XX      (berth-runc's median cycle time over the peer's)
# Knobs (env): N (cycles per runtime, default 30), WARMUP (3), N_MEM (5), KEEP=1 keeps the work dir,
# BUILD (dist: the shipping build of scripts/build-dist.sh; release: the plain release build).
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
TARGET=${CARGO_TARGET_DIR:-$REPO/target}

die() { echo "compare-cli.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (namespaces, mounts, cgroups)"
for f in "$CGV1" "$DRIVER" /bin/busybox /usr/bin/time; do [ -e "$f" ] || die "missing $f"; done
for t in crun runc python3; do command -v "$t" >/dev/null || die "missing $t"; done

# The shipping build (scripts/build-dist.sh: static-pie, hot functions first) by default;
# BUILD=release times the ordinary dynamically linked release build instead.
if [ "${BUILD:-dist}" = release ]; then
    echo "building berth-runc (release)..." >&2
    cargo build --release -q -p berth --example berth-runc
    BERTH=$TARGET/release/examples/berth-runc
else
    echo "building berth-runc (scripts/build-dist.sh)..." >&2
    BERTH=$(bash scripts/build-dist.sh berth-runc)
fi
[ -x "$BERTH" ] || die "no $BERTH"

WORK=$(mktemp -d /tmp/berth-compare-cli.XXXXXX)
cleanup() {
    set +e
    for rt in berth-runc crun runc; do
        root=$WORK/root-$rt
        [ -d "$root" ] || continue
        bin=$rt; [ "$rt" = berth-runc ] && bin=$BERTH
        for id in $("$bin" --root "$root" list -q 2>/dev/null); do
            "$bin" --root "$root" delete -f "$id" >/dev/null 2>&1
        done
    done
    [ "${KEEP:-0}" = 1 ] && { echo "work dir kept: $WORK" >&2; return; }
    rm -rf "$WORK"
}
trap cleanup EXIT

# The bundle: busybox rootfs, berth-runc's default spec running /bin/true without a terminal.
B=$WORK/bundle
mkdir -p "$B/rootfs"/{bin,proc,sys,dev,tmp,etc}
cp /bin/busybox "$B/rootfs/bin/busybox"
for a in sh true; do ln -s busybox "$B/rootfs/bin/$a"; done
"$BERTH" spec --bundle "$B"
python3 - "$B/config.json" <<'EOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
json.dump(c, open(p, "w"), indent=1)
EOF

export WORK  # cgv1-view.sh makes its scratch dir under $WORK
measure() {  # name runtime-binary
    local name=$1 bin=$2
    mkdir -p "$WORK/root-$name"
    "$CGV1" python3 "$DRIVER" --name "$name" --mode cycle --runtime "$bin" \
        --root "$WORK/root-$name" --bundle "$B" -n "$N" --warmup "$WARMUP" \
        --log "$WORK/$name.log" --out "$WORK/$name-cycle.json" >&2
    "$CGV1" python3 "$DRIVER" --name "$name-mem" --mode mem --runtime "$bin" \
        --root "$WORK/root-$name" --bundle "$B" -n "$N_MEM" --warmup 1 \
        --log "$WORK/$name.log" --out "$WORK/$name-mem.json" >&2
}
measure berth-runc "$BERTH"
measure crun "$(command -v crun)"
measure runc "$(command -v runc)"

python3 - "$WORK" <<'EOF'
import json, os, sys
w = sys.argv[1]
def load(n, kind):
    return json.load(open(os.path.join(w, "%s-%s.json" % (n, kind))))["steps"]
names = ["berth-runc", "crun", "runc"]
cyc = {n: load(n, "cycle") for n in names}
mem = {n: load(n, "mem") for n in names}
print("median ms (n=%d)      create   start    wait  delete   total | peak RSS kB: create  start  delete    run"
      % json.load(open(os.path.join(w, "berth-runc-cycle.json")))["n"])
for n in names:
    c, m = cyc[n], mem[n]
    print("%-18s %8.2f %7.2f %7.2f %7.2f %7.2f | %19d %6d %7d %6d" % (
        n, c["create"]["median"], c["start"]["median"], c["wait"]["median"],
        c["delete"]["median"], c["total"]["median"],
        m["create_kB"]["median"], m["start_kB"]["median"], m["delete_kB"]["median"],
        m["run_kB"]["median"]))
for peer in names[1:]:
    print("peak-rss-create berth/%s %.2f" % (peer, mem["berth-runc"]["create_kB"]["median"] / mem[peer]["create_kB"]["median"]))
for peer in names[1:]:
    print("ratio berth/%s %.2f" % (peer, cyc["berth-runc"]["total"]["median"] / cyc[peer]["total"]["median"]))
EOF
