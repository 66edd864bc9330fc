"""Fault injection on the RUNNING agent: MiningService in-process on the emulated L3+ (real chain
and board drivers over ptys and the emulated I2C/sysfs parts) with local pools on 127.0.0.1.

For every fault, while and after it happens:
* the agent keeps running (its `run` task never returns);
* the board stays within its thermal limits (emulated chip temperature < dangerous_temp_c);
* every nonce is accounted for: nonces == accepted + rejected + stale + below_target + hw_errors +
  pending at every sample, pending drains once the fault clears, and the agent counted at least
  every nonce the emulated chips had emitted before the check (nothing dropped on the way).

Synchronisation is by events and by polling counters against deadlines, never by bare sleeps."""

from __future__ import annotations

import asyncio
import builtins
import errno
import gc
import io
import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from stratum_fake_pool import Conn, FakePool, notify, set_difficulty
from test_stratum_tls import Pki

from agent.config import loads
from agent.emulator.pool import FixedDifficulty, StratumPool
from agent.sdnotify import Notifier
from agent.service import MiningService
from agent.stratum.client import ClientOptions
from agent.stratum.pools import PoolOptions

WAIT_S = 40.0
POOL_DIFFICULTY = 1 / 256  # the emulated board's ticket is 1/1024: about one nonce in 4 is a share
API = '[api]\nhttp_listen = "127.0.0.1:0"\ncgminer_listen = "127.0.0.1:0"\n'
FAST = PoolOptions(
    stability_s=1.0,
    backoff_base_s=0.05,
    backoff_cap_s=0.5,
    client=ClientOptions(connect_timeout_s=2.0, submit_timeout_s=2.0, request_timeout_s=2.0),
)


def local_pool(port: int = 0) -> StratumPool:
    return StratumPool(port=port, policy=FixedDifficulty(POOL_DIFFICULTY))


def tcp(port: int) -> str:
    return f"stratum+tcp://127.0.0.1:{port}"


class Running:
    """The agent running in this loop, watched every 50 ms for the three invariants."""

    def __init__(
        self,
        tmp_path: Path,
        pool_urls: list[str],
        *,
        thermal: str = "",
        options: PoolOptions = FAST,
        warm: bool = True,
    ) -> None:
        self.warm = warm  # wait for the first accepted shares before the fault
        pools = "".join(
            f'[[pools]]\nurl = "{u}"\nuser = "w.{i}"\npriority = {i}\n'
            for i, u in enumerate(pool_urls)
        )
        self.conf = loads(
            API + f'[agent]\nstate_dir = "{tmp_path}"\n' + pools
            + '[board]\nkind = "emulated"\nchains = 4\nchips_per_chain = 72\n'
            + ("[thermal]\n" + thermal if thermal else "")
        )  # fmt: skip
        self.service = MiningService(self.conf, notifier=Notifier({}), pool_options=options)
        self.stop = asyncio.Event()
        self.violations: list[str] = []
        self.max_chip_temp_c = 0.0
        self.dangerous_c = self.conf.thermal.dangerous_temp_c
        self.emulator: Any = None

    async def __aenter__(self) -> Running:
        self.runner = asyncio.create_task(self.service.run(self.stop))
        await asyncio.wait_for(self.service.ready.wait(), WAIT_S)
        self.emulator = self.service.emulator
        assert self.emulator is not None
        self.watcher = asyncio.create_task(self._watch())
        if self.warm:
            await self.until(lambda: self.counts()["accepted"] >= 3, "the first accepted shares")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.watcher.cancel()
        if not self.runner.done():
            self.stop.set()
            await asyncio.wait_for(self.runner, WAIT_S)

    # --------------------------------------------------------------------------- watching

    async def _watch(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(0.05)

    def _sample(self) -> None:
        snap = self.snap()
        if snap["nonces"] != sum(snap["shares"].values()):
            self.violations.append(f"nonces {snap['nonces']} != buckets {snap['shares']}")
        thermal = self.emulator.peripherals.thermal
        for i in range(len(self.emulator.chips.chains)):
            self.max_chip_temp_c = max(self.max_chip_temp_c, thermal.chip_temp_c(i))
        if self.runner.done():
            self.violations.append("the agent's run task returned")

    def snap(self) -> dict[str, Any]:
        return self.service.state.snapshot()

    def counts(self) -> dict[str, int]:
        return self.snap()["shares"]

    def emitted(self) -> int:
        """Nonces the emulated chips have put on their lines so far."""
        return sum(c.stats.nonces_out for c in self.emulator.chips.chains)

    def events(self, kind: str, chain: int | None = None) -> list[Any]:
        return [e for e in self.service.events if e.kind == kind and chain in (None, e.chain)]

    def pool_stat(self, url: str) -> Any:
        return next(p for p in self.service.pool_stats() if p.url == url)

    async def until(self, pred: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not pred():
            if self.runner.done():
                raise AssertionError(f"the agent stopped while waiting for {what}")
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.counts()}")
            await asyncio.sleep(0.05)  # polling a counter against a deadline

    # --------------------------------------------------------------------------- checks

    async def nothing_lost(self, *, from_chips: bool = True) -> None:
        """Pending drains, the buckets add up, and (from_chips) every nonce the chips emitted
        up to now reaches the agent's count."""
        await self.until(lambda: self.counts()["pending"] <= 1, "pending shares to drain")
        if from_chips:
            emitted = self.emitted()
            what = f"the agent to count the {emitted} nonces the chips emitted"
            await self.until(lambda: self.snap()["nonces"] >= emitted, what)
        self._sample()
        assert not self.violations, self.violations[:5]
        assert not self.runner.done()
        assert self.max_chip_temp_c < self.dangerous_c, self.max_chip_temp_c

    async def accepted_grows(self, pool: StratumPool, n: int = 3, what: str = "") -> None:
        start = pool.stats.accepted
        await self.until(lambda: pool.stats.accepted >= start + n,
                         what or f"{n} more shares accepted by pool :{pool.port}")  # fmt: skip


# ------------------------------------------------------------------------------------ pools


def test_pool_killed_and_restarted_fails_over_and_back(tmp_path: Path) -> None:
    async def main() -> None:
        primary, backup = local_pool(), local_pool()
        await primary.start()
        await backup.start()
        port = primary.port
        async with Running(tmp_path, [tcp(port), tcp(backup.port)]) as agent:
            await agent.until(lambda: primary.stats.accepted >= 3, "shares on the primary")
            await primary.stop()  # killed: listener closed, every session dropped
            await agent.accepted_grows(backup, what="failover: shares on the backup")
            revived = local_pool(port)
            await revived.start()
            await agent.accepted_grows(revived, what="fail-back to the restarted primary")
            await agent.nothing_lost()
            assert agent.pool_stat(tcp(port)).active
            await revived.stop()
        await backup.stop()

    asyncio.run(main())


def test_pool_with_a_wrong_certificate_is_refused(tmp_path: Path) -> None:
    """A TLS pool whose certificate no trusted CA signed is never used: the agent mines on the
    other pool and never sends the bad one a byte of Stratum."""

    async def main() -> None:
        pki = Pki(tmp_path)
        impostor = await FakePool(ssl_ctx=pki.server_context()).start()
        impostor.difficulty = POOL_DIFFICULTY
        backup = local_pool()
        await backup.start()
        async with Running(tmp_path, [impostor.url, tcp(backup.port)]) as agent:
            await agent.accepted_grows(backup)
            await agent.until(lambda: agent.pool_stat(impostor.url).last_error is not None,
                              "the TLS failure to be reported")  # fmt: skip
            stat = agent.pool_stat(impostor.url)
            assert stat.status != "alive" and not stat.active and stat.accepted == 0
            assert "certificate" in (stat.last_error or "").lower(), stat.last_error
            assert not any(c.all for c in impostor.conns)  # no subscribe, no password sent
            await agent.nothing_lost()
        await impostor.kill()
        await backup.stop()

    asyncio.run(main())


def test_pool_that_stalls_times_out_and_fails_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Accepts the connection and the shares, never answers one: the submit timeout drops it,
    the backup takes over, every share sent to the staller ends in a bucket."""

    async def main() -> None:
        staller = await FakePool().start()
        staller.difficulty = POOL_DIFFICULTY
        staller.extranonce1 = "auto"
        staller.answer_shares = False
        backup = local_pool()
        await backup.start()
        options = PoolOptions(
            stability_s=600.0, backoff_base_s=0.05, backoff_cap_s=0.5, client=FAST.client
        )
        async with Running(
            tmp_path, [staller.url, tcp(backup.port)], options=options, warm=False
        ) as agent:
            await asyncio.wait_for(staller.submits.get(), WAIT_S)  # a share went to the staller
            await agent.accepted_grows(backup, what="failover after the submit timeout")
            stat = agent.pool_stat(staller.url)
            assert stat.disconnects >= 1 and not stat.active
            staller.answer_shares = True  # the fault clears
            await agent.nothing_lost()
            # the unanswered shares went again after a reconnect, or were counted stale
        await staller.kill()
        await backup.stop()

    asyncio.run(main())
    gc.collect()  # a future whose error nobody read is reported when it is collected
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


def _garbage(rng: random.Random) -> bytes:
    choices = [
        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) + b"\n",
        b"{not json at all\n",
        b"[1, 2, 3]\n",
        b'{"id": null, "method": "mining.notify", "params": "nope"}\n',
        b'{"id": null, "method": "mining.set_difficulty", "params": [-1]}\n',
        b'{"id": null, "method": "mining.set_difficulty", "params": ["NaN"]}\n',
        b'{"id": 123456, "result": true, "error": null}\n',
        b'{"id": null, "method": "client.reconnect", "params": ["10.0.0.1", 1, 0]}\n',
        b"\x00\xff\xfe" * 50 + b"\n",
        json.dumps(notify("x" * 500, prevhash="zz")).encode() + b"\n",
        b"A" * 70_000 + b"\n",  # longer than any Stratum line may be
    ]
    return rng.choice(choices)


def test_pool_that_floods_garbage_is_dropped(tmp_path: Path) -> None:
    async def flood(conn: Conn) -> None:
        sub = await conn.expect("mining.subscribe", WAIT_S)
        conn.send({"id": sub["id"], "result": [[["mining.notify", "s1"]], "0000000f", 4],
                   "error": None})  # fmt: skip
        auth = await conn.expect("mining.authorize", WAIT_S)
        conn.send({"id": auth["id"], "result": True, "error": None})
        conn.send(set_difficulty(POOL_DIFFICULTY))
        conn.send(notify("f1"))
        rng = random.Random(9)
        while True:
            conn.send(_garbage(rng))
            await conn.writer.drain()
            await asyncio.sleep(0.002)

    async def main() -> None:
        flooder = await FakePool(script=flood).start()
        backup = local_pool()
        await backup.start()
        options = PoolOptions(
            stability_s=600.0, backoff_base_s=0.05, backoff_cap_s=0.5, client=FAST.client
        )
        async with Running(
            tmp_path, [flooder.url, tcp(backup.port)], options=options, warm=False
        ) as agent:
            await agent.accepted_grows(backup, n=5, what="shares on the backup despite the flood")
            stat = agent.pool_stat(flooder.url)
            assert stat.bad_messages > 0 and not stat.active
            await flooder.kill()  # the fault clears
            await agent.nothing_lost()
        await flooder.kill()
        await backup.stop()

    asyncio.run(main())


# ------------------------------------------------------------------------------------ chips


def test_chips_vanish_and_come_back(tmp_path: Path) -> None:
    async def main() -> None:
        pool = local_pool()
        await pool.start()
        async with Running(tmp_path, [tcp(pool.port)]) as agent:
            chain = agent.emulator.chips.chains[1]
            gone = range(30, 40)
            for p in gone:
                chain.vanish(p)
            await agent.until(lambda: len(agent.events("chip_lost", 1)) >= len(gone),
                              "the vanished chips to be reported lost")  # fmt: skip
            await agent.accepted_grows(pool, what="shares while 10 chips are missing")
            for p in gone:
                chain.restore(p)
            await agent.until(lambda: len(agent.events("chip_back", 1)) >= len(gone),
                              "the chips to be reported back")  # fmt: skip
            await agent.accepted_grows(pool)
            await agent.nothing_lost()
            assert [c["chips"] for c in agent.snap()["chains"]] == [72] * 4
        await pool.stop()

    asyncio.run(main())


@pytest.mark.slow
def test_chain_that_goes_silent_is_reinitialised(tmp_path: Path) -> None:
    async def main() -> None:
        pool = local_pool()
        await pool.start()
        async with Running(tmp_path, [tcp(pool.port)]) as agent:
            chain = agent.emulator.chips.chains[2]

            def chain_nonces() -> int:
                return next(c["nonces"] for c in agent.snap()["chains"] if c["id"] == 2)

            pulses = chain.stats.line_pulses
            chain.go_silent()  # the chain hangs (a glitch): only a reset brings it back
            await agent.until(lambda: agent.events("chain_silent", 2), "the silence noticed")
            await agent.accepted_grows(pool, what="the other chains mining on")
            # No wake from the emulator: the driver's re-boot pulses the reset line, which
            # resets the chips, and boots them again.
            await agent.until(lambda: agent.events("chain_recovered", 2), "the chain re-init")
            assert chain.stats.line_pulses > pulses
            before = chain_nonces()
            await agent.until(lambda: chain_nonces() > before + 3, "nonces from chain 2 again")
            await agent.accepted_grows(pool)
            await agent.nothing_lost(from_chips=False)  # the reset cleared the chips' queues
            assert next(c["chips"] for c in agent.snap()["chains"] if c["id"] == 2) == 72
        await pool.stop()

    asyncio.run(main())


def test_bad_frames_and_bad_nonces_are_counted_not_lost(tmp_path: Path) -> None:
    """Line noise, corrupted and truncated frames, nonces that miss the ticket, nonces for work
    never sent and for retired work: each bad nonce is a counted HW error or stale nonce."""

    async def main() -> None:
        pool = local_pool()
        await pool.start()
        async with Running(tmp_path, [tcp(pool.port)]) as agent:
            chains = agent.emulator.chips.chains

            def bad() -> int:
                return agent.counts()["hw_errors"] + agent.counts()["stale"]

            before = bad()
            await pool.new_block()  # every chain gets new work: the old one is retired
            await agent.until(lambda: all(c._previous is not None for c in chains), "new work")
            chains[0].bad_nonces(5)
            chains[1].unknown_work_nonces(5)
            chains[3].stale_nonces(5)  # found on new work, sent with the old id: HW errors
            await agent.until(lambda: bad() >= before + 15, "the 15 bad nonces counted")
            await agent.nothing_lost()  # every emitted nonce, bad ones included, is counted
            chains[2].noise(400)
            chains[2].corrupt(5)
            chains[2].lose_bytes(5)
            await agent.until(lambda: any(e.chain == 2 for e in agent.events("crc_error")),
                              "the corruption noticed")  # fmt: skip
            await agent.accepted_grows(pool)
            await agent.nothing_lost(from_chips=False)  # a corrupted frame is no nonce
        await pool.stop()

    asyncio.run(main())


# ------------------------------------------------------------------------------------ thermal


@pytest.mark.slow
def test_sensor_glitches_send_fans_to_full(tmp_path: Path) -> None:
    async def main() -> None:
        pool = local_pool()
        await pool.start()
        async with Running(tmp_path, [tcp(pool.port)]) as agent:
            thermal = agent.service.thermal
            assert thermal is not None
            await agent.until(lambda: thermal.last is not None and thermal.last.fan_code == "pid",
                              "fans under PID control")  # fmt: skip
            for sensor in (0, 1):  # every sensor of two chains: no trusted reading left
                agent.emulator.peripherals.force_chip_sensor(0, 255, sensor)
                agent.emulator.peripherals.force_chip_sensor(1, 0, sensor)
            await agent.until(lambda: thermal.last.fan_code == "unknown_temp", "the glitch seen")
            await agent.until(lambda: agent.emulator.peripherals.sysfs.duty_pct() >= 100,
                              "fans at 100 %")  # fmt: skip
            await agent.accepted_grows(pool, what="mining through the glitch")
            for sensor in (0, 1):
                agent.emulator.peripherals.force_chip_sensor(0, None, sensor)
                agent.emulator.peripherals.force_chip_sensor(1, None, sensor)
            await agent.until(lambda: thermal.last.fan_code == "pid", "fans back under PID")
            await agent.nothing_lost()
        await pool.stop()

    asyncio.run(main())


@pytest.mark.slow
def test_dead_fan_powers_the_chains_off(tmp_path: Path) -> None:
    async def main() -> None:
        pool = local_pool()
        await pool.start()
        thermal_keys = "fan_grace_s = 1.0\ncooldown_s = 1.0\nrearm_temp_c = 55.0\n"
        async with Running(tmp_path, [tcp(pool.port)], thermal=thermal_keys) as agent:
            service, pics = agent.service, agent.emulator.peripherals.pics
            thermal = service.thermal
            assert thermal is not None
            agent.emulator.peripherals.kill_fan(0)
            await agent.until(
                lambda: thermal.last is not None and "fan_failed" in thermal.last.flags,
                "the dead fan noticed",
            )
            await agent.until(lambda: not any(p.dc_dc_on for p in pics), "every chain off")
            assert thermal.last.fan_code == "fan_failed"
            board = service.board
            assert board is not None
            await agent.until(lambda: board.red.pattern != "off", "the fault on the red LED")
            emitted = agent.emitted()
            await agent.until(lambda: agent.snap()["nonces"] >= emitted, "the last nonces")
            await agent.nothing_lost(from_chips=False)
            agent.emulator.peripherals.kill_fan(0, dead=False)  # the fan is replaced
            await agent.until(lambda: all(p.dc_dc_on for p in pics), "the chains back on")
            await agent.accepted_grows(pool, what="mining again after the fan came back")
            await agent.nothing_lost(from_chips=False)
        await pool.stop()

    asyncio.run(main())


# ------------------------------------------------------------------------------------ host


def test_full_disk_for_logs_and_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file write outside the (emulated) hardware folder fails with ENOSPC, and so does
    every log write: the agent keeps mining and counting."""

    def enospc(*_a: object, **_k: object) -> Any:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    class FullStream(io.TextIOBase):
        def write(self, _s: str) -> int:
            enospc()
            return 0

    async def main() -> None:
        pool = local_pool()
        await pool.start()
        async with Running(tmp_path, [tcp(pool.port)]) as agent:
            hardware, state = str(agent.emulator.root), str(tmp_path)
            real_open, real_replace, real_mkstemp = builtins.open, os.replace, tempfile.mkstemp
            real_os_open = os.open

            def disk(path: Any) -> bool:
                """A file on the (full) disk: the state folder, not the emulated hardware."""
                name = os.fsdecode(path) if isinstance(path, str | bytes | os.PathLike) else ""
                return name.startswith(state) and not name.startswith(hardware)

            def full_open(file: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
                if any(m in mode for m in "wax+") and disk(file):
                    enospc()
                return real_open(file, mode, *a, **k)

            def full_os_open(path: Any, flags: int, *a: Any, **k: Any) -> int:
                if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and disk(path):
                    enospc()
                return real_os_open(path, flags, *a, **k)

            def full_replace(src: Any, dst: Any, *a: Any, **k: Any) -> None:
                if disk(dst):
                    enospc()
                real_replace(src, dst, *a, **k)

            def full_mkstemp(*a: Any, **k: Any) -> Any:
                if disk(k.get("dir", tempfile.gettempdir())):
                    enospc()
                return real_mkstemp(*a, **k)

            monkeypatch.setattr(os, "open", full_os_open)
            monkeypatch.setattr(builtins, "open", full_open)
            monkeypatch.setattr(io, "open", full_open)
            monkeypatch.setattr(os, "replace", full_replace)
            monkeypatch.setattr(tempfile, "mkstemp", full_mkstemp)
            handler = logging.StreamHandler(FullStream())
            agent_log = logging.getLogger("agent")
            level = agent_log.level
            agent_log.setLevel(logging.INFO)
            agent_log.addHandler(handler)
            monkeypatch.setattr(logging, "raiseExceptions", False)  # as in production
            try:
                assert Path(tmp_path / "probe").exists() is False
                with pytest.raises(OSError):
                    Path(tmp_path / "probe").write_text("x")
                files = agent.service.counters_file
                agent.service.save_interval_s = 0.2  # the counters are saved every tick now
                await agent.until(lambda: files.counts["disk_full"] >= 2, "saves on a full disk")
                hw0 = agent.counts()["hw_errors"]
                agent.emulator.chips.chains[0].bad_nonces(5)  # each one is logged
                await agent.until(lambda: agent.counts()["hw_errors"] >= hw0 + 5, "HW errors")
                await agent.accepted_grows(pool, n=5, what="mining on a full disk")
                await agent.nothing_lost()
                assert (
                    files.counts["disk_full"] >= 2
                )  # each save failed, counted, and mining went on
            finally:
                agent_log.removeHandler(handler)
                agent_log.setLevel(level)
                monkeypatch.undo()
        await pool.stop()

    asyncio.run(main())


@pytest.mark.parametrize("jump_s", [3 * 3600.0, -3 * 3600.0], ids=["forward", "backward"])
def test_clock_jump(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jump_s: float) -> None:
    """The wall clock jumps hours (NTP after a boot without RTC, a bad RTC): no crash, shares keep
    being accepted, the hashrate estimate stays sane, and no pool times out because of it."""
    real_time = time.time
    offset = [0.0]

    def wall() -> float:
        return real_time() + offset[0]

    async def main() -> None:
        pool = local_pool()
        await pool.start()
        monkeypatch.setattr(time, "time", wall)
        async with Running(tmp_path, [tcp(pool.port)]) as agent:
            service = agent.service
            assert service.work is not None
            service.work._clock = wall  # the agent's wall clocks were bound at construction
            service.state._wall = wall
            await agent.until(lambda: agent.snap()["hashrate_hs"] > 0, "a hashrate estimate")
            await agent.accepted_grows(pool, n=10)
            rate_before = agent.snap()["hashrate_hs"]
            disconnects = agent.pool_stat(tcp(pool.port)).disconnects
            offset[0] = jump_s
            await pool.new_block()  # a job stamped with the jumped clock
            await agent.accepted_grows(pool, n=10, what="shares after the clock jump")
            snap = agent.snap()
            assert 0.25 * rate_before < snap["hashrate_hs"] < 4 * rate_before, (
                rate_before, snap["hashrate_hs"])  # fmt: skip
            assert abs(snap["time"] - wall()) < 60
            assert 0 <= snap["uptime_s"] < 600
            stat = agent.pool_stat(tcp(pool.port))
            assert stat.disconnects == disconnects and stat.active and stat.status == "alive"
            assert agent.counts()["rejected"] == 0
            await agent.nothing_lost()
        await pool.stop()

    asyncio.run(main())


# ------------------------------------------------------------------------------------ SIGKILL

TORN_WRITER = """
import os, sys, time, runpy
import agent.defaults as D
D.STATE_SAVE_INTERVAL_S = 0.3  # save often, so the torn write comes soon
real_write, saves = os.write, [0]

def write(fd, data):
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        name = ""
    if name.endswith(".counters.json.tmp"):
        saves[0] += 1
        if saves[0] >= 4:  # a good copy and its .bak are on disk: tear this one in half
            real_write(fd, bytes(data)[: len(data) // 2])
            real_write(2, b"TORN-WRITE-IN-PROGRESS\\n")
            while True:
                time.sleep(1)  # the power goes (SIGKILL) before the rest is written
    return real_write(fd, data)

os.write = write
sys.argv = ["doge-agent", "run", "-c", sys.argv[1]]
runpy.run_module("agent", run_name="__main__")
"""


def test_sigkill_during_a_state_write(tmp_path: Path) -> None:
    """A subprocess agent is SIGKILLed halfway through writing its counters: the file on disk is
    the last good generation, and the next start restores it and keeps counting from there."""
    import re
    import signal
    import subprocess
    import sys

    from test_service import PoolThread, agent_env, cpu_config

    from agent import persist

    with PoolThread(1 / 64) as pool:
        conf = tmp_path / "agent.toml"
        conf.write_text(cpu_config(tmp_path, tcp(pool.pool.port)))
        env = agent_env()
        first = subprocess.Popen(
            [sys.executable, "-c", TORN_WRITER, str(conf)],
            stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        log: list[str] = []
        try:
            assert first.stderr is not None
            for line in first.stderr:  # until the torn write is under way
                log.append(line)
                if "TORN-WRITE-IN-PROGRESS" in line:
                    break
            assert any("TORN-WRITE" in line for line in log), "".join(log)
            first.send_signal(signal.SIGKILL)
            first.wait(WAIT_S)
        finally:
            if first.poll() is None:
                first.kill()
        counters = tmp_path / "counters.json"
        torn = tmp_path / ".counters.json.tmp"
        assert torn.exists()  # the half-written generation, never renamed over the good one
        with pytest.raises(ValueError):
            json.loads(torn.read_bytes())
        saved = persist.StateFile(counters, "counters", 1).load()
        assert saved is not None, "no good generation survived the SIGKILL"
        assert saved["nonces"] == sum(saved["buckets"].values())

        second = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(conf)],
            stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        log2: list[str] = []
        try:
            assert second.stderr is not None
            for line in second.stderr:
                log2.append(line)
                if "first share accepted" in line:
                    break
            second.send_signal(signal.SIGTERM)
            _, rest = second.communicate(timeout=WAIT_S)
        finally:
            if second.poll() is None:
                second.kill()
    text = "".join(log2) + rest
    assert second.returncode == 0, text
    restored = re.search(r"counters restored from \S+: (\d+) nonces, accepted (\d+)", text)
    assert restored, text
    assert int(restored[1]) == saved["nonces"]
    assert int(restored[2]) == saved["buckets"]["accepted"]
    final = re.findall(r"nonces (\d+): accepted (\d+), rejected (\d+), stale (\d+), "
                       r"below target (\d+), hw errors (\d+), pending (\d+)", text)[-1]  # fmt: skip
    nonces, *buckets = map(int, final)
    assert nonces == sum(buckets) and nonces > saved["nonces"]
    assert buckets[0] > saved["buckets"]["accepted"]  # counting went on from the saved figures
