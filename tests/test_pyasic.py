"""Real pyasic (PyPI, 0.79) reads the agent as a stock Antminer L3+: the cgminer API on
127.0.0.1:4028 and the stock CGI pages on 127.0.0.1:80 (pyasic only knows these fixed ports), fed
by a State like a 4 x 72 L3+. get_miner() must pick BMMinerL3Plus; get_data() must match the
snapshot; fault_light_on() must reach Controls.locate(True).

pyasic is a peer: missing, the test skips, or fails when REQUIRE_PEERS=1 (as CI sets)."""

from __future__ import annotations

import asyncio
import errno
import importlib
import os
import socket
import warnings
from types import ModuleType

import pytest
from fleet_fakes import CHIPS, FANS, POOL_A, POOL_B, TEMPS, UPTIME_S, FakeControls, l3plus_state

from agent.api.cgminer import CgminerOptions, CgminerServer
from agent.api.httpserver import HTTPServer
from agent.api.stock_cgi import StockCgiOptions, register
from agent.security.access import AccessPolicy

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]

OWNER_PASSWORD = "owner-pw-7f3a"
MAC = "02:00:5E:10:20:30"
LOOPBACK = ["127.0.0.0/8"]


def require_pyasic() -> ModuleType:
    """pyasic, or skip; with REQUIRE_PEERS=1 a missing pyasic is a failure, never a skip."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydantic/passlib deprecation noise on import
            return importlib.import_module("pyasic")
    except ImportError:
        msg = "pyasic is not installed (pip install 'pyasic>=0.79,<0.80', the test extra)"
        if os.environ.get("REQUIRE_PEERS") == "1":
            pytest.fail(msg + "; REQUIRE_PEERS=1 makes this a failure")
        pytest.skip(msg)


def require_port(port: int) -> None:
    """Fail with a clear message when 127.0.0.1:port cannot be bound (taken, or not root)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            why = "already in use" if e.errno == errno.EADDRINUSE else f"not bindable ({e})"
            pytest.fail(
                f"127.0.0.1:{port} is {why}: pyasic only talks to the fixed ports 80 and 4028, "
                "so this test needs both free (and root, or CAP_NET_BIND_SERVICE, for port 80)"
            )


@pytest.fixture
def pyasic() -> ModuleType:
    mod = require_pyasic()
    require_port(80)
    require_port(4028)
    mod.settings.update("default_antminer_web_password", OWNER_PASSWORD)
    return mod


async def _serve(controls: FakeControls):
    state = l3plus_state()
    policy = AccessPolicy(LOOPBACK, LOOPBACK)
    cgminer = CgminerServer(state, controls, policy, CgminerOptions(listen="127.0.0.1:4028"))
    http = HTTPServer("127.0.0.1", 80, name="stock-cgi-test")
    options = StockCgiOptions(
        password=OWNER_PASSWORD, macaddr=MAC, hostname="doge-rig-01",
        read_allow=tuple(LOOPBACK), write_allow=tuple(LOOPBACK),
    )  # fmt: skip
    register(http, state, controls, options)
    await cgminer.start()
    await http.start()
    return state, cgminer, http


def test_pyasic_reads_the_agent_as_an_l3plus(pyasic: ModuleType) -> None:

    async def run() -> None:
        controls = FakeControls()
        state, cgminer, http = await _serve(controls)
        try:
            miner = await pyasic.get_miner("127.0.0.1")
            assert miner is not None, "pyasic did not recognise the agent"
            assert type(miner).__name__ == "BMMinerL3Plus", type(miner).__mro__
            data = await miner.get_data()
            snap = state.snapshot()

            # hashrate: the sum of the boards, each from chain_rateN in GH/s
            want_ghs = snap["hashrate_hs"] / 1e9
            got_ghs = float(data.hashrate.into(data.hashrate.unit.GH))
            assert got_ghs == pytest.approx(want_ghs, rel=1e-4)

            assert len(data.hashboards) == 4
            for board, chain in zip(data.hashboards, snap["chains"], strict=True):
                assert board.chips == chain["chips"] == CHIPS
                assert not board.missing
                assert board.temp == round(chain["temp_c"])
                assert board.chip_temp == round(chain["temp_c"])
                rate = float(board.hashrate.into(board.hashrate.unit.GH))
                assert rate == pytest.approx(chain["hashrate_hs"] / 1e9, rel=1e-4)
            assert [b.temp for b in data.hashboards] == [round(t) for t in TEMPS]
            assert data.total_chips == 4 * CHIPS

            assert [f.speed for f in data.fans] == list(FANS)
            assert data.uptime == int(UPTIME_S) == int(snap["uptime_s"])
            assert data.mac == MAC

            urls = [str(p.url) for p in data.pools]
            assert urls == [POOL_A, POOL_B]
            assert data.pools[0].accepted == snap["pools"][0]["accepted"]
            assert data.pools[0].user == "wallet.rig1"
            assert data.pools[0].active and data.pools[0].alive

            # config came from get_miner_conf.cgi: the pools, never their passwords
            conf_urls = [p.url for g in data.config.pools.groups for p in g.pools if p.url]
            assert conf_urls == [POOL_A, POOL_B]

            assert await miner.fault_light_on() is True
            assert ("locate", (True,)) in controls.calls
            assert await miner.fault_light_off() is False
            assert controls.calls[-1] == ("locate", (False,))

            # reboot.cgi restarts the mining service (answered first, then done)
            controls.called.clear()
            assert await miner.reboot() is True
            await asyncio.wait_for(controls.called.wait(), 5)
            assert controls.calls[-1] == ("restart", ())

            # pool changes through the old (form) set_miner_conf.cgi
            config = await miner.get_config()
            config.pools.groups[0].pools.reverse()
            await miner.send_config(config)
            assert [p["url"] for p in controls.pools()] == [POOL_B, POOL_A]
            assert controls.names().count("add_pool") == 0  # same url+user: passwords kept
        finally:
            await http.stop()
            await cgminer.stop()

    asyncio.run(run())
