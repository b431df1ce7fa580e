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
# Together: run-bundle's peak RSS 4.6 MB → 2.9 MB (crun create: 3.3 MB).
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
    realpath "$out/$e"
done
