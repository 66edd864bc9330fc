"""The C self-test (cext/selftest.c) built natively at several optimisation levels.

-O3 is where strict-aliasing bugs turn into wrong hashes (reference/scrypt-performance.md §1.3),
-O0 and -O2 catch code that is only right by the optimiser's grace, and a sanitizer build catches
out-of-bounds and undefined behaviour that happens to give the right answer."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, require_peer

from agent import scrypt

CEXT = ROOT / "cext"
WARN = ["-std=c11", "-Wall", "-Wextra", "-Werror"]
LINE = re.compile(r"^backend (\S+) \((\d+) lanes?\): (\d+) vectors OK", re.M)


def core_sources() -> list[str]:
    return [
        str(p) for p in sorted(CEXT.glob("*.c")) if p.name not in ("module.c", "selftest.c")
    ]


def build(out: Path, flags: list[str], selftest: Path = CEXT / "selftest.c") -> Path:
    gcc = require_peer("gcc")
    cmd = [gcc, *WARN, *flags, f"-I{CEXT}", *core_sources(), str(selftest), "-o", str(out)]
    res = subprocess.run([*cmd, "-lpthread"], capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr}"
    return out


def run(exe: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout)


def backends_ok(stdout: str) -> dict[str, int]:
    """backend name -> lanes, from the selftest's per-backend OK lines."""
    return {m[1]: int(m[2]) for m in LINE.finditer(stdout)}


@pytest.fixture(scope="module")
def selftest_o3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("selftest") / "selftest-O3", ["-O3"])


@pytest.mark.parametrize(
    "flags",
    [
        ["-O0"],
        ["-O2"],
        ["-O3"],
        ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
    ],
    ids=["O0", "O2", "O3", "asan-ubsan"],
)
def test_selftest_passes_on_every_backend(tmp_path: Path, flags: list[str]) -> None:
    exe = build(tmp_path / "selftest", flags)
    res = run(exe)
    assert res.returncode == 0, res.stdout + res.stderr
    found = backends_ok(res.stdout)
    # every backend the Python extension offers on this CPU, no more and no fewer
    assert list(found) == scrypt.backends(), res.stdout
    for name, lanes in found.items():
        assert lanes == scrypt.lanes(name)
    counts = {int(m[3]) for m in LINE.finditer(res.stdout)}
    assert len(counts) == 1 and counts.pop() >= 25, res.stdout


def test_list_and_backend_option(selftest_o3: Path) -> None:
    res = run(selftest_o3, "--list")
    assert res.returncode == 0
    rows = [line.split() for line in res.stdout.splitlines()]
    assert [r[0] for r in rows if r[2] == "available"] == scrypt.backends()
    assert rows[-1][:2] == ["portable", "1"]

    res = run(selftest_o3, "--backend", "portable")
    assert res.returncode == 0, res.stderr
    assert list(backends_ok(res.stdout)) == ["portable"]

    res = run(selftest_o3, "--backend", "no-such-backend")
    assert res.returncode == 2
    assert "no-such-backend" in res.stderr


def test_a_wrong_vector_fails(tmp_path: Path) -> None:
    """The selftest must be able to fail: one flipped expected byte gives exit 1 and names it."""
    src = (CEXT / "selftest.c").read_text()
    good = "bc540a1a801df96e493005c71e010e2d387607fbf0fec416fd3c2645aa1ba9d2"
    assert src.count(good) == 1
    bad = tmp_path / "selftest.c"
    bad.write_text(src.replace(good, "bd" + good[2:]))
    exe = build(tmp_path / "selftest", ["-O2"], selftest=bad)
    res = run(exe, "--backend", "portable")
    assert res.returncode == 1
    assert "FAIL [portable" in res.stderr and "bytes(range(80))" in res.stderr
    assert "got bc540a1a" in res.stderr and "want bd540a1a" in res.stderr


def test_hardcoded_vectors_match_the_shared_file(vectors: dict) -> None:
    """selftest.c carries its own copy of the vectors; it must not drift from the JSON."""
    src = (CEXT / "selftest.c").read_text()
    joined = re.sub(r'"\s*\n\s*"', "", src)  # join adjacent string literals
    for v in vectors["rfc7914_scrypt"]:
        assert v["expected"] in joined, v
    for v in vectors["scrypt_header_vectors"]:
        assert f'"{v["header"]}",\n     "{v["pow_hash_raw"]}", 0,' in joined, v["source"]
    for b in vectors["real_blocks"]:
        assert f'"{b["header"]}",\n     "{b["pow_hash"]}", 1,' in joined, b["coin"]
        assert f'"{b["target"]}"' in joined


@pytest.mark.slow
def test_slow_rfc_vector(selftest_o3: Path) -> None:
    """The 1 GiB RFC 7914 vector (N=2**20, r=8) through general scrypt."""
    res = run(selftest_o3, "--backend", "portable", "--slow", timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"^general scrypt RFC 7914 N=1048576 r=8 p=1 \(1 GiB\): OK", res.stdout, re.M)
