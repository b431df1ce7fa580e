#!/usr/bin/env bash
# build-dist.sh [EXAMPLE...]: the shipping build of berth's front ends — static, lean binaries
# that need nothing on the target machine (default: run-bundle berth-runc).
#
# How, and why (each measured with benches/compare-lifecycle.sh, peak RSS of `run-bundle`):
# - the `dist` profile (Cargo.toml): fat LTO, one codegen unit, panic=abort. Less code, laid out
#   closer together, so fewer 64 KiB fault-around windows of text get mapped (4.6 → 3.8 MB).
# - static-pie with glibc (`crt-static`) and a static libseccomp: no ld.so, no libc.so mapped
#   whole-page-by-page, no symbol lookups at start-up. It stays position-independent, so ASLR
#   still applies to the binary (runc ships static for the same self-containment).
# - RELR packed relative relocations (`-z pack-relative-relocs`, binutils ≥ 2.38, glibc ≥ 2.36):
#   the 350 KB `.rela.dyn` table a static-pie would read at start-up shrinks to ~3 KB.
# - hot functions first: each binary is run on a busybox bundle (scripts/dist/profile-config.json)
#   under scripts/dist/trace-hot-functions.py, which lists the functions it runs; the binary is
#   then linked again with that list as lld's --symbol-ordering-file. The text a container's
#   life touches then sits in a few dense 64 KiB fault-around windows instead of being spread
#   over the whole binary (berth-runc create: 4.2 → 2.1 MB). Needs root (the profile run makes
#   containers) and /bin/busybox; without them the binaries are built unordered (a note says so).
# Together, peak RSS of the creating process: run-bundle 4.6 → 1.5 MB, berth-runc create 4.2 →
# 2.1 MB (crun create: 3.3 MB; before ordering run-bundle was at 2.9 MB).
# The linker is rustc's bundled lld (the default on x86_64 Linux since Rust 1.90); with another
# linker, the ordering step is skipped with a note.
#
# Output: one line per example, the path of its binary:
#   target/<host triple>/dist/examples/<name>
# Honours CARGO_TARGET_DIR. Needs gcc, glibc's static libc (libc6-dev) and libseccomp.a
# (libseccomp-dev); scripts/setup.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

die() { echo "build-dist.sh: $*" >&2; exit 1; }

examples=("$@")
[ "${#examples[@]}" -gt 0 ] || examples=(run-bundle berth-runc)

triple=$(rustc -vV | sed -n 's/^host: //p')
[ -n "$triple" ] || die "cannot tell rustc's host triple"
multiarch=$(gcc -print-multiarch 2>/dev/null || true)
libdir=/usr/lib/${multiarch:-$(uname -m)-linux-gnu}
[ -f "$libdir/libseccomp.a" ] || die "$libdir/libseccomp.a missing (apt-get install libseccomp-dev)"
[ -f "$libdir/libc.a" ] || die "$libdir/libc.a missing (apt-get install libc6-dev)"

# RELR needs a linker that knows it; without it the binary is still static, only larger.
flags="-C target-feature=+crt-static"
if ld --help 2>/dev/null | grep -q 'pack-relative-relocs'; then
    flags="$flags -C link-arg=-Wl,-z,pack-relative-relocs"
else
    echo "build-dist.sh: the linker lacks -z pack-relative-relocs; building without RELR" >&2
fi

# --target keeps RUSTFLAGS off build scripts and proc-macros (they stay dynamic host code),
# and keeps these artifacts apart from the ordinary target/release ones.
args=()
for e in "${examples[@]}"; do args+=(--example "$e"); done
RUSTFLAGS="$flags" LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH="$libdir" \
    cargo build -q --profile dist --target "$triple" "${args[@]}" >&2

out=${CARGO_TARGET_DIR:-target}/$triple/dist/examples
for e in "${examples[@]}"; do
    [ -x "$out/$e" ] || die "$out/$e was not built"
done

# The profile workload of each front end: what its users run, on a busybox bundle.
workload() { # EXAMPLE BIN ROOT BUNDLE ID -> the commands, separated by ---
    local e=$1 bin=$2 root=$3 bundle=$4 id=$5
    case $e in
    run-bundle) echo "$bin --root $root --id $id $bundle" ;;
    berth-runc) echo "$bin --root $root create --bundle $bundle $id --- $bin --root $root state $id" \
        "--- $bin --root $root start $id --- $bin --root $root run --bundle $bundle $id-run" \
        "--- $bin --root $root delete --force $id" ;;
    esac
}

why_unordered=
[ "$(id -u)" -eq 0 ] || why_unordered="not root"
[ -x /bin/busybox ] || why_unordered="no /bin/busybox (busybox-static)"
command -v python3 >/dev/null || why_unordered="no python3"
for e in "${examples[@]}"; do
    readelf -p .comment "$out/$e" 2>/dev/null | grep -q 'Linker: LLD' \
        || why_unordered="$e was not linked by lld (--symbol-ordering-file is lld's)"
done
if [ -n "$why_unordered" ]; then
    echo "build-dist.sh: functions left unordered ($why_unordered): the binaries work, with a larger RSS" >&2
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/berth-dist-profile.XXXXXX")
    # A profile run that failed half-way may leave containers (state, cgroups) in its roots:
    # berth-runc, when built, deletes them (run-bundle's roots hold the same library state).
    cleanup_profile() {
        local runc=$out/berth-runc root id
        if [ -x "$runc" ]; then
            for root in "$work"/root-*; do
                [ -d "$root" ] || continue
                for id in $("$runc" --root "$root" list -q 2>/dev/null); do
                    "$runc" --root "$root" delete --force "$id" >/dev/null 2>&1 \
                        || echo "build-dist.sh: could not delete profile container $id under $root" >&2
                done
            done
        fi
        rm -rf "$work"
    }
    trap cleanup_profile EXIT
    mkdir -p "$work/bundle/rootfs/"{bin,proc,sys,dev,tmp,etc}
    cp /bin/busybox "$work/bundle/rootfs/bin/busybox"
    ln -s busybox "$work/bundle/rootfs/bin/true"
    cp scripts/dist/profile-config.json "$work/bundle/config.json"
    for e in "${examples[@]}"; do
        cmds=$(workload "$e" "$(realpath "$out/$e")" "$work/root-$e" "$work/bundle" "berth-dist-$$-$e")
        [ -n "$cmds" ] || continue
        # shellcheck disable=SC2086 # the workload is words on purpose
        python3 scripts/dist/trace-hot-functions.py --binary "$out/$e" --out "$work/$e.order" \
            -- $cmds >/dev/null || die "the profile run of $e failed"
        RUSTFLAGS="$flags" LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH="$libdir" \
            cargo rustc -q --profile dist --target "$triple" --example "$e" -- \
            -C link-arg=-Wl,--symbol-ordering-file="$work/$e.order" \
            -C link-arg=-Wl,--no-warn-symbol-ordering >&2
    done
fi

for e in "${examples[@]}"; do
    realpath "$out/$e"
done
