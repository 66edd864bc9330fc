"""Real pyasic (PyPI, 0.79) against a RUNNING agent: the MiningService on the emulated L3+ (4 x 72
chips) mining through the local pool, its stock CGI pages on 127.0.0.1:80 and its cgminer API on
127.0.0.1:4028 (pyasic only talks to those fixed ports, so nothing else may use them at the same
time: pytest runs these tests one after another).

get_miner("127.0.0.1") must pick BMMinerL3Plus; get_data() must match /api/status read just before
and just after it (hashrate, 4 boards x 72 chips, temperatures, fans, pools, uptime: a live agent
moves between two reads, so each value must lie between them, with a small margin);
fault_light_on() must turn the board's LEDs to the locate pattern.

pyasic is a peer: missing, the test skips, or fails when REQUIRE_PEERS=1 (as CI sets)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from test_pyasic import require_port, require_pyasic
from test_service import http

from agent.config import loads
from agent.emulator.pool import FixedDifficulty, StratumPool
from agent.sdnotify import Notifier
from agent.service import MiningService

pytestmark = [pytest.mark.peers, pytest.mark.timeout(240)]

OWNER_PASSWORD = "owner-pw-agent-91d2"
WAIT_S = 60


@pytest.fixture
def pyasic() -> ModuleType:
    mod = require_pyasic()
    require_port(80)
    require_port(4028)
    mod.settings.update("default_antminer_web_password", OWNER_PASSWORD)
    return mod


def between(got: float, a: float, b: float, rel: float = 0.0, abs_: float = 0.0) -> bool:
    lo, hi = sorted((a, b))
    return lo - abs(lo) * rel - abs_ <= got <= hi + abs(hi) * rel + abs_


def test_pyasic_reads_and_locates_a_running_agent(pyasic: ModuleType, tmp_path: Path) -> None:
    async def main() -> None:
        pool = StratumPool(policy=FixedDifficulty(1 / 256))
        await pool.start()
        pool_url = f"stratum+tcp://127.0.0.1:{pool.port}"
        conf = loads(
            '[api]\nhttp_listen = "127.0.0.1:80"\ncgminer_listen = "127.0.0.1:4028"\n'
            f'password = "{OWNER_PASSWORD}"\n'
            f'[agent]\nstate_dir = "{tmp_path}"\n'
            f'[[pools]]\nurl = "{pool_url}"\nuser = "w.agent"\n'
            '[board]\nkind = "emulated"\nchains = 4\nchips_per_chain = 72\n'
        )
        service = MiningService(conf, notifier=Notifier({}))
        stop = asyncio.Event()
        runner = asyncio.create_task(service.run(stop))
        loop = asyncio.get_running_loop()

        async def status() -> dict[str, Any]:
            code, body = await loop.run_in_executor(None, lambda: http(80, "/api/status"))
            assert code == 200, body
            return json.loads(body)

        try:
            await asyncio.wait_for(service.ready.wait(), WAIT_S)
            deadline = loop.time() + WAIT_S
            while loop.time() < deadline:
                snap = service.state.snapshot()
                if (
                    snap["shares"]["accepted"] >= 3
                    and [c["chips"] for c in snap["chains"]] == [72] * 4
                    and all(c["temp_c"] is not None for c in snap["chains"])
                ):
                    break
                await asyncio.sleep(0.1)  # polling counters against a deadline
            else:
                raise AssertionError(f"the agent did not get going: {service.state.snapshot()}")

            miner = await pyasic.get_miner("127.0.0.1")
            assert miner is not None, "pyasic did not recognise the running agent"
            assert type(miner).__name__ == "BMMinerL3Plus", type(miner).__mro__

            before = await status()
            data = await miner.get_data()
            after = await status()

            # hashrate: pyasic sums chain_rateN, GH/s with 6 decimals, so each board is rounded
            # to 1 kH/s: on the emulated board (~120 H/s a chain) that sum reads 0. One rounding
            # step per board is the tolerance here; the summary below is checked tightly.
            got_hs = float(data.hashrate.into(data.hashrate.unit.H))
            assert between(got_hs, before["hashrate_hs"], after["hashrate_hs"], 0.05, 4e3), (
                got_hs, before["hashrate_hs"], after["hashrate_hs"],
            )  # fmt: skip

            # the summary's total (GHS 5s, 9 decimals) is exact to 1 H/s: the same window
            raw_hs = float(data.raw_hashrate.into(data.raw_hashrate.unit.H))
            assert between(raw_hs, before["hashrate_hs"], after["hashrate_hs"], 0.02, 1), (
                raw_hs, before["hashrate_hs"], after["hashrate_hs"],
            )  # fmt: skip

            assert len(data.hashboards) == 4
            assert data.total_chips == 4 * 72
            for board, b, a in zip(data.hashboards, before["chains"], after["chains"], strict=True):
                assert board.chips == b["chips"] == a["chips"] == 72
                assert not board.missing
                assert between(board.temp, round(b["temp_c"]), round(a["temp_c"]), abs_=1)
                assert between(board.chip_temp, round(b["temp_c"]), round(a["temp_c"]), abs_=1)

            assert len(data.fans) == len(before["fans"]) == 2
            for fan, b, a in zip(data.fans, before["fans"], after["fans"], strict=True):
                assert between(fan.speed, b["rpm"], a["rpm"], 0.1, 50), (fan, b, a)

            assert between(data.uptime, int(before["uptime_s"]), int(after["uptime_s"]), abs_=1)

            assert [str(p.url) for p in data.pools] == [p["url"] for p in after["pools"]]
            assert [str(p.url) for p in data.pools] == [pool_url]
            p0 = data.pools[0]
            assert p0.user == "w.agent" and p0.alive and p0.active
            assert before["pools"][0]["accepted"] <= p0.accepted <= after["pools"][0]["accepted"]
            assert data.is_mining

            # the locate pattern on the board's LEDs, through blink.cgi
            assert await miner.fault_light_on() is True
            assert service.board is not None and service.board.green.pattern == "locate"
            assert service.controls.locating()
            assert await miner.fault_light_off() is False
            assert service.board.green.pattern != "locate"
        finally:
            stop.set()
            assert await asyncio.wait_for(runner, WAIT_S) == 0
            await pool.stop()

    asyncio.run(main())
