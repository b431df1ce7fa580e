#!/usr/bin/env bash
# Times getting a runnable root filesystem out of the Debian oci-archive (3 gzip layers),
# starting from a fresh root each run:
#
#   berth       `berth image import` + `berth image unpack` (overlay snapshotter; release build)
#   containerd  `ctr images import --snapshotter overlayfs` against a private containerd 1.6
#               (own root, state, sockets and config under a temp dir; stopped at the end);
#               the image is removed with `ctr images rm --sync` between runs (untimed)
#   umoci       `umoci unpack` of the extracted layout
#   raw         `gzip -dc LAYER | tar -x` of the three layers one after another (the serial
#               limit: decompress + extract, no hashing, no safety, no snapshots)
#
# Runs are interleaved so every contender sees the same machine noise; `sync` runs after each
# command, untimed. Each line reports the median wall time of RUNS runs (default 5), plus the
# median CPU time (user+sys; containerd's includes the daemon's), which a busy machine
# distorts less than wall time.
#
#   bash benches/compare-unpack.sh [ARCHIVE [TAG]]
#   TMPDIR=/dev/shm bash benches/compare-unpack.sh    # every root on another file system
#
# The file system matters: on an ext4 that has just freed many inodes (each run deletes the
# previous run's trees), creating files scans past them; berth's snapshotter marks its
# snapshots directory FS_TOPDIR_FL and mostly avoids that, the peers do not. Compare on tmpfs
# (TMPDIR=/dev/shm) too to see the software without that effect.
#   BERTH_BIN=path/to/release/examples/berth RUNS=7 bash benches/compare-unpack.sh
#
# The last three lines are the ratios (berth's median over the peer's; below 1 = berth faster):
#   ratio berth/containerd X.XX
#   ratio berth/umoci X.XX
#   ratio berth/raw X.XX
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib/private-containerd.sh
export PATH="$HOME/.cargo/bin:$PATH"

archive="$(realpath "${1:-../shared/fixtures/debian-gzip.oci.tar}")"
tag="${2:-bookworm}"
runs="${RUNS:-5}"
[ -f "$archive" ] || { echo "no archive at $archive" >&2; exit 1; }
for tool in containerd ctr umoci jq gzip tar; do
    command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root (snapshots, owners, containerd)" >&2; exit 1; }

if [ -n "${BERTH_BIN:-}" ]; then # a prebuilt release binary of the example
    berth="$(realpath "$BERTH_BIN")"
else
    cargo build --release --example berth >&2
    berth="$(realpath "${CARGO_TARGET_DIR:-target}/release/examples/berth")"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/berth-cmp-unpack.XXXXXX")"
cd_dir="$work/cd"
sock="$cd_dir/containerd.sock"
ns=berth-bench
cd_pid=""
ctr_() { ctr -a "$sock" -n "$ns" "$@"; }

stop_containerd() {
    if [ -n "$cd_pid" ] && kill -0 "$cd_pid" 2>/dev/null; then
        ctr_ images ls -q 2>/dev/null | while read -r n; do ctr_ images rm --sync "$n" >/dev/null 2>&1 || true; done
        kill -TERM "$cd_pid"
        for _ in $(seq 50); do kill -0 "$cd_pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$cd_pid" 2>/dev/null && kill -KILL "$cd_pid"
        wait "$cd_pid" 2>/dev/null || true
    fi
    cd_pid=""
}
cleanup() {
    set +e
    stop_containerd
    # Anything still mounted under the work dir (a crashed run) goes before the files.
    awk -v p="$work/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do umount "$m"; done
    rm -rf "$work"
}
trap cleanup EXIT

# --- containerd, private instance -----------------------------------------------------------
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

# --- the layout for umoci and the raw layers --------------------------------------------------
layout="$work/layout"
mkdir -p "$layout"
tar -xf "$archive" -C "$layout"
chmod -R u+w "$layout"
manifest=$(jq -r --arg t "$tag" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' "$layout/index.json")
[ -n "$manifest" ] || { echo "no manifest tagged $tag in $archive" >&2; exit 1; }
blob() { echo "$layout/blobs/${1%%:*}/${1#*:}"; }
mapfile -t layers < <(jq -r '.layers[].digest' "$(blob "$manifest")")
for l in "${layers[@]}"; do
    gzip -t "$(blob "$l")" 2>/dev/null || { echo "layer $l is not gzip; the raw limit needs gzip layers" >&2; exit 1; }
done
raw_layers=""
for l in "${layers[@]}"; do raw_layers="$raw_layers $(blob "$l")"; done

# --- timing -----------------------------------------------------------------------------------
# measure NAME CMD... : wall ns of CMD to $work/t-NAME, its CPU ms (user+sys of the command and
# its children; for containerd plus the daemon's CPU during the command) to $work/c-NAME.
clk_tck=$(getconf CLK_TCK)
cd_cpu() { awk '{ print $14 + $15 }' "/proc/$cd_pid/stat"; }
measure() {
    local name=$1 before=0 start end own
    shift
    [ "$name" = ctr ] && before=$(cd_cpu)
    start=$(date +%s%N)
    if ! /usr/bin/time -f "%U %S" -o "$work/cpu" "$@" >"$work/last.log" 2>&1; then
        echo "FAILED: $* : $(tail -n 3 "$work/last.log")" >&2
        exit 1
    fi
    end=$(date +%s%N)
    echo $((end - start)) >>"$work/t-$name"
    own=$(awk 'END { printf "%d", ($1 + $2) * 1000 }' "$work/cpu")
    [ "$name" = ctr ] && own=$((own + ($(cd_cpu) - before) * 1000 / clk_tck))
    echo "$own" >>"$work/c-$name"
}
median() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

cat "$archive" "$layout"/blobs/*/* >/dev/null # every contender reads from the page cache
echo "archive $archive:$tag, ${#layers[@]} layers, $runs runs each, $(nproc) CPUs" >&2
: >"$work/t-berth"; : >"$work/t-ctr"; : >"$work/t-umoci"; : >"$work/t-raw"
: >"$work/c-berth"; : >"$work/c-ctr"; : >"$work/c-umoci"; : >"$work/c-raw"
for i in $(seq "$runs"); do
    root="$work/berth-root"
    measure berth sh -c "'$berth' --root '$root' image import --quiet --name bench:unpack '$archive' && '$berth' --root '$root' image unpack --quiet bench:unpack"
    sync
    rm -rf "$root"

    measure ctr ctr -a "$sock" -n "$ns" images import --snapshotter overlayfs "$archive"
    sync
    ctr_reset

    measure umoci umoci unpack --image "$layout:$tag" "$work/bundle"
    sync
    rm -rf "$work/bundle"

    mkdir -p "$work/raw"
    measure raw sh -c "for l in $raw_layers; do gzip -dc \"\$l\" | tar -x -C '$work/raw' || exit 1; done"
    sync
    rm -rf "$work/raw"
    echo "run $i/$runs done" >&2
done

b=$(median <"$work/t-berth")
c=$(median <"$work/t-ctr")
u=$(median <"$work/t-umoci")
r=$(median <"$work/t-raw")
awk -v b="$(median <"$work/c-berth")" -v c="$(median <"$work/c-ctr")" \
    -v u="$(median <"$work/c-umoci")" -v r="$(median <"$work/c-raw")" 'BEGIN {
    printf "median CPU (user+sys) berth %.0f ms, containerd+ctr %.0f ms, umoci %.0f ms, raw %.0f ms\n", b, c, u, r
    printf "cpu berth/containerd %.2f, berth/umoci %.2f, berth/raw %.2f\n", b / c, b / u, b / r
}'
awk -v b="$b" -v c="$c" -v u="$u" -v r="$r" 'BEGIN {
    printf "median berth import+unpack   %8.1f ms\n", b / 1e6
    printf "median ctr images import     %8.1f ms\n", c / 1e6
    printf "median umoci unpack          %8.1f ms\n", u / 1e6
    printf "median gzip -dc | tar -x     %8.1f ms\n", r / 1e6
    printf "ratio berth/containerd %.2f\n", b / c
    printf "ratio berth/umoci %.2f\n", b / u
    printf "ratio berth/raw %.2f\n", b / r
}'
