"""board.kind = "remote": one agent supervises another through real pyasic (PyPI, 0.79).

The remote is a running MiningService on the emulated L3+ (4 x 72) serving its stock CGI pages on
127.0.0.1:80 and the cgminer API on 127.0.0.1:4028 (pyasic only talks to those fixed ports, so
nothing else may use them at the same time: pytest runs these tests one after another). The
supervisor is a MiningService with kind = "remote" and host = "127.0.0.1" in the same loop: its
snapshot shows the remote's boards and hashrate; its pause and resume pause and resume the remote,
confirmed by re-reading it; a remote that ignores a pause, or stops answering, is a failed action
and an unknown state, never a success.

pyasic is a peer: missing, the test skips, or fails when REQUIRE_PEERS=1 (as CI sets)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import ModuleType

import pytest
from test_pyasic import require_port, require_pyasic

from agent.api.controls import ControlError
from agent.config import loads
from agent.emulator.pool import FixedDifficulty, StratumPool
from agent.sdnotify import Notifier
from agent.service import MiningService

pytestmark = [pytest.mark.peers, pytest.mark.timeout(240)]

REMOTE_PASSWORD = "remote-owner-pw-5c1e"
WAIT_S = 60


@pytest.fixture
def pyasic(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    mod = require_pyasic()
    require_port(80)
    require_port(4028)
    monkeypatch.setenv("DOGE_AGENT_REMOTE_PASSWORD", REMOTE_PASSWORD)
    return mod


async def until(check, what: str, timeout_s: float = WAIT_S) -> None:  # type: ignore[no-untyped-def]
    """Polls `check()` against a deadline (reading counters, not synchronising)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def remote_agent_config(tmp_path: Path, pool_port: int) -> str:
    return (
        '[api]\nhttp_listen = "127.0.0.1:80"\ncgminer_listen = "127.0.0.1:4028"\n'
        f'password = "{REMOTE_PASSWORD}"\n'
        f'[agent]\nstate_dir = "{tmp_path / "remote"}"\n'
        f'[[pools]]\nurl = "stratum+tcp://127.0.0.1:{pool_port}"\nuser = "w.remote"\n'
        '[board]\nkind = "emulated"\nchains = 4\nchips_per_chain = 72\n'
    )


def supervisor_config(tmp_path: Path) -> str:
    return (
        '[api]\nhttp_listen = "127.0.0.1:0"\ncgminer_listen = "127.0.0.1:0"\n'
        f'[agent]\nstate_dir = "{tmp_path / "supervisor"}"\n'
        '[board]\nkind = "remote"\nhost = "127.0.0.1"\n'
    )


def test_remote_board_reads_pauses_and_resumes_a_second_agent(
    pyasic: ModuleType, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        pool = StratumPool(policy=FixedDifficulty(1 / 256))
        await pool.start()
        remote = MiningService(loads(remote_agent_config(tmp_path, pool.port)),
                               notifier=Notifier({}))  # fmt: skip
        remote_stop = asyncio.Event()
        remote_run = asyncio.create_task(remote.run(remote_stop))
        sup = MiningService(loads(supervisor_config(tmp_path)), notifier=Notifier({}))
        sup_stop = asyncio.Event()
        sup_run: asyncio.Task[int] | None = None
        try:
            await asyncio.wait_for(remote.ready.wait(), WAIT_S)
            await until(
                lambda: remote.state.snapshot()["hashrate_hs"] > 0
                and [c["chips"] for c in remote.state.snapshot()["chains"]] == [72] * 4,
                "the remote agent to mine on 4 x 72 chips",
            )

            sup_run = asyncio.create_task(sup.run(sup_stop))
            await asyncio.wait_for(sup.ready.wait(), WAIT_S)
            assert sup.pools is None, "a remote board must not connect to pools itself"
            rm = sup.remote
            assert rm is not None and sup.units == [rm]
            assert type(rm.miner).__name__ == "BMMinerL3Plus" or rm.miner is None
            rm.poll_interval_s = 1.0
            await until(
                lambda: [c["chips"] for c in sup.state.snapshot()["chains"]] == [72] * 4
                and sup.state.snapshot()["hashrate_hs"] > 0,
                "the supervisor's snapshot to show the remote's 4 x 72 boards",
            )
            assert type(rm.miner).__name__ == "BMMinerL3Plus"

            # the snapshot is the remote's: boards, temperatures, fans, pools, hashrate
            before = remote.state.snapshot()
            await asyncio.wait_for(rm.polled.wait(), WAIT_S)
            mine = sup.state.snapshot()
            after = remote.state.snapshot()
            assert [c["id"] for c in mine["chains"]] == [0, 1, 2, 3]
            for got, b, a in zip(mine["chains"], before["chains"], after["chains"], strict=True):
                # a chain's reading may be missing for a moment (a chain still booting): None
                seen = [t for t in (b["temp_c"], a["temp_c"]) if t is not None]
                if got["temp_c"] is None:  # only if the remote had none at one of the ends
                    assert len(seen) < 2, (got, b, a)
                    continue
                assert seen and round(min(seen)) - 1 <= got["temp_c"] <= round(max(seen)) + 1
            b, a = before, after
            assert len(mine["fans"]) == 2, mine["fans"]
            for i, got in enumerate(mine["fans"]):
                lo, hi = sorted(((b["fans"][i]["rpm"] or 0), (a["fans"][i]["rpm"] or 0)))
                # fans follow the remote's thermal loop: the same order, not the same instant
                assert 0.5 * lo <= got["rpm"] <= 1.5 * hi + 100, (got, b["fans"], a["fans"])
            urls = [p["url"] for p in mine["pools"]]
            assert urls == [f"stratum+tcp://127.0.0.1:{pool.port}"]
            lo = min(before["hashrate_hs"], after["hashrate_hs"])
            hi = max(before["hashrate_hs"], after["hashrate_hs"])
            # the supervisor averages its reads over the hashrate window: the same order
            assert 0.5 * lo <= mine["hashrate_hs"] <= 1.5 * hi, (mine["hashrate_hs"], lo, hi)
            assert rm.reading is not None and rm.reading.uptime_s is not None
            assert rm.reading.uptime_s <= int(remote.state.snapshot()["uptime_s"]) + 1
            assert rm.reading.is_mining is True

            # pause: the remote stops (DC-DC off), confirmed by re-reading it
            assert await sup.controls.pause("test: guardian says pause") == "paused"
            assert sup.paused and remote.paused
            assert remote.state.snapshot()["guardian"]["state"] == "paused"
            assert not any(p.dc_dc_on for p in remote.emulator.peripherals.pics)
            assert sup.state.snapshot()["guardian"]["state"] == "paused"
            assert (await rm.refresh()).is_mining is False

            # resume: the remote mines again
            assert await sup.controls.resume("test: guardian says mine") == "resumed"
            assert not sup.paused and not remote.paused
            assert all(p.dc_dc_on for p in remote.emulator.peripherals.pics)
            assert (await rm.refresh()).is_mining is True
            nonces = remote.state.snapshot()["nonces"]
            await until(lambda: remote.state.snapshot()["nonces"] > nonces, "a nonce after resume")

            # a remote that ignores the pause: pyasic's call "succeeds", the re-read says no
            async def ignore(reason: str) -> None:
                return None

            remote.pause = ignore  # type: ignore[method-assign]
            rm.confirm_tries = 2
            with pytest.raises(ControlError, match="pause failed: it still reports mining"):
                await sup.controls.pause("test: ignored")
            assert not sup.paused and sup.state.snapshot()["guardian"]["state"] != "paused"
            del remote.pause

            # a remote that stops answering: unknown state, retried, pause fails
            remote_stop.set()
            assert await asyncio.wait_for(remote_run, WAIT_S) == 0
            await until(lambda: rm.reachable is False, "the supervisor to notice the silence")
            snap = sup.state.snapshot()
            assert all(c["chips"] == 0 and c["temp_c"] is None for c in snap["chains"])
            assert all(f["rpm"] is None for f in snap["fans"])
            assert any("does not answer" in e["message"] for e in snap["events"])
            with pytest.raises(ControlError, match="pause failed"):
                await sup.controls.pause("test: nobody home")
            assert not sup.paused
            assert not sup_run.done(), "an unreachable remote must not stop the service"
        finally:
            sup_stop.set()
            remote_stop.set()
            if sup_run is not None:
                assert await asyncio.wait_for(sup_run, WAIT_S) == 0
            await asyncio.wait_for(remote_run, WAIT_S)
            await pool.stop()
        assert REMOTE_PASSWORD not in caplog.text

    asyncio.run(main())


def test_remote_without_pyasic_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyasic is optional: missing, a remote board refuses to start and says what to install."""
    import builtins

    from agent.hardware import remote

    real_import = builtins.__import__

    def no_pyasic(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "pyasic" or name.startswith("pyasic."):
            raise ImportError("No module named 'pyasic'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyasic)
    monkeypatch.setattr(remote.importlib, "import_module", lambda n: no_pyasic(n))
    with pytest.raises(RuntimeError, match=r"pip install doge-agent\[remote\]"):
        remote.load_pyasic()


# ------------------------------------------------------------------ control, without a network


class LyingMiner:
    """A miner whose control calls all report success and change nothing (pyasic's trap)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def stop_mining(self) -> bool:
        self.calls.append("stop_mining")
        return True

    async def resume_mining(self) -> bool:
        self.calls.append("resume_mining")
        return True

    async def is_mining(self) -> bool:
        return True


def make_remote(miner: object) -> object:
    from agent.hardware.remote import RemoteMiner
    from agent.state import State

    rm = RemoteMiner("127.0.0.1", State(), confirm_tries=2)
    rm.miner = miner
    return rm


def test_a_reported_success_that_changed_nothing_is_a_failure() -> None:
    require_pyasic()
    from agent.hardware.remote import ACTION_TRIES, RemoteError

    miner = LyingMiner()
    rm = make_remote(miner)
    with pytest.raises(RemoteError, match="pause failed: it still reports mining"):
        asyncio.run(rm.pause("test"))  # type: ignore[attr-defined]
    assert miner.calls == ["stop_mining"] * ACTION_TRIES
    events = rm.state.snapshot()["events"]  # type: ignore[attr-defined]
    assert any("pause failed" in e["message"] for e in events)


def test_modern_antminer_pause_never_writes_a_config_without_pools() -> None:
    """pyasic's own stop_mining re-sends get_config(), empty pools and all when that read
    failed: the remote board reads the config itself and refuses to write it without pools."""
    require_pyasic()
    from pyasic.config import MinerConfig
    from pyasic.config.pools import Pool, PoolConfig
    from pyasic.miners.antminer import BMMinerL7

    from agent.hardware.remote import RemoteError

    sent: list[object] = []
    mining = [True]

    async def empty_config() -> object:
        return MinerConfig()

    async def send_config(cfg: object, user_suffix: str | None = None) -> None:
        sent.append(cfg)
        mining[0] = type(cfg.mining_mode).__name__ != "MiningModeSleep"  # type: ignore[attr-defined]

    async def is_mining() -> bool:
        return mining[0]

    miner = BMMinerL7("127.0.0.1")
    miner.get_config = empty_config  # type: ignore[method-assign]
    miner.send_config = send_config  # type: ignore[method-assign]
    miner.is_mining = is_mining  # type: ignore[method-assign]
    rm = make_remote(miner)
    rm.miner = miner  # type: ignore[attr-defined]
    with pytest.raises(RemoteError, match="without pools"):
        asyncio.run(rm.pause("test"))  # type: ignore[attr-defined]
    assert sent == [] and mining[0]

    async def good_config() -> object:
        pool = Pool(url="stratum+tcp://127.0.0.1:3333", user="w.1", password="x")
        return MinerConfig(pools=PoolConfig.simple([pool]))

    miner.get_config = good_config  # type: ignore[method-assign]
    asyncio.run(rm.pause("test"))  # type: ignore[attr-defined]
    assert len(sent) == 1 and not mining[0]
    asyncio.run(rm.resume("test"))  # type: ignore[attr-defined]
    assert len(sent) == 2 and mining[0]


def test_remote_board_without_pyasic_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from agent.hardware import remote

    def missing() -> None:
        raise RuntimeError(f'board.kind = "remote" needs pyasic: {remote.INSTALL_HINT}')

    monkeypatch.setattr(remote, "load_pyasic", missing)
    service = MiningService(loads(supervisor_config(tmp_path)), notifier=Notifier({}),
                            serve_surfaces=False)  # fmt: skip
    assert asyncio.run(service.run(asyncio.Event())) == 1
    assert "pip install doge-agent[remote]" in caplog.text
