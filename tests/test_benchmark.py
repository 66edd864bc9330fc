"""The bench harness itself (agent.benchmark): it runs, writes complete JSON, and refuses to time
a wrong implementation. Speed is never asserted here: figures are for people, not for CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent import benchmark
from agent import scrypt as core

QUICK = ["--quick", "--seconds", "0.2", "--rounds", "1"]


def test_quick_run_writes_every_backend_and_ratios(tmp_path: Path, capsys) -> None:
    before = core.backend()
    out = tmp_path / "results.json"
    assert benchmark.main([*QUICK, "--json", str(out)]) == 0
    assert core.backend() == before  # the bench switches backends; it must put the default back

    report = json.loads(out.read_text())
    rows = {r["name"]: r for r in report["results"]}
    for name in core.backends():
        row = rows[f"scan {name}"]
        assert row["backend"] == name and row["lanes"] == core.lanes(name)
    assert f"pow_hash {core.backend()}" in rows
    assert rows["hashlib.scrypt"]["x_hashlib"] == pytest.approx(1.0)
    assert "py-scrypt" in rows  # timed, or marked "not installed"
    timed = [r for r in report["results"] if "hps_median" in r]
    for r in timed:
        assert r["hps_median"] > 0 and r["us_per_hash"] > 0 and r["x_hashlib"] > 0
        assert r["hps_min"] <= r["hps_median"] <= r["hps_max"]
    assert {r["threads"] for r in timed} == {1, 2}
    assert "x_one_thread" in rows[f"scan {core.backend()} x2 threads"]
    assert {t["status"] for t in report["targets"]} <= {"PASS", "BELOW"}
    assert len(report["targets"]) == 2
    m = report["machine"]
    assert m["default_backend"] == core.backend() and m["sha256_impl"] and m["cpu"]

    printed = capsys.readouterr().out
    assert "× hashlib" in printed and "hashlib.scrypt" in printed
    assert "PASS" in printed or "BELOW" in printed


def _flip(raw: bytes) -> bytes:
    return bytes([raw[0] ^ 1]) + raw[1:]


def test_wrong_pow_hash_aborts(tmp_path: Path, monkeypatch, capsys) -> None:
    real = core.pow_hash
    monkeypatch.setattr(core, "pow_hash", lambda h: _flip(real(h)))
    out = tmp_path / "results.json"
    assert benchmark.main([*QUICK, "--json", str(out)]) != 0
    assert not out.exists()  # no figures for a wrong answer
    assert "wrong hash" in capsys.readouterr().err


def test_wrong_scan_lane_aborts(tmp_path: Path, monkeypatch, capsys) -> None:
    real = core.scan

    def one_bad_lane(header: bytes, start: int, count: int, target: int):
        found = real(header, start, count, target)
        if len(found) > 1:  # corrupt a lane other than the first: lane bugs look like this
            nonce, raw = found[1]
            found[1] = (nonce, _flip(raw))
        return found

    monkeypatch.setattr(core, "scan", one_bad_lane)
    out = tmp_path / "results.json"
    assert benchmark.main([*QUICK, "--json", str(out)]) != 0
    assert not out.exists()
    assert "wrong hash" in capsys.readouterr().err


def test_bad_options_are_rejected() -> None:
    with pytest.raises(SystemExit) as exc:
        benchmark.main(["--rounds", "0"])
    assert exc.value.code != 0
