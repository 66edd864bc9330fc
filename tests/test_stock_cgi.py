"""The stock Antminer CGI pages over a real loopback socket: digest auth (realm, lockout), the
shapes pyasic reads, writes only from write_allow, set_miner_conf (form and JSON), blink, reboot,
and no JSON on unknown paths (pyasic would re-type the board as MaraFW)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from fleet_fakes import CHIPS, FANS, POOL_A, POOL_B, TEMPS, FakeControls, l3plus_state

from agent.api.httpserver import HTTPServer
from agent.api.stock_cgi import StockCgiOptions, register

pytestmark = pytest.mark.timeout(60)

PASSWORD = "owner-pw-1"
LOOPBACK = ("127.0.0.0/8",)
ELSEWHERE = ("10.9.8.0/24",)


class Client:
    """HTTP/1.1 with digest auth (MD5, qop=auth), one connection per request."""

    def __init__(self, port: int, user: str = "root", password: str = PASSWORD) -> None:
        self.port, self.user, self.password = port, user, password
        self.nc = 0

    async def raw(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        h = {"Host": "127.0.0.1", "Connection": "close", "Content-Length": str(len(body)),
             **(headers or {})}  # fmt: skip
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
        writer.write(head.encode() + b"\r\n" + body)
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        head_b, _, rest = data.partition(b"\r\n\r\n")
        lines = head_b.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        return status, hdrs, rest

    def _authorization(self, challenge: str, method: str, path: str) -> str:
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
        self.nc += 1
        nc, cnonce = f"{self.nc:08x}", os.urandom(8).hex()
        md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
        ha1 = md5(f"{self.user}:{params['realm']}:{self.password}")
        ha2 = md5(f"{method}:{path}")
        resp = md5(f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{ha2}")
        return (f'Digest username="{self.user}", realm="{params["realm"]}", '
                f'nonce="{params["nonce"]}", uri="{path}", qop=auth, nc={nc}, '
                f'cnonce="{cnonce}", response="{resp}", opaque="{params["opaque"]}", '
                f"algorithm=MD5")  # fmt: skip

    async def call(
        self, method: str, page: str, body: bytes = b"", ctype: str = ""
    ) -> tuple[int, Any]:
        path = f"/cgi-bin/{page}.cgi"
        extra = {"Content-Type": ctype} if ctype else {}
        status, hdrs, _ = await self.raw(method, path, body, extra)
        assert status == 401
        auth = self._authorization(hdrs["www-authenticate"], method, path)
        status, hdrs, data = await self.raw(method, path, body, {**extra, "Authorization": auth})
        if hdrs.get("content-type", "").startswith("application/json"):
            return status, json.loads(data)
        return status, data

    async def get(self, page: str) -> Any:
        status, data = await self.call("GET", page)
        assert status == 200, (page, status, data)
        return data

    async def post_form(self, page: str, form: dict[str, str]) -> tuple[int, Any]:
        return await self.call("POST", page, urlencode(form).encode(),
                               "application/x-www-form-urlencoded")  # fmt: skip

    async def post_json(self, page: str, doc: dict[str, Any]) -> tuple[int, Any]:
        return await self.call("POST", page, json.dumps(doc).encode(), "application/json")


def serve(
    test: Callable[[int, FakeControls], Awaitable[None]],
    *,
    write_allow: tuple[str, ...] = LOOPBACK,
    password: str = PASSWORD,
) -> FakeControls:
    controls = FakeControls()

    async def run() -> None:
        server = HTTPServer("127.0.0.1", 0)
        options = StockCgiOptions(password=password, macaddr="02:00:5e:10:20:30",
                                  hostname="rig-1", serial="SN1", read_allow=LOOPBACK,
                                  write_allow=write_allow, login_max_failures=3)  # fmt: skip
        register(server, l3plus_state(), controls, options)
        async with server:
            await test(server.port, controls)

    asyncio.run(run())
    return controls


def test_pages_need_digest_auth_with_the_antminer_realm() -> None:
    async def t(port: int, controls: FakeControls) -> None:
        c = Client(port)
        status, hdrs, body = await c.raw("GET", "/cgi-bin/get_system_info.cgi")
        assert status == 401
        assert hdrs["www-authenticate"].startswith('Digest realm="antMiner Configuration"')
        assert not body.lstrip().startswith(b"{")
        wrong = Client(port, password="root")
        status, _ = await wrong.call("GET", "get_system_info")
        assert status == 401
        status, _ = await Client(port, user="admin").call("GET", "get_system_info")
        assert status == 401
        status, _ = await wrong.call("GET", "get_system_info")
        # three failures: locked out, even with the right password
        status, hdrs, _ = await c.raw("GET", "/cgi-bin/get_system_info.cgi")
        assert status == 429 and "retry-after" in hdrs

    serve(t)


def test_an_empty_password_refuses_everyone() -> None:
    async def t(port: int, controls: FakeControls) -> None:
        status, _ = await Client(port, password="").call("GET", "get_system_info")
        assert status == 401

    serve(t, password="")


def test_unknown_paths_never_answer_json() -> None:
    async def t(port: int, controls: FakeControls) -> None:
        for path in ("/kaonsu/v1/brief", "/cgi-bin/nope.cgi", "/api/v1/summary"):
            status, hdrs, body = await Client(port).raw("GET", path)
            assert status == 404
            assert "json" not in hdrs.get("content-type", "")
            assert not body.lstrip().startswith((b"{", b"["))

    serve(t)


def test_read_pages_have_the_fields_pyasic_reads_in_true_ghs() -> None:
    snap = l3plus_state().snapshot()

    async def t(port: int, controls: FakeControls) -> None:
        c = Client(port)
        info = await c.get("get_system_info")
        assert info["minertype"] == "Antminer L3+"
        assert info["macaddr"] == "02:00:5E:10:20:30" and info["hostname"] == "rig-1"
        assert info["serinum"] == "SN1"

        conf = await c.get("get_miner_conf")
        assert [p["url"] for p in conf["pools"]] == [POOL_A, POOL_B, ""]
        assert all(p["pass"] == "" for p in conf["pools"])  # never the pool password
        assert conf["bitmain-work-mode"] == "0" and conf["bitmain-fan-ctrl"] is False

        stats = (await c.get("stats"))["STATS"][0]
        assert stats["fan"] == list(FANS)
        assert stats["rate_5s"] == pytest.approx(snap["hashrate_hs"] / 1e9)
        for chain, want, t_ in zip(stats["chain"], snap["chains"], TEMPS, strict=True):
            assert chain["asic_num"] == CHIPS and chain["sn"]
            assert chain["rate_real"] == pytest.approx(want["hashrate_hs"] / 1e9)
            assert chain["temp_chip"] == [t_, t_] and chain["temp_pcb"] == [t_, t_]

        summary = (await c.get("summary"))["SUMMARY"][0]
        assert {s["type"]: s["status"] for s in summary["status"]} == {
            "rate": "s", "network": "s", "fans": "s", "temp": "s"}  # fmt: skip
        assert await c.get("get_blink_status") == {"blink": False}
        assert controls.calls == []

    serve(t)


def test_writes_from_an_allowed_address_reach_the_controls() -> None:
    async def t(port: int, controls: FakeControls) -> None:
        c = Client(port)
        # the old (L3+) client: forms
        status, data = await c.post_form("blink", {"action": "startBlink"})
        assert (status, data) == (200, {"isBlinking": True})
        assert controls.calls[-1] == ("locate", (True,))
        status, data = await c.post_form("blink", {"action": "onPageLoaded"})
        assert data == {"isBlinking": True}
        assert await c.get("get_blink_status") == {"blink": True}
        status, data = await c.post_form("blink", {"action": "stopBlink"})
        assert data == {"isBlinking": False}
        # the modern client: JSON
        status, data = await c.post_json("blink", {"blink": "true"})
        assert data == {"code": "B000"}

        form = {"_ant_pool1url": POOL_B, "_ant_pool1user": "wallet.rig1", "_ant_pool1pw": "x",
                "_ant_pool2url": "stratum+tcp://127.0.0.9:3333", "_ant_pool2user": "w.r2",
                "_ant_pool2pw": "secret-pw", "_ant_pool3url": "", "_ant_pool3user": "",
                "_ant_pool3pw": ""}  # fmt: skip
        status, data = await c.post_form("set_miner_conf", form)
        assert (status, data["code"]) == (200, "M000")
        assert [(p["url"], p["user"]) for p in controls.pools()] == [
            (POOL_B, "wallet.rig1"), ("stratum+tcp://127.0.0.9:3333", "w.r2")]  # fmt: skip
        assert "secret-pw" not in repr(controls.calls)

        status, data = await c.post_json("set_miner_conf", {"miner-mode": 1, "pools": []})
        assert data["code"] == "M000" and controls.calls[-1][0] == "pause"
        assert len(controls.pools()) == 2  # an empty pool list never wipes the pools
        status, data = await c.post_json("set_miner_conf", {"miner-mode": "0"})
        assert controls.calls[-1][0] == "resume"

        status, data = await c.post_form("set_miner_conf", {"_ant_pool1url": "tcp://bad:1"})
        assert status == 400 and data["stats"] == "error"

        controls.called.clear()
        status, data = await c.call("GET", "reboot")
        assert status == 200 and isinstance(data, dict)
        await asyncio.wait_for(controls.called.wait(), 5)
        assert controls.calls[-1] == ("restart", ())

    serve(t)


def test_writes_from_outside_write_allow_are_refused_but_reads_work() -> None:
    async def t(port: int, controls: FakeControls) -> None:
        c = Client(port)
        assert (await c.post_form("blink", {"action": "startBlink"}))[0] == 403
        assert (await c.post_json("blink", {"blink": "true"}))[0] == 403
        # pages that only write are refused before any login
        status, _, _ = await c.raw("POST", "/cgi-bin/set_miner_conf.cgi", b"_ant_pool1url=x")
        assert status == 403
        status, _, _ = await c.raw("GET", "/cgi-bin/reboot.cgi")
        assert status == 403
        assert (await c.post_form("blink", {"action": "onPageLoaded"})) == (
            200, {"isBlinking": False})  # fmt: skip
        assert (await c.get("get_system_info"))["minertype"] == "Antminer L3+"

    controls = serve(t, write_allow=ELSEWHERE)
    assert controls.calls == []
