"""The doge-agent command: selftest, config check, demo, run, bench dispatch, exit codes."""

from __future__ import annotations

import copy
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent import cli, scrypt, selftest

ROOT = Path(__file__).resolve().parent.parent


def call(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(list(argv), out=out)
    return code, out.getvalue()


def agent_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOGE_AGENT")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_selftest_passes_and_names_every_backend() -> None:
    code, out = call("selftest")
    assert code == 0, out
    for name in scrypt.backends():
        assert re.search(rf"^{name} \(\d+ lanes?\): ok", out, re.M), out
    assert "scrypt RFC 7914: ok" in out
    assert out.rstrip().endswith("selftest: passed")


def test_selftest_as_a_command() -> None:
    argv = [sys.executable, "-m", "agent", "selftest"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=agent_env(), timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "portable" in proc.stdout


def test_a_corrupted_vector_fails_the_selftest(monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = copy.deepcopy(selftest.load_vectors())
    raw = bytearray.fromhex(vectors["headers"][1]["pow_hash_raw"])
    raw[31] ^= 1
    vectors["headers"][1]["pow_hash_raw"] = raw.hex()
    out = io.StringIO()
    assert selftest.run(out, vectors=vectors) == 1
    lines = out.getvalue().splitlines()
    assert all("FAIL" in line and "headers[1]" in line for line in lines[: len(scrypt.backends())])
    assert lines[-1] == "selftest: FAILED"

    monkeypatch.setattr(selftest, "load_vectors", lambda: vectors)
    code, _ = call("selftest")
    assert code == 1


def test_a_wrong_backend_fails_the_selftest(monkeypatch: pytest.MonkeyPatch) -> None:
    victim = scrypt.backends()[-1]
    real_scan = scrypt.scan

    def scan(header80: bytes, start: int, count: int, target: int) -> list[tuple[int, bytes]]:
        found = real_scan(header80, start, count, target)
        if scrypt.backend() == victim:  # drop the last nonce, as a broken lane would
            found = found[:-1]
        return found

    monkeypatch.setattr(selftest.scrypt, "scan", scan)
    out = io.StringIO()
    assert selftest.run(out) == 1
    text = out.getvalue()
    assert re.search(rf"^{victim} .*FAIL", text, re.M), text
    assert scrypt.backend() == scrypt.backends()[0], "the selftest restores the backend"


def test_config_check_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[board]\nkind = "cpu"\nthreads = 2\n')
    code, out = call("config", "check", str(good))
    assert (code, out.strip()) == (0, f"{good}: ok")

    bad = tmp_path / "bad.toml"
    bad.write_text('[board]\nthreads = "x"\n[api]\nhttp_listen = "nowhere"\n')
    code, out = call("config", "check", str(bad))
    assert code == 2
    assert 'board.threads: must be an integer in 1..256, got "x"' in out
    assert "api.http_listen:" in out and "2 error(s)" in out

    code, out = call("config", "check", str(tmp_path / "missing.toml"))
    assert code == 2 and "cannot read" in out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert call()[0] == 2
    assert call("frobnicate")[0] == 2
    assert call("demo", "--seconds", "-1")[0] == 2
    assert call("demo", "--difficulty", "0")[0] == 2
    assert call("run")[0] == 2  # -c is required
    assert call("--help")[0] == 0
    assert "selftest" in capsys.readouterr().out


def test_bench_hands_its_arguments_to_the_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent import benchmark

    seen: list[list[str]] = []
    monkeypatch.setattr(benchmark, "main", lambda argv: seen.append(argv) or 0)
    assert call("bench", "--quick", "--seconds", "1")[0] == 0
    assert seen == [["--quick", "--seconds", "1"]]


def test_demo_finds_verified_nonces() -> None:
    code, out = call("demo", "--board", "synthetic", "--seconds", "3")
    assert code == 0, out
    found = int(re.search(r"^nonces found: (\d+) \((\d+) verified", out, re.M).group(1))
    assert found > 0, out
    assert re.search(r"\(\d+ verified with pow_hash, 0 wrong\)", out), out
    rate = re.search(r"^hashrate: ([\d,]+) H/s counted", out, re.M)
    assert rate and int(rate.group(1).replace(",", "")) > 0, out
    assert "selftest: passed" in out


def test_demo_mines_on_the_emulated_board_through_the_local_pool() -> None:
    """What `make demo` runs: the status page address printed, shares accepted by the pool."""
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--seconds", "6"],
        capture_output=True, text=True, env=agent_env(), timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"status page:  http://127\.0\.0\.1:\d+/", proc.stdout), proc.stdout
    assert "chips 72/72/72/72" in proc.stdout
    done = re.search(r"(\d+) shares accepted by the pool \(pool counted (\d+)\), 0 HW errors",
                     proc.stdout)  # fmt: skip
    assert done and int(done.group(1)) > 0 and done.group(1) == done.group(2), proc.stdout


@pytest.mark.timeout(60)
def run_agent(conf: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "agent", "run", "-c", str(conf)]
    return subprocess.run(argv, capture_output=True, text=True, env=agent_env(), timeout=30)


def test_run_rejects_bad_config_and_missing_hardware(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[board]\nthreads = 0\n")
    proc = run_agent(bad)
    assert proc.returncode == 2 and "board.threads:" in proc.stderr
    l3plus = tmp_path / "l3plus.toml"
    l3plus.write_text(
        f'[agent]\nstate_dir = "{tmp_path}"\n[board]\nkind = "l3plus"\nsysfs_root = "{tmp_path}"\n'
        '[api]\nhttp_listen = "127.0.0.1:0"\ncgminer_listen = "127.0.0.1:0"\n'
    )
    proc = run_agent(l3plus)  # a real L3+ profile on a machine without its I2C bus
    assert proc.returncode == 1
    assert "cannot start: I2C bus /dev/i2c-0: cannot open" in proc.stderr
