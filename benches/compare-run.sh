#!/usr/bin/env bash
# compare-run.sh: `berth run --rm IMAGE true` against `podman run --rm` and `ctr run --rm`, on
# the same busybox oci-archive imported into each, in one run (issue 7's benchmark).
#
#   berth   `berth run --rm --network none IMAGE true` (release build of the example), image
#           imported and unpacked beforehand, private --root and --runtime-root in a temp dir
#   podman  `podman run --rm --network none --runtime runc --pull never --ulimit nofile=N:N
#           --ulimit nproc=N:N IMAGE true`, private --root/--runroot/--tmpdir, cgroupfs manager,
#           file events (runc: crun 1.8 refuses this host's hybrid cgroups under podman; the
#           --ulimit values are the current hard limits, as root lacks CAP_SYS_RESOURCE here)
#   ctr     `ctr run --rm --runtime io.containerd.runc.v2 IMAGE ID true` against a private
#           containerd 1.6 (own root, state, sockets and config under the temp dir)
#
# Every tool reads the same archive (default ../shared/fixtures/busybox.oci.tar). One warm-up
# run each is untimed; then the contenders are interleaved so each sees the same machine noise,
# with a pause (SETTLE seconds, default 0.5) after every run, untimed, so the asynchronous
# tail of one contender (podman's cleanup process, containerd's shim exit and snapshot GC) is
# not billed to the next. Each line reports the median wall time of
# RUNS runs (default 15).
#
#   bash benches/compare-run.sh [ARCHIVE]
#   BERTH_BIN=path/to/release/examples/berth RUNS=21 bash benches/compare-run.sh
#
# The last lines are the ratios (berth's median over the peer's; below 1 = berth faster):
#   ratio berth/podman X.XX
#   ratio berth/ctr X.XX
# Everything it made — containers, mounts, cgroups, the private containerd, podman's storage —
# is removed on exit, also when a run fails.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
. benches/lib/private-containerd.sh

archive="$(realpath "${1:-../shared/fixtures/busybox.oci.tar}")"
runs="${RUNS:-15}"
image=docker.io/anchors/busybox:latest
die() { echo "compare-run.sh: $*" >&2; exit 1; }
[ -f "$archive" ] || die "no archive at $archive"
[ "$(id -u)" = 0 ] || die "run as root (namespaces, mounts, cgroups, containerd)"
for tool in containerd ctr containerd-shim-runc-v2 podman conmon runc jq; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
runc_bin="$(command -v runc)"

if [ -n "${BERTH_BIN:-}" ]; then # a prebuilt release binary of the example
    berth="$(realpath "$BERTH_BIN")"
else
    cargo build --release --example berth >&2
    berth="$(realpath "${CARGO_TARGET_DIR:-target}/release/examples/berth")"
fi

work="$(mktemp -d /tmp/berth-cmp-run.XXXXXX)"
b_root="$work/berth-root"
b_state="$work/berth-state"
pod="$work/podman"
cd_dir="$work/cd"
sock="$cd_dir/containerd.sock"
ns=berth-bench-run
cd_pid=""
ctr_() { ctr -a "$sock" -n "$ns" "$@"; }
podman_() {
    podman --root "$pod/root" --runroot "$pod/runroot" --tmpdir "$pod/tmp" \
        --cgroup-manager cgroupfs --events-backend file --storage-driver overlay \
        --runtime "$runc_bin" "$@"
}

stop_containerd() {
    if [ -n "$cd_pid" ] && kill -0 "$cd_pid" 2>/dev/null; then
        for c in $(ctr_ containers ls -q 2>/dev/null); do
            ctr_ tasks kill -s KILL "$c" >/dev/null 2>&1
            ctr_ tasks rm -f "$c" >/dev/null 2>&1
            ctr_ containers rm "$c" >/dev/null 2>&1
        done
        for n in $(ctr_ images ls -q 2>/dev/null); do ctr_ images rm --sync "$n" >/dev/null 2>&1; done
        kill -TERM "$cd_pid"
        for _ in $(seq 50); do kill -0 "$cd_pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$cd_pid" 2>/dev/null && kill -KILL "$cd_pid"
        wait "$cd_pid" 2>/dev/null
    fi
    cd_pid=""
}
cleanup() {
    set +e
    if [ -x "$berth" ] && [ -d "$b_root" ]; then
        for id in $("$berth" --root "$b_root" ps -q 2>/dev/null); do
            "$berth" --root "$b_root" rm -f "$id" >/dev/null 2>&1
        done
    fi
    if [ -d "$pod" ]; then
        podman_ rm --all --force --time 0 >/dev/null 2>&1
        podman_ rmi --all --force >/dev/null 2>&1
    fi
    stop_containerd
    # Shims of the private containerd that outlived it, by the pid files in its state dir.
    for f in "$cd_dir"/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
        [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
    done
    # Anything still mounted under the work dir goes before the files (deepest first).
    awk -v p="$work/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m"
    done
    # Empty cgroup parents left by the peers (podman's cgroupfs parent, containerd's namespace).
    for h in /sys/fs/cgroup/*/; do
        for d in "$h$ns" "${h}libpod_parent/conmon" "${h}libpod_parent"; do
            [ -d "$d" ] && rmdir "$d" 2>/dev/null
        done
    done
    rm -rf "$work"
}
trap cleanup EXIT

# --- the image in each store ------------------------------------------------------------------
echo "importing $archive into berth, podman and a private containerd..." >&2
"$berth" --root "$b_root" image import --quiet --name "$image" "$archive" >/dev/null
"$berth" --root "$b_root" image unpack --quiet "$image" >/dev/null

mkdir -p "$pod"
podman_ pull -q "oci-archive:$archive" >/dev/null
podman_ image exists "$image" || die "podman did not name the image $image"

start_private_containerd "$cd_dir" "$sock"
ctr_ images import --snapshotter overlayfs "$archive" >/dev/null
ctr_ images ls -q | grep -qx "$image" || die "containerd did not name the image $image"

# --- the contenders -----------------------------------------------------------------------------
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] && nofile=1048576
[ "$nproc" = unlimited ] && nproc=1048576
[ "$nofile" -gt 4096 ] && nofile=4096
[ "$nproc" -gt 4096 ] && nproc=4096
seq_no=0
run_berth() {
    "$berth" --root "$b_root" run --rm --runtime-root "$b_state" --network none "$image" true
}
run_podman() {
    podman_ run --rm --network none --pull never \
        --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc" "$image" true
}
run_ctr() {
    seq_no=$((seq_no + 1))
    ctr_ run --rm --snapshotter overlayfs --runtime io.containerd.runc.v2 "$image" "bench-$$-$seq_no" true
}

# measure NAME: wall ns of one run of run_NAME appended to $work/t-NAME; fails loudly.
measure() {
    local name=$1 start end
    start=$(date +%s%N)
    if ! "run_$name" </dev/null >"$work/last.log" 2>&1; then
        die "$name run failed: $(tail -n 5 "$work/last.log")"
    fi
    end=$(date +%s%N)
    echo $((end - start)) >>"$work/t-$name"
    settle
}
# Untimed, after every run: the peers finish part of their work after the command returns
# (podman's conmon runs `podman container cleanup`, containerd's shim exits and its GC removes
# the snapshot), so let that settle before the next contender is timed. No `sync` here: a
# system-wide sync leaves the disk busy with everyone's writeback, which then lands on the
# next contender's own fsyncs.
settle() {
    sleep "${SETTLE:-0.5}"
}
median() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "warm-up (untimed), then $runs runs each, $(nproc) CPUs, busybox \`true\`" >&2
for name in berth podman ctr; do
    measure "$name"
    : >"$work/t-$name"
done
for i in $(seq "$runs"); do
    measure berth
    measure podman
    measure ctr
    [ $((i % 5)) = 0 ] && echo "run $i/$runs done" >&2
done

# Nothing may be left by the runs themselves (--rm everywhere).
[ -z "$("$berth" --root "$b_root" ps -q)" ] || die "berth left containers"
[ -z "$(podman_ ps -aq)" ] || die "podman left containers"
[ -z "$(ctr_ containers ls -q)" ] || die "ctr left containers"

b=$(median <"$work/t-berth")
p=$(median <"$work/t-podman")
c=$(median <"$work/t-ctr")
awk -v b="$b" -v p="$p" -v c="$c" 'BEGIN {
    printf "median berth run --rm true    %8.1f ms\n", b / 1e6
    printf "median podman run --rm true   %8.1f ms\n", p / 1e6
    printf "median ctr run --rm true      %8.1f ms\n", c / 1e6
    printf "ratio berth/podman %.2f\n", b / p
    printf "ratio berth/ctr %.2f\n", b / c
}'
