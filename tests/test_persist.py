"""agent.persist: atomic state files. A damaged main file falls back to the .bak, a full disk
leaves the old file as it was, and a writer SIGKILLed at random moments always leaves a valid
file whose counters never go backwards. State's counters survive a save and a load, with the
shares pending at save time counted stale."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from agent import persist
from agent.persist import StateFile
from agent.state import State, check_counters


def _file(tmp_path: Path) -> StateFile:
    return StateFile(tmp_path / "counters.json", "counters", 1)


def test_round_trip_and_the_previous_generation_is_kept(tmp_path: Path) -> None:
    f = _file(tmp_path)
    assert f.load() is None  # first start: nothing, and no warning needed
    assert f.save({"n": 1})
    assert f.save({"n": 2})
    assert _file(tmp_path).load() == {"n": 2}
    assert StateFile(f.bak, "counters", 1).path.exists()
    raw = f.bak.read_bytes()
    assert persist.decode(raw, "counters", 1)[0] == {"n": 1}
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: b"",  # empty
        lambda raw: raw[: len(raw) // 2],  # truncated
        lambda raw: b"\x00\xff garbage {",  # not JSON
        lambda raw: raw.replace(b'"n": 2', b'"n": 7'),  # edited: the checksum no longer matches
        lambda raw: raw.replace(b'"version": 1', b'"version": 9'),  # another schema
    ],
    ids=["empty", "truncated", "garbage", "checksum", "version"],
)
def test_a_damaged_main_file_falls_back_to_the_bak(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object
) -> None:
    f = _file(tmp_path)
    f.save({"n": 1})
    f.save({"n": 2})
    f.path.write_bytes(damage(f.path.read_bytes()))  # type: ignore[operator]
    caplog.set_level(logging.WARNING, "agent.persist")
    g = _file(tmp_path)
    assert g.load() == {"n": 1}
    assert str(f.path) in caplog.text and "unusable" in caplog.text
    assert g.counts["loaded_bak"] == 1
    # the next save must not rotate the bad main file over the good .bak
    assert g.save({"n": 3})
    assert persist.decode(g.bak.read_bytes(), "counters", 1)[0] == {"n": 1}
    assert _file(tmp_path).load() == {"n": 3}


def test_both_files_bad_is_a_warning_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = _file(tmp_path)
    f.path.write_text("[1, 2")
    f.bak.write_text("")
    assert f.load() is None
    assert "starting from zero" in caplog.text
    assert f.counts["lost"] == 1


def test_a_validator_refuses_bad_content(tmp_path: Path) -> None:
    f = StateFile(tmp_path / "c.json", "counters", 1, check_counters)
    f.save({"nonces": -1})
    assert f.load() is None
    f.path.unlink()
    f.save(State().export_counters())
    assert f.load() is not None


@pytest.mark.parametrize("call", ["write", "fsync"])
def test_a_full_disk_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, call: str
) -> None:
    f = _file(tmp_path)
    assert f.save({"n": 1})
    before = f.path.read_bytes()

    def full(*_: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(persist.os, call, full)
    for n in range(3):
        assert f.save({"n": 2 + n}) is False  # never raises
    monkeypatch.undo()
    assert f.path.read_bytes() == before
    assert f.counts["disk_full"] == 3 and f.counts["write_failed"] == 3
    assert caplog.text.count("the disk is full") == 1  # a run of failures is not a flood
    assert not list(tmp_path.glob(".*.tmp"))
    assert _file(tmp_path).load() == {"n": 1}
    assert f.save({"n": 9}) and _file(tmp_path).load() == {"n": 9}


WRITER = """
import sys
from agent.persist import StateFile
f = StateFile(sys.argv[1], "counters", 1)
n = (f.load() or {"n": 0})["n"]
print(n, flush=True)
while True:
    n += 1
    f.save({"n": n, "pad": "x" * (n % 4000)})
"""


def test_sigkill_during_writes_always_leaves_a_valid_file_that_never_goes_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "counters.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(6)
    last = 0
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout is not None
        started = int(proc.stdout.readline())  # it loaded, and is now writing in a loop
        assert started >= last
        # a random moment into the write loop (the wait is the kill's timing, not a sync)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=rng.uniform(0.01, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        data = StateFile(path, "counters", 1).load()
        assert data is not None, "SIGKILL left no valid file"
        assert data["n"] >= last
        last = data["n"]
    assert last > 0


def test_state_counters_survive_and_pending_becomes_stale() -> None:
    a = State()
    a.record_nonce(0, 1.0, "accepted", pool="p1")
    a.record_nonce(0, 1.0, "accepted", pool="p1")
    a.record_nonce(1, 1.0, "rejected", pool="p1")
    a.record_nonce(1, 1.0, "hw_errors")
    a.record_nonce(0, 1.0)  # pending: its answer will never come
    a.add_hashes(0, 1000)
    saved = a.export_counters()
    assert check_counters(saved) is None
    b = State()
    b.record_nonce(0, 1.0, "below_target")  # counted before the load: kept
    b.import_counters(saved)
    snap = b.snapshot()
    s = snap["shares"]
    assert snap["nonces"] == 6 == sum(s.values())
    assert s["accepted"] == 2 and s["rejected"] == 1 and s["hw_errors"] == 1
    assert s["pending"] == 0 and s["stale"] == 1 and s["below_target"] == 1
    assert snap["pools"][0]["accepted"] == 2 and snap["pools"][0]["rejected"] == 1
    chains = {c["id"]: c for c in snap["chains"]}
    assert chains[0]["nonces"] == 4 and chains[1]["hw_errors"] == 1
    assert chains[0]["hashes"] == 1000


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(nonces=True),
        lambda d: d["buckets"].update(accepted=-1),
        lambda d: d["buckets"].pop("stale"),
        lambda d: d.update(nonces=d["nonces"] + 1),
        lambda d: d["pools"].update(x={"accepted": "1", "rejected": 0}),
        lambda d: d["chains"].update(abc={"nonces": 0, "hw_errors": 0, "hashes": 0}),
        lambda d: d.update(chains=[]),
    ],
)
def test_bad_counters_are_refused_and_change_nothing(mutate: object) -> None:
    a = State()
    a.record_nonce(0, 1.0, "accepted", pool="p")
    d = a.export_counters()
    mutate(d)  # type: ignore[operator]
    assert check_counters(d) is not None
    b = State()
    with pytest.raises(ValueError):
        b.import_counters(d)
    assert b.snapshot()["nonces"] == 0
