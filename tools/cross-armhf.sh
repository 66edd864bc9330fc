#!/usr/bin/env bash
# Cross-checks the C scrypt core on 32-bit ARM (armhf) under qemu user emulation.
#
#   1. builds cext/selftest.c with arm-linux-gnueabihf-gcc, with no global -mfpu=neon so the
#      NEON backend is reached only through its run-time check, and runs it under
#      qemu-arm-static: --backend neon and --backend portable on a NEON CPU, then on a CPU
#      without NEON (where neon must be reported unavailable and portable must still pass);
#   2. builds the agent._scrypt extension for armhf against Debian bookworm's armhf Python 3.11
#      headers, in a private sysroot under .cache/armhf/ (private apt state, `apt-get download`,
#      `dpkg-deb -x`; no change to the system's dpkg or apt), and imports it in Debian's armhf
#      python3.11 under qemu to check the vectors through agent.scrypt;
#   3. runs the agent itself from that copy of the package in the armhf python3.11 (issue 8's ARM
#      acceptance): its runtime dependencies come from Debian's armhf packages (python3-serial,
#      -smbus2, -cryptography) and must import, then
#      `python3.11 -m agent selftest` must pass and `python3.11 -m agent demo --board cpu` (the
#      whole agent on the CPU board against the demo's local pool, ARMHF_DEMO_SECONDS, default 5)
#      must find nonces that the pool accepts, with no HW errors.
#
# usage: tools/cross-armhf.sh [--no-python | --no-selftest]
# Prints one "OK: ..." line per passed step; exits non-zero on the first failure. A failure to
# fetch the armhf sysroot (no network) is reported as "FAIL: sysroot: ...".
# Environment: ARMHF_CACHE (default <repo>/.cache/armhf), QEMU_ARM (default qemu-arm-static),
# CROSS_CC (default arm-linux-gnueabihf-gcc), DEBIAN_MIRROR (default http://deb.debian.org).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${ARMHF_CACHE:-$ROOT/.cache/armhf}
QEMU=${QEMU_ARM:-qemu-arm-static}
CC=${CROSS_CC:-arm-linux-gnueabihf-gcc}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org}
CFLAGS=(-std=c11 -O3 -Wall -Wextra -Werror)
# cortex-a8 has NEON; cortex-r5f is ARMv7 with VFPv3-D16 and no NEON, so it runs Debian armhf
# binaries but reports no HWCAP_NEON (qemu offers no non-NEON ARMv7-A CPU).
NEON_CPU=cortex-a8
PLAIN_CPU=cortex-r5f

with_selftest=1
with_python=1
for arg in "$@"; do
    case $arg in
        --no-python) with_python=0 ;;
        --no-selftest) with_selftest=0 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "usage: $0 [--no-python | --no-selftest]" >&2
            exit 2
            ;;
    esac
done

step() { printf '== %s\n' "$*"; }
ok() { printf 'OK: %s\n' "$*"; }
die() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is not installed (bash .ci/run installs it)"; }
# seconds since the script started, to one decimal
T0=$(date +%s%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f s", (b - a) / 1e9 }'; }

need "$CC"
need "$QEMU"

# The cross libc root: where libc6-armhf-cross put the armhf dynamic loader.
XROOT=""
if command -v dpkg >/dev/null 2>&1; then
    loader=$(dpkg -L libc6-armhf-cross 2>/dev/null | grep -m1 '/lib/ld-linux-armhf\.so\.3$' || true)
    [[ -n $loader ]] && XROOT=$(dirname "$(dirname "$loader")")
fi
[[ -z $XROOT && -e /usr/arm-linux-gnueabihf/lib/ld-linux-armhf.so.3 ]] && XROOT=/usr/arm-linux-gnueabihf
[[ -n $XROOT ]] || die "no armhf C library found (install libc6-armhf-cross, pulled in by gcc-arm-linux-gnueabihf)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cross-armhf.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

CORE=()
for f in "$ROOT"/cext/*.c; do
    case ${f##*/} in
        module.c | selftest.c) ;;
        *) CORE+=("$f") ;;
    esac
done

# ---------------------------------------------------------------- 1. the C self-test
selftest_steps() {
    step "cross-compile cext/selftest.c for armhf ($CC ${CFLAGS[*]})"
    "$CC" "${CFLAGS[@]}" -I"$ROOT/cext" "${CORE[@]}" "$ROOT/cext/selftest.c" -o "$WORK/selftest" -lpthread \
        || die "cross-compiling the selftest"
    ok "selftest built for armhf ($(elapsed))"

    # NEON (q-register) instructions may appear only in the NEON kernels: anywhere else they would
    # crash a CPU without NEON before the run-time check could steer around them.
    step "check that NEON instructions appear only in the *_neon kernels"
    objdump=${CC%gcc}objdump
    need "$objdump"
    stray=$("$objdump" -d "$WORK/selftest" | awk '
        /^[0-9a-f]+ <.*>:$/ { fn = substr($2, 2, length($2) - 3) }
        /\tv[a-z0-9.]+\t.*[ ,{]q[0-9]+/ { n[fn]++ }
        END { for (f in n) print f, n[f] }')
    grep -qx 'romix_lanes_neon [0-9]*' <<<"$stray" || die "romix_lanes_neon has no NEON instructions"
    others=$(grep -v -e '_neon ' <<<"$stray" || true)
    [[ -z $others ]] || die "NEON instructions outside the NEON kernels: $others"
    ok "NEON code confined to: $(awk '{ printf "%s%s", sep, $1; sep = ", " }' <<<"$stray")"

    run_arm() { # cpu, args...
        local cpu=$1
        shift
        "$QEMU" -cpu "$cpu" -L "$XROOT" "$WORK/selftest" "$@"
    }

    for be in neon portable; do
        step "selftest --backend $be under qemu -cpu $NEON_CPU"
        out=$(run_arm "$NEON_CPU" --backend "$be") || die "selftest --backend $be failed on $NEON_CPU: $out"
        grep -q "^backend $be (.*): [0-9]* vectors OK" <<<"$out" || die "unexpected selftest output: $out"
        ok "selftest $be: $out ($(elapsed))"
    done

    step "selftest on a CPU without NEON (qemu -cpu $PLAIN_CPU)"
    list=$(run_arm "$PLAIN_CPU" --list) || die "selftest --list failed on $PLAIN_CPU"
    grep -qx 'neon 4 unavailable' <<<"$list" || die "neon not reported unavailable on $PLAIN_CPU: $list"
    rc=0
    run_arm "$PLAIN_CPU" --backend neon >/dev/null 2>&1 || rc=$?
    [[ $rc -eq 2 ]] || die "selftest --backend neon on $PLAIN_CPU exited $rc, want 2 (unavailable)"
    out=$(run_arm "$PLAIN_CPU") || die "selftest failed on $PLAIN_CPU: $out"
    [[ $out == "backend portable ("*"vectors OK"* && $(wc -l <<<"$out") -eq 1 ]] \
        || die "want only the portable backend on $PLAIN_CPU, got: $out"
    ok "selftest without NEON: neon unavailable, $out ($(elapsed))"
}

if [[ $with_selftest -eq 1 ]]; then
    selftest_steps
fi
if [[ $with_python -eq 0 ]]; then
    ok "armhf steps passed (Python extension skipped: --no-python) ($(elapsed))"
    exit 0
fi

# ---------------------------------------------------------------- 2. the Python extension
# Debian bookworm's armhf python3.11, its headers and what the interpreter links against.
PKGS=(libpython3.11-dev python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
    libpython3.11 libc6 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5 libuuid1 libtinfo6
    libncursesw6 libreadline8 libsqlite3-0 libcrypt1 libgcc-s1 libnsl2 libtirpc3 libdb5.3
    python3-serial python3-smbus2 python3-cryptography python3-cffi-backend)
SYSROOT=$CACHE/root
STAMP="bookworm armhf ${PKGS[*]}"

mkdir -p "$CACHE"
# one builder at a time: a test run and a manual run may share the cache
exec 9>"$CACHE/lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

if [[ -f $SYSROOT/.stamp && $(<"$SYSROOT/.stamp") == "$STAMP" ]]; then
    ok "armhf sysroot cached in $SYSROOT"
else
    step "fetch Debian bookworm armhf Python 3.11 into $SYSROOT (private apt state)"
    need apt-get
    need dpkg-deb
    APT=$CACHE/apt
    rm -rf "$APT" "$SYSROOT" "$SYSROOT.new"
    mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/etc/sources.list.d" \
        "$APT/etc/preferences.d" "$APT/debs"
    touch "$APT/status"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [[ -r $keyring ]] || die "$keyring is missing (install debian-archive-keyring)"
    cat >"$APT/etc/sources.list" <<EOF
deb [arch=armhf signed-by=$keyring] $MIRROR/debian bookworm main
deb [arch=armhf signed-by=$keyring] $MIRROR/debian bookworm-updates main
deb [arch=armhf signed-by=$keyring] $MIRROR/debian-security bookworm-security main
EOF
    # Everything apt reads or writes is under $APT: the host's sources, dpkg database and
    # architecture list are neither used nor touched. NoLocking lets a non-root user run it.
    A=(-q -o "APT::Architecture=armhf" -o "APT::Architectures::=armhf"
        -o "Dir::Etc::SourceList=$APT/etc/sources.list"
        -o "Dir::Etc::SourceParts=$APT/etc/sources.list.d"
        -o "Dir::Etc::Preferences=$APT/etc/preferences"
        -o "Dir::Etc::PreferencesParts=$APT/etc/preferences.d"
        -o "Dir::State=$APT" -o "Dir::State::Lists=$APT/lists"
        -o "Dir::State::status=$APT/status" -o "Dir::Cache=$APT/cache"
        -o "Debug::NoLocking=true" -o "APT::Sandbox::User=root")
    apt-get "${A[@]}" update >"$WORK/apt-update.log" 2>&1 \
        || die "sysroot: apt-get update (armhf, private state) failed: $(tail -5 "$WORK/apt-update.log")"
    (cd "$APT/debs" && apt-get "${A[@]}" download "${PKGS[@]}") >"$WORK/apt-download.log" 2>&1 \
        || die "sysroot: apt-get download failed: $(tail -5 "$WORK/apt-download.log")"
    mkdir -p "$SYSROOT.new"
    for deb in "$APT"/debs/*.deb; do
        dpkg-deb -x "$deb" "$SYSROOT.new" || die "unpacking $deb"
    done
    printf '%s\n' "$STAMP" >"$SYSROOT.new/.stamp"
    mv "$SYSROOT.new" "$SYSROOT"
    ok "armhf sysroot: $(find "$APT/debs" -name '*.deb' | wc -l) packages, $(du -sh "$SYSROOT" | cut -f1) ($(elapsed))"
fi
exec 9>&-

PYINC=$SYSROOT/usr/include/python3.11
[[ -f $PYINC/Python.h && -x $SYSROOT/usr/bin/python3.11 ]] || die "sysroot lacks Python.h or python3.11"

step "cross-compile agent._scrypt for armhf"
PKG=$WORK/pkg
mkdir -p "$PKG"
# a copy of the package without the host's compiled extension
(cd "$ROOT" && find agent -name '__pycache__' -prune -o -name '*.so' -prune -o -type f -print0) \
    | (cd "$ROOT" && xargs -0 cp --parents -t "$PKG")
SO=$PKG/agent/_scrypt.cpython-311-arm-linux-gnueabihf.so
# The sysroot's /usr/include goes after the cross toolchain's own headers (-idirafter): it is
# there only for the multiarch pyconfig.h that Python.h includes.
"$CC" "${CFLAGS[@]}" -fvisibility=hidden -fPIC -shared -I"$ROOT/cext" -I"$PYINC" \
    -idirafter "$SYSROOT/usr/include" "${CORE[@]}" "$ROOT/cext/module.c" -o "$SO" -lpthread \
    || die "cross-compiling the extension"
ok "built ${SO##*/} ($(elapsed))"

cat >"$WORK/check.py" <<'EOF'
"""Runs inside armhf python3.11 under qemu: the vectors through agent.scrypt on every backend."""
import json
import platform
import sys

from agent import scrypt

vec = json.load(open(sys.argv[1]))
want_backends = sys.argv[2].split(",")
assert platform.machine() == "armv7l", platform.machine()
assert scrypt.__file__.startswith(sys.argv[3]), scrypt.__file__
assert scrypt.backends() == want_backends, (scrypt.backends(), want_backends)
rfc = vec["rfc7914_scrypt"][0]
headers = [(bytes.fromhex(v["header"]), bytes.fromhex(v["pow_hash_raw"]))
           for v in vec["scrypt_header_vectors"]]
headers += [(bytes.fromhex(b["header"]), bytes.fromhex(b["pow_hash"])[::-1])
            for b in vec["real_blocks"]]
for name in scrypt.backends():
    scrypt.set_backend(name)
    got = scrypt.scrypt(rfc["password"].encode(), rfc["salt"].encode(), rfc["N"], rfc["r"],
                        rfc["p"], rfc["dklen"])
    assert got.hex() == rfc["expected"], (name, "rfc", got.hex())
    for hdr, raw in headers:
        assert scrypt.pow_hash(hdr) == raw, (name, hdr.hex(), scrypt.pow_hash(hdr).hex())
        nonce = int.from_bytes(hdr[76:], "little")
        count = scrypt.lanes() + 1  # a partial last batch
        hits = scrypt.scan(hdr, nonce, count, scrypt.MAX_TARGET)
        assert [n for n, _ in hits] == [(nonce + i) % 2**32 for i in range(count)], (name, hits)
        assert hits[0][1] == raw, (name, "scan", hits[0][1].hex())
    lanes = scrypt.lanes()
    print(f"python {platform.python_version()} {platform.machine()}: agent.scrypt {name} "
          f"({lanes} lane{'' if lanes == 1 else 's'}): {1 + 2 * len(headers)} vectors OK")
EOF

run_py() { # cpu, expected backends
    (cd "$WORK" && env -u PYTHONHOME PYTHONPATH="$PKG" PYTHONDONTWRITEBYTECODE=1 \
        "$QEMU" -cpu "$1" -L "$SYSROOT" "$SYSROOT/usr/bin/python3.11" check.py \
        "$ROOT/tests/data/scrypt-pow.json" "$2" "$PKG")
}

step "import agent._scrypt in Debian's armhf python3.11 under qemu -cpu $NEON_CPU"
out=$(run_py "$NEON_CPU" neon,portable 2>&1) || die "armhf Python check failed: $out"
printf '%s\n' "$out"
ok "python extension on $NEON_CPU: neon and portable match the vectors ($(elapsed))"

step "import agent._scrypt under qemu -cpu $PLAIN_CPU (no NEON)"
out=$(run_py "$PLAIN_CPU" portable 2>&1) || die "armhf Python check without NEON failed: $out"
printf '%s\n' "$out"
ok "python extension on $PLAIN_CPU: only portable, matches the vectors ($(elapsed))"

# ---------------------------------------------------------------- 3. the agent on armhf
step "pack the armhf wheel and install it with Debian's armhf python3.11"
# setuptools cannot cross-compile the extension: the tree built above is packed as it is, with
# the metadata of setup.cfg, and installed by extracting it (what an installer does) into a
# site folder that the armhf interpreter gets as its PYTHONPATH
mkdir -p "$PKG/board" && cp -r "$ROOT/board/profiles" "$PKG/board/"
WHEEL=$("${HOST_PYTHON:-python3}" "$ROOT/tools/pack_wheel.py" "$PKG" "$WORK/dist" \
    cp311-cp311-linux_armv7l) || die "packing the armhf wheel"
SITE=$WORK/site
rm -rf "$SITE"
(cd "$WORK" && env -u PYTHONHOME "$QEMU" -cpu "$NEON_CPU" -L "$SYSROOT" \
    "$SYSROOT/usr/bin/python3.11" -m zipfile -e "$WHEEL" "$SITE") \
    || die "installing ${WHEEL##*/} with armhf python3.11"
[[ -f $SITE/agent/${SO##*/} ]] || die "the installed wheel lacks ${SO##*/}"
ok "installed ${WHEEL##*/} ($(elapsed))"

agent_arm() { # args of `python3.11 -m agent`, on the NEON CPU, from the installed wheel
    (cd "$WORK" && env -u PYTHONHOME PYTHONPATH="$SITE" PYTHONDONTWRITEBYTECODE=1 \
        "$QEMU" -cpu "$NEON_CPU" -L "$SYSROOT" "$SYSROOT/usr/bin/python3.11" "$@")
}

step "the agent's runtime dependencies import in armhf python3.11 (Debian's armhf packages)"
out=$(agent_arm -c '
import importlib.metadata as md
import cryptography.fernet, serial, smbus2
from agent.security import secrets
secrets.SecretBox  # the Fernet box the agent keeps secrets in
names = ("pyserial", "smbus2", "cryptography")
print(", ".join(f"{n} {md.version(n)}" for n in names))
' 2>&1) || die "armhf runtime dependencies: $out"
ok "runtime dependencies on armhf: $out ($(elapsed))"

step "python3.11 -m agent selftest under qemu -cpu $NEON_CPU"
out=$(agent_arm -m agent selftest 2>&1) || die "agent selftest failed on armhf: $out"
printf '%s\n' "$out"
grep -qx 'selftest: passed' <<<"$out" || die "agent selftest did not report a pass: $out"
ok "agent selftest on armhf: passed ($(grep -c ': ok (' <<<"$out") groups of checks) ($(elapsed))"

DEMO_S=${ARMHF_DEMO_SECONDS:-5}
step "python3.11 -m agent demo --board cpu --seconds $DEMO_S under qemu -cpu $NEON_CPU"
# the whole agent (service, Stratum client, web and cgminer APIs) on the CPU board, mining
# against the demo's local pool on loopback
out=$(agent_arm -m agent demo --board cpu --seconds "$DEMO_S" 2>&1) \
    || die "agent demo --board cpu failed on armhf: $out"
printf '%s\n' "$out"
found=$(sed -n 's/^stopped: \([0-9]*\) nonces, \([0-9]*\) shares accepted.*, \([0-9]*\) HW errors$/\1 \2 \3/p' <<<"$out")
read -r n_nonces n_accepted n_hw <<<"${found:-0 0 1}"
[[ $n_nonces -gt 0 && $n_accepted -gt 0 && $n_hw -eq 0 ]] \
    || die "agent demo on armhf: want nonces, accepted shares and no HW errors: $out"
ok "agent demo on armhf: CPU board found $n_nonces nonces, $n_accepted shares accepted, 0 HW errors ($(elapsed))"
ok "armhf steps passed ($(elapsed))"
