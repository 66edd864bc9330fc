"""Supervision: a hashing unit whose thread raises is stopped and started again and mining goes
on; a task that keeps dying makes the agent exit non-zero (for systemd); the watchdog goes
unpinged while a dead unit is overdue. And the agent SIGKILLed and started again keeps its
persisted counters."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_reload import LogLines, until
from test_service import WAIT_S, PoolThread, agent_env, cpu_config

from agent import defaults as D
from agent.config import loads
from agent.emulator.pool import FixedDifficulty, StratumPool
from agent.hardware import cpu
from agent.sdnotify import Notifier
from agent.service import MiningService, SupervisionError
from agent.stratum.pools import PoolOptions


def _fail_scan(monkeypatch: pytest.MonkeyPatch, times: int | None) -> threading.Event:
    """The CPU board's scan raises `times` times (None: always), then works again."""
    real = cpu.scrypt.scan
    left = [times]
    failed = threading.Event()
    lock = threading.Lock()

    def scan(*args: object) -> object:
        with lock:
            if left[0] is None or left[0] > 0:
                if left[0] is not None:
                    left[0] -= 1
                failed.set()
                raise RuntimeError("injected fault in the C core")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(cpu.scrypt, "scan", scan)
    return failed


def test_a_unit_whose_thread_raises_is_restarted_and_mining_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(D, "SUPERVISE_BACKOFF_MIN_S", 0.05)

    async def main() -> None:
        pool = StratumPool(policy=FixedDifficulty(1 / 64))
        await pool.start()
        conf = loads(cpu_config(tmp_path, f"stratum+tcp://127.0.0.1:{pool.port}"))
        service = MiningService(conf, notifier=Notifier({}), serve_surfaces=False,
                                pool_options=PoolOptions(stability_s=0.5))  # fmt: skip
        stop = asyncio.Event()
        runner = asyncio.create_task(service.run(stop))
        try:
            await asyncio.wait_for(service.ready.wait(), WAIT_S)
            await until("no first share", lambda: pool.stats.accepted >= 1)
            failed = _fail_scan(monkeypatch, 1)
            await until("the fault never hit", failed.is_set)
            await until("not restarted", lambda: "hashing unit 0 restarted" in caplog.text)
            assert service.counts["task_deaths"] == 1
            before = pool.stats.accepted
            await until("no share after the restart", lambda: pool.stats.accepted > before)
            assert not runner.done() and service._healthy()
            events = service.state.snapshot()["events"]
            assert any("hashing unit 0 died" in e["message"] for e in events)
            assert all("injected" not in e["message"] for e in events)  # type only, public
        finally:
            stop.set()
            assert await asyncio.wait_for(runner, WAIT_S) == 0
            await pool.stop()

    asyncio.run(main())


def test_a_unit_that_keeps_dying_exits_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(D, "SUPERVISE_BACKOFF_MIN_S", 0.01)
    monkeypatch.setattr(D, "SUPERVISE_MAX_FAILURES", 3)

    async def main() -> tuple[int, MiningService]:
        pool = StratumPool(policy=FixedDifficulty(1 / 64))
        await pool.start()
        conf = loads(cpu_config(tmp_path, f"stratum+tcp://127.0.0.1:{pool.port}"))
        service = MiningService(conf, notifier=Notifier({}), serve_surfaces=False)
        try:
            runner = asyncio.create_task(service.run(asyncio.Event()))
            await asyncio.wait_for(service.ready.wait(), WAIT_S)
            _fail_scan(monkeypatch, None)  # after the self-test, which uses the same core
            code = await asyncio.wait_for(runner, WAIT_S)
        finally:
            await pool.stop()
        return code, service

    code, service = asyncio.run(main())
    assert code == 1
    assert service.counts["died: hashing unit 0"] == 4  # three restarts, then it gave up


def test_keep_alive_restarts_a_loop_with_backoff_then_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(D, "SUPERVISE_BACKOFF_MIN_S", 0.01)
    monkeypatch.setattr(D, "SUPERVISE_MAX_FAILURES", 2)
    runs = []
    downs = []

    async def loop_body() -> None:
        runs.append(1)
        raise ValueError("bug")

    async def on_death() -> None:
        downs.append(1)

    async def main() -> None:
        service = MiningService(loads(f'[agent]\nstate_dir = "{tmp_path}"\n'),
                                notifier=Notifier({}), serve_surfaces=False)  # fmt: skip
        with pytest.raises(SupervisionError):
            await asyncio.wait_for(service._keep_alive("test loop", loop_body, on_death), WAIT_S)
        assert service.counts["died: test loop"] == 3

    asyncio.run(main())
    assert len(runs) == 3 and len(downs) == 3


def test_the_watchdog_is_not_pinged_while_a_dead_unit_is_overdue(tmp_path: Path) -> None:
    async def main() -> None:
        service = MiningService(loads(f'[agent]\nstate_dir = "{tmp_path}"\n'),
                                notifier=Notifier({}), serve_surfaces=False)  # fmt: skip
        assert service._healthy()
        loop_now = __import__("time").monotonic()
        service._unit_down[0] = loop_now + 60  # restart planned: still healthy
        assert service._healthy()
        service._unit_down[0] = loop_now - 1  # overdue
        assert not service._healthy()

    asyncio.run(main())


def _saved(state_dir: Path) -> dict | None:
    try:
        doc = json.loads((state_dir / D.COUNTERS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc["data"]


def test_sigkill_and_restart_keeps_the_persisted_counters(tmp_path: Path) -> None:
    with PoolThread(1 / 64) as pool:
        conf = tmp_path / "agent.toml"
        conf.write_text(cpu_config(tmp_path, f"stratum+tcp://127.0.0.1:{pool.pool.port}"))
        cmd = [sys.executable, "-m", "agent", "run", "-c", str(conf)]
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=agent_env())
        try:
            assert proc.stderr is not None
            log = LogLines(proc.stderr)
            log.wait_for("first share accepted")
            # the first periodic save (every D.STATE_SAVE_INTERVAL_S) with an accepted share
            wake = threading.Event()
            for _ in range(int((D.STATE_SAVE_INTERVAL_S + WAIT_S) / 0.1)):
                saved = _saved(tmp_path)
                if saved and saved["buckets"]["accepted"] >= 1:
                    break
                wake.wait(0.1)  # polling a file with a deadline
            assert saved and saved["buckets"]["accepted"] >= 1, log.text
            proc.send_signal(signal.SIGKILL)
            proc.wait(WAIT_S)
            before = _saved(tmp_path)
            assert before is not None
            proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=agent_env())
            assert proc.stderr is not None
            log = LogLines(proc.stderr)
            restored = log.wait_for("counters restored")
            assert f"accepted {before['buckets']['accepted']}" in restored
            proc.send_signal(signal.SIGTERM)
            proc.wait(WAIT_S)
            assert proc.returncode == 0, log.text
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    after = _saved(tmp_path)
    assert after is not None
    for bucket in ("accepted", "rejected", "below_target", "hw_errors"):
        assert after["buckets"][bucket] >= before["buckets"][bucket], bucket
    # the shares pending at the kill were never answered: stale now, not gone
    assert after["buckets"]["stale"] >= before["buckets"]["stale"] + before["buckets"]["pending"]
    assert after["nonces"] >= before["nonces"]
    assert after["nonces"] == sum(after["buckets"].values())
