#!/usr/bin/env bash
# Times `berth image import` of the Debian oci-archive into a fresh store against two peers on
# the same file: `sha256sum` (reading and hashing it, coreutils without SHA extensions) and
# `skopeo copy oci-archive:… oci:DIR` (a real importer). Runs are interleaved so the peers
# share the machine's noise; each reports the median wall time of RUNS runs (default 7).
#
#   bash benches/compare-import.sh [ARCHIVE]
#
# The last two lines are the ratios (berth's median over the peer's; below 1 = berth faster):
#   ratio berth/sha256sum X.XX
#   ratio berth/skopeo X.XX
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

archive="${1:-../shared/fixtures/debian-gzip.oci.tar}"
runs="${RUNS:-7}"
[ -f "$archive" ] || { echo "no archive at $archive" >&2; exit 1; }
command -v skopeo >/dev/null || { echo "skopeo is not installed (apt-get install skopeo)" >&2; exit 1; }

cargo build --release --example berth >&2
target_dir="${CARGO_TARGET_DIR:-target}"
berth="$target_dir/release/examples/berth"

work="$(mktemp -d /tmp/berth-compare.XXXXXX)"
trap 'rm -rf "$work"' EXIT

# Appends the wall time (ns) of the command to $work/<name> and its CPU time (user + sys,
# ms) to $work/<name>.cpu.
measure() {
    local name=$1 start end
    shift
    start=$(date +%s%N)
    /usr/bin/time -f "%U %S" -o "$work/time.out" "$@" >/dev/null 2>&1
    end=$(date +%s%N)
    echo $((end - start)) >>"$work/$name"
    awk '{ printf "%d\n", ($1 + $2) * 1000 }' "$work/time.out" >>"$work/$name.cpu"
}

median() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

cat "$archive" >/dev/null # the page cache holds the file for every contender alike
size=$(stat -c %s "$archive")
echo "archive $archive ($size bytes), $runs runs each, $(nproc) CPUs" >&2

: >"$work/berth" ; : >"$work/sha" ; : >"$work/skopeo"
: >"$work/berth.cpu" ; : >"$work/sha.cpu" ; : >"$work/skopeo.cpu"
for i in $(seq "$runs"); do
    rm -rf "$work/root" "$work/skopeo-dir"
    sync
    measure berth "$berth" --root "$work/root" image import --quiet "$archive"
    measure sha sha256sum "$archive"
    measure skopeo skopeo copy --quiet "oci-archive:$archive" "oci:$work/skopeo-dir:bench"
done

b=$(median <"$work/berth")
s=$(median <"$work/sha")
k=$(median <"$work/skopeo")
bc=$(median <"$work/berth.cpu")
sc=$(median <"$work/sha.cpu")
kc=$(median <"$work/skopeo.cpu")
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v b="$b" -v s="$s" -v k="$k" -v bc="$bc" -v sc="$sc" -v kc="$kc" -v size="$size" 'BEGIN {
    printf "median berth import  %8.1f ms wall (%5.0f MB/s), %5d ms CPU\n", b / 1e6, size / (b / 1e9) / 1e6, bc
    printf "median sha256sum     %8.1f ms wall (%5.0f MB/s), %5d ms CPU\n", s / 1e6, size / (s / 1e9) / 1e6, sc
    printf "median skopeo copy   %8.1f ms wall (%5.0f MB/s), %5d ms CPU\n", k / 1e6, size / (k / 1e9) / 1e6, kc
    printf "ratio berth/sha256sum %.2f\n", b / s
    printf "ratio berth/skopeo %.2f\n", b / k
}'
