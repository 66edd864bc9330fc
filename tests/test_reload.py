"""Hot reload: a config file changed while the agent runs is read again. An invalid one is
refused (each bad key logged by its path, counted) and the agent keeps mining on the old config;
a valid change of pools switches pools without restarting the hashing side; SIGHUP does the
same in `doge-agent run`."""

from __future__ import annotations

import asyncio
import logging
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest
from test_service import WAIT_S, PoolThread, agent_env, cpu_config

from agent.config import load
from agent.emulator.pool import FixedDifficulty, StratumPool
from agent.sdnotify import Notifier
from agent.service import MiningService
from agent.stratum.pools import PoolOptions

BAD_THERMAL = '[thermal]\ntarget_temp_c = "warm"\n'


async def until(what: str, cond: object, timeout: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():  # type: ignore[operator]
        assert loop.time() < deadline, what
        await asyncio.sleep(0.05)  # polling a condition with a deadline, not synchronising


def test_invalid_config_keeps_mining_and_valid_pool_change_switches(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def main() -> None:
        a = StratumPool(policy=FixedDifficulty(1 / 64))
        b = StratumPool(policy=FixedDifficulty(1 / 64))
        await a.start()
        await b.start()
        path = tmp_path / "agent.toml"
        good = cpu_config(tmp_path, f"stratum+tcp://127.0.0.1:{a.port}")
        path.write_text(good)
        service = MiningService(
            load(path), notifier=Notifier({}), pool_options=PoolOptions(stability_s=0.5),
            serve_surfaces=False,
        )  # fmt: skip
        stop = asyncio.Event()
        runner = asyncio.create_task(service.run(stop))
        try:
            await asyncio.wait_for(service.ready.wait(), WAIT_S)
            unit = service.units[0]
            await until("no share on pool a", lambda: a.stats.accepted >= 2)

            path.write_text(good + BAD_THERMAL)  # the file watcher sees it
            await until("the bad file was not refused",
                        lambda: service.counts["reloads_refused"] >= 1)  # fmt: skip
            assert "thermal.target_temp_c" in caplog.text
            assert service.conf.thermal.target_temp_c != "warm"
            before = a.stats.accepted
            await until("mining stopped after a refused reload", lambda: a.stats.accepted > before)
            assert not runner.done()

            path.write_text(cpu_config(tmp_path, f"stratum+tcp://127.0.0.1:{b.port}"))
            await until("the pools were not switched", lambda: b.stats.accepted >= 2)
            assert service.counts["reloads"] == 1
            assert service.units[0] is unit  # no restart of the hashing side
            assert service.conf.pools[0].url.endswith(str(b.port))
            assert "config reloaded: pools changed" in caplog.text
        finally:
            stop.set()
            assert await asyncio.wait_for(runner, WAIT_S) == 0
            await a.stop()
            await b.stop()
        snap = service.state.snapshot()
        assert snap["nonces"] == sum(snap["shares"].values())

    asyncio.run(main())


def test_a_board_change_restarts_the_hashing_side(tmp_path: Path) -> None:
    async def main() -> None:
        pool = StratumPool(policy=FixedDifficulty(1 / 64))
        await pool.start()
        path = tmp_path / "agent.toml"
        text = cpu_config(tmp_path, f"stratum+tcp://127.0.0.1:{pool.port}")
        path.write_text(text)
        service = MiningService(load(path), notifier=Notifier({}), serve_surfaces=False)
        stop = asyncio.Event()
        runner = asyncio.create_task(service.run(stop))
        try:
            await asyncio.wait_for(service.ready.wait(), WAIT_S)
            unit = service.units[0]
            path.write_text(text.replace("threads = 1", "threads = 2"))
            service.request_reload()  # as SIGHUP does, without waiting for the watcher
            await until("no restart", lambda: service.units and service.units[0] is not unit
                        and service.ready.is_set())  # fmt: skip
            assert service.conf.board.threads == 2
            assert getattr(service.units[0], "threads", 2) == 2
        finally:
            stop.set()
            assert await asyncio.wait_for(runner, WAIT_S) == 0
            await pool.stop()

    asyncio.run(main())


class LogLines:
    """A subprocess's stderr read in a thread; wait_for(text) returns when a line has it."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)
            self._new.put(line)
        self._new.put("")  # EOF

    def wait_for(self, text: str, timeout: float = WAIT_S) -> str:
        for line in self.lines:
            if text in line:
                return line
        while True:
            try:
                line = self._new.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"{text!r} never logged:\n{self.text}") from None
            if not line:
                raise AssertionError(f"exited before {text!r} was logged:\n{self.text}")
            if text in line:
                return line

    @property
    def text(self) -> str:
        return "".join(self.lines)


def test_sighup_with_an_invalid_file_keeps_the_agent_mining(tmp_path: Path) -> None:
    with PoolThread(1 / 64) as pool:
        conf = tmp_path / "agent.toml"
        good = cpu_config(tmp_path, f"stratum+tcp://127.0.0.1:{pool.pool.port}", "s3cr3t")
        conf.write_text(good)
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(conf)],
            stderr=subprocess.PIPE, text=True, env=agent_env(),
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            log = LogLines(proc.stderr)
            log.wait_for("first share accepted")
            conf.write_text(good.replace('kind = "cpu"', 'kind = "abacus"'))
            proc.send_signal(signal.SIGHUP)
            log.wait_for("board.kind")  # the refusal names the key
            accepted = pool.pool.stats.accepted
            deadline = threading.Event()
            for _ in range(int(WAIT_S / 0.1)):  # shares keep coming on the old config
                if pool.pool.stats.accepted > accepted:
                    break
                deadline.wait(0.1)
            assert pool.pool.stats.accepted > accepted, log.text
            assert proc.poll() is None
            proc.send_signal(signal.SIGTERM)
            proc.wait(WAIT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, log.text
    assert "reload refused" in log.text
    assert "s3cr3t" not in log.text


def test_an_api_change_restarts_the_surfaces(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]

    async def main() -> None:
        pool = StratumPool(policy=FixedDifficulty(1 / 64))
        await pool.start()
        path = tmp_path / "agent.toml"
        text = cpu_config(tmp_path, f"stratum+tcp://127.0.0.1:{pool.port}")
        path.write_text(text)
        service = MiningService(load(path), notifier=Notifier({}))
        stop = asyncio.Event()
        runner = asyncio.create_task(service.run(stop))
        try:
            await asyncio.wait_for(service.ready.wait(), WAIT_S)
            unit = service.units[0]
            path.write_text(text.replace('cgminer_listen = "127.0.0.1:0"',
                                         f'cgminer_listen = "127.0.0.1:{free}"'))  # fmt: skip
            assert await service.reload()
            assert service.surfaces is not None and service.surfaces.cgminer is not None
            assert service.surfaces.cgminer.port == free
            _, writer = await asyncio.open_connection("127.0.0.1", free)
            writer.close()
            assert service.units[0] is unit
        finally:
            stop.set()
            assert await asyncio.wait_for(runner, WAIT_S) == 0
            await pool.stop()

    asyncio.run(main())
