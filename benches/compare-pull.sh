#!/usr/bin/env bash
# Times pulling the Debian image (3 gzip layers) from a private local registry
# (Debian's docker-registry, distribution 2.8, on 127.0.0.1 with its own storage and config),
# starting from a fresh store each run:
#
#   pull + unpack
#     berth       `berth image pull --plain-http` (overlay snapshotter; release build)
#     containerd  `ctr images pull --plain-http` against a private containerd 1.6 (own root,
#                 state, sockets and config under a temp dir; stopped at the end); the image is
#                 removed with `ctr images rm --sync` between runs (untimed)
#   pull alone
#     berth       `berth image pull --plain-http --no-unpack`
#     skopeo      `skopeo copy docker://… oci:DIR`
#
# Runs are interleaved so every contender sees the same machine noise; `sync` runs after each
# command, untimed. Each line reports the median wall time of RUNS runs (default 5).
#
# The filesystem matters: every run removes the previous run's tree, and ext4 without a journal
# (this machine's root) skips inodes freed in the last minute one by one when allocating in a
# block group, so unpacking thousands of files next to a fresh removal is mostly inode-bitmap
# scanning (`perf`: find_inode_bit/recently_deleted under ext4_create). berth's snapshotter
# marks its snapshots directory FS_TOPDIR_FL so each snapshot starts in a block group of its
# own (pull+unpack 4.4 s -> 0.7 s here); containerd's overlayfs snapshotter does not. On a
# journalled ext4 (a loop-mounted one, TMPDIR=that mount) the scan is not done, containerd
# gets faster and the ratio was 0.34 instead of 0.15.
#
#   bash benches/compare-pull.sh [ARCHIVE [TAG]]
#   BERTH_BIN=path/to/release/examples/berth RUNS=7 bash benches/compare-pull.sh
#   TMPDIR=/mnt/other-fs bash benches/compare-pull.sh   # the work tree on another filesystem
#
# The last two lines are the ratios (berth's median over the peer's; below 1 = berth faster):
#   ratio berth/containerd X.XX
#   ratio berth/skopeo X.XX
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib/private-containerd.sh
export PATH="$HOME/.cargo/bin:$PATH"

archive="$(realpath "${1:-../shared/fixtures/debian-gzip.oci.tar}")"
tag="${2:-bookworm}"
runs="${RUNS:-5}"
[ -f "$archive" ] || { echo "no archive at $archive" >&2; exit 1; }
for tool in containerd ctr skopeo docker-registry; do
    command -v "$tool" >/dev/null || { echo "$tool is not installed (apt-get install containerd skopeo docker-registry)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root (snapshots, owners, containerd)" >&2; exit 1; }

if [ -n "${BERTH_BIN:-}" ]; then # a prebuilt release binary of the example
    berth="$(realpath "$BERTH_BIN")"
else
    cargo build --release --example berth >&2
    berth="$(realpath "${CARGO_TARGET_DIR:-target}/release/examples/berth")"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/berth-cmp-pull.XXXXXX")"
cd_dir="$work/cd"
sock="$cd_dir/containerd.sock"
ns=berth-bench
cd_pid=""
reg_pid=""
ctr_() { ctr -a "$sock" -n "$ns" "$@"; }

stop_pid() { # PID : TERM, wait, KILL
    local p="$1"
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
        kill -TERM "$p"
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$p" 2>/dev/null && kill -KILL "$p"
        wait "$p" 2>/dev/null || true
    fi
}
stop_containerd() {
    if [ -n "$cd_pid" ] && kill -0 "$cd_pid" 2>/dev/null; then
        ctr_ images ls -q 2>/dev/null | while read -r n; do ctr_ images rm --sync "$n" >/dev/null 2>&1 || true; done
    fi
    stop_pid "$cd_pid"
    cd_pid=""
}
cleanup() {
    set +e
    stop_containerd
    stop_pid "$reg_pid"
    awk -v p="$work/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do umount "$m"; done
    rm -rf "$work"
}
trap cleanup EXIT

# --- the registry, private instance -----------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/registry/data"
cat >"$work/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry/data
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
reg_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$port/v2/" >/dev/null || { echo "registry did not start: $(tail -n 5 "$work/registry/log")" >&2; exit 1; }
ref="127.0.0.1:$port/bench/debian:$tag"
skopeo copy -q --dest-tls-verify=false "oci-archive:$archive:$tag" "docker://$ref"

# --- containerd, private instance -------------------------------------------------------------
start_private_containerd "$cd_dir" "$sock"
cd_snapshots="$cd_dir/root/io.containerd.snapshotter.v1.overlayfs/snapshots"
ctr_reset() {
    ctr_ images ls -q | while read -r n; do ctr_ images rm --sync "$n" >/dev/null 2>&1 || true; done
    local i=0
    while [ -d "$cd_snapshots" ] && [ "$(ls "$cd_snapshots" | wc -l)" -gt 0 ] && [ $i -lt 300 ]; do
        sleep 0.1; i=$((i + 1))
    done
    [ "$(ctr_ content ls -q | wc -l)" = 0 ] || { echo "containerd reset left content behind" >&2; exit 1; }
}

# --- timing -----------------------------------------------------------------------------------
elapsed() { # nanoseconds taken by the command given; its output goes to $work/last.log
    local start end
    start=$(date +%s%N)
    if ! "$@" >"$work/last.log" 2>&1; then
        echo "FAILED: $* : $(tail -n 3 "$work/last.log")" >&2
        exit 1
    fi
    end=$(date +%s%N)
    echo $((end - start))
}
median() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

find "$work/registry/data" -type f -exec cat {} + >/dev/null # registry blobs in the page cache
echo "registry $ref, $runs runs each, $(nproc) CPUs" >&2
: >"$work/t-berth"; : >"$work/t-ctr"; : >"$work/t-berth-pull"; : >"$work/t-skopeo"
for i in $(seq "$runs"); do
    root="$work/berth-root"
    elapsed "$berth" --root "$root" image pull --quiet --plain-http "$ref" >>"$work/t-berth"
    sync
    rm -rf "$root"

    elapsed ctr_ images pull --plain-http --snapshotter overlayfs "$ref" >>"$work/t-ctr"
    sync
    ctr_reset

    elapsed "$berth" --root "$root" image pull --quiet --plain-http --no-unpack "$ref" >>"$work/t-berth-pull"
    sync
    rm -rf "$root"

    elapsed skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$work/skopeo:$tag" >>"$work/t-skopeo"
    sync
    rm -rf "$work/skopeo"
    echo "run $i/$runs done" >&2
done

b=$(median <"$work/t-berth")
c=$(median <"$work/t-ctr")
bp=$(median <"$work/t-berth-pull")
s=$(median <"$work/t-skopeo")
awk -v b="$b" -v c="$c" -v bp="$bp" -v s="$s" 'BEGIN {
    printf "median berth pull+unpack        %8.1f ms\n", b / 1e6
    printf "median ctr images pull          %8.1f ms\n", c / 1e6
    printf "median berth pull --no-unpack   %8.1f ms\n", bp / 1e6
    printf "median skopeo copy to oci:      %8.1f ms\n", s / 1e6
    printf "ratio berth/containerd %.2f\n", b / c
    printf "ratio berth/skopeo %.2f\n", bp / s
}'
