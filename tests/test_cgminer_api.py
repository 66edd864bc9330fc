"""The cgminer-compatible API over real loopback sockets: every command's reply shape and wire
format (JSON, NUL, close), joins, plain text, privileged commands by address, garbage, oversize and
slow requests, and a property test over random request bytes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fleet_fakes import CHIPS, FANS, POOL_A, POOL_B, TEMPS, UPTIME_S, FakeControls, l3plus_state
from hypothesis import given
from hypothesis import strategies as st

from agent.api.cgminer import CgminerAPI, CgminerOptions, CgminerServer
from agent.security.access import AccessPolicy

pytestmark = pytest.mark.timeout(60)

LOOPBACK = ["127.0.0.0/8"]
ELSEWHERE = ["10.9.8.0/24"]
# pyasic's socket probe keywords (pyasic-compat.md §2.2): version must only hit ANTMINER
VENDOR_WORDS = ("BOSMINER", "BOSER", "BTMINER", "BITMICRO", "LUXMINER", "HIVEON", "KAONSU",
                "RWGLR", "INTCHAINS_QOMO", "KDAMINER", "BFGMINER", "INNOMINER", "AVALON",
                "GCMINER", "FLUXOS", "VNISH")  # fmt: skip


async def request(port: int, data: bytes, *, eof: bool = False) -> bytes:
    """Send `data` (no newline, no half-close, like pyasic) and read the reply to EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if data:
            writer.write(data)
            await writer.drain()
        if eof:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def parse(reply: bytes) -> dict[str, Any]:
    assert reply.endswith(b"\x00"), reply[-20:]
    assert reply.count(b"\x00") == 1
    body = json.loads(reply[:-1])
    assert isinstance(body, dict)
    return body


def status(body: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(body["STATUS"], list) and len(body["STATUS"]) == 1
    st_ = body["STATUS"][0]
    assert set(st_) == {"STATUS", "When", "Code", "Msg", "Description"}
    assert body["id"] == 1
    return st_


def serve(
    test: Callable[[int, FakeControls, CgminerServer], Awaitable[None]],
    *,
    write_allow: list[str] = LOOPBACK,
    read_allow: list[str] = LOOPBACK,
    **options: Any,
) -> FakeControls:
    controls = FakeControls()

    async def run() -> None:
        policy = AccessPolicy(read_allow, write_allow)
        opts = CgminerOptions(listen="127.0.0.1:0", **options)
        async with CgminerServer(l3plus_state(), controls, policy, opts) as server:
            await test(server.port, controls, server)

    asyncio.run(run())
    return controls


def cmd(command: str, parameter: Any = None, **extra: Any) -> bytes:
    req: dict[str, Any] = {"command": command, **extra}
    if parameter is not None:
        req["parameter"] = parameter
    return json.dumps(req).encode()


# ---------------------------------------------------------------------------- report commands

REPORTS = {
    "version": (22, "VERSION"),
    "summary": (11, "SUMMARY"),
    "pools": (7, "POOLS"),
    "devs": (9, "DEVS"),
    "stats": (70, "STATS"),
    "devdetails": (69, "DEVDETAILS"),
    "config": (33, "CONFIG"),
}


def test_every_report_command_has_cgminer_shape_nul_and_close() -> None:
    async def t(port: int, controls: FakeControls, server: CgminerServer) -> None:
        for name, (code, section) in REPORTS.items():
            body = parse(await request(port, cmd(name)))
            s = status(body)
            assert (s["STATUS"], s["Code"], s["Description"]) == ("S", code, "cgminer 4.9.0")
            assert isinstance(body[section], list) and body[section], name
        assert controls.calls == []

    serve(t)


def test_version_names_the_l3plus_and_nothing_else() -> None:
    async def t(port: int, *_: Any) -> None:
        version = await request(port, cmd("version"))
        v = parse(version)["VERSION"][0]
        assert v["Type"] == "Antminer L3+"
        assert {"CGMiner", "API", "Miner", "CompileTime"} <= set(v)
        for word in VENDOR_WORDS:
            assert word not in version.upper().decode()
        details = await request(port, cmd("devdetails"))
        for word in (*VENDOR_WORDS, "ANTMINER"):
            assert word not in details.upper().decode()
        rows = parse(details)["DEVDETAILS"]
        assert [r["Chips"] for r in rows] == [CHIPS] * 4

    serve(t)


def test_stats_has_stock_l3plus_fields_in_ghs_and_fans_in_fan3_fan4() -> None:
    snap = l3plus_state().snapshot()

    async def t(port: int, *_: Any) -> None:
        body = parse(await request(port, cmd("stats", new_api=True)))
        head, data = body["STATS"]
        assert head["Type"] == "Antminer L3+"
        assert data["Elapsed"] == int(UPTIME_S)
        assert (data["fan1"], data["fan2"], data["fan3"], data["fan4"]) == (*FANS, *FANS)
        assert data["fan_num"] == 2 and data["miner_count"] == 4 and data["rate_unit"] == "GH"
        assert data["total_rateideal"] == pytest.approx(snap["hashrate_hs"] / 1e9)
        for i, chain in enumerate(snap["chains"], start=1):
            assert data[f"chain_acn{i}"] == CHIPS
            assert data[f"chain_acs{i}"].replace(" ", "") == "o" * CHIPS
            assert data[f"temp{i}"] == data[f"temp2_{i}"] == TEMPS[i - 1]
            assert float(data[f"chain_rate{i}"]) == pytest.approx(
                chain["hashrate_hs"] / 1e9, abs=1e-6
            )
        assert data["chain_hw1"] == 1 and data["temp_max"] == max(TEMPS)

    serve(t)


def test_summary_pools_devs_config_match_the_snapshot() -> None:
    snap = l3plus_state().snapshot()

    async def t(port: int, *_: Any) -> None:
        s = parse(await request(port, cmd("summary")))["SUMMARY"][0]
        assert s["GHS 5s"] == pytest.approx(snap["hashrate_hs"] / 1e9)
        assert s["Elapsed"] == int(UPTIME_S)
        assert s["Accepted"] == snap["shares"]["accepted"]
        assert s["Hardware Errors"] == 1

        body = parse(await request(port, cmd("pools")))
        assert status(body)["Msg"] == "2 Pool(s)"
        pools = body["POOLS"]
        assert [p["URL"] for p in pools] == [POOL_A, POOL_B]
        assert [p["POOL"] for p in pools] == [0, 1]
        assert [p["Stratum Active"] for p in pools] == [True, False]
        assert pools[0]["Status"] == "Alive" and pools[0]["User"] == "wallet.rig1"
        assert pools[0]["Accepted"] == snap["pools"][0]["accepted"]

        devs = parse(await request(port, cmd("devs")))
        assert status(devs)["Msg"] == "4 ASC(s)"
        assert [d["Temperature"] for d in devs["DEVS"]] == list(TEMPS)
        conf = parse(await request(port, cmd("config")))["CONFIG"][0]
        assert conf["ASC Count"] == 4 and conf["Pool Count"] == 2

    serve(t)


def test_joined_commands_wrap_each_reply_and_refuse_the_rest_in_their_slot() -> None:
    async def t(port: int, controls: FakeControls, _: Any) -> None:
        body = parse(await request(port, cmd("summary+pools+bogus++summary+addpool")))
        assert set(body) == {"summary", "pools", "bogus", "addpool", "id"}
        assert body["summary"][0]["STATUS"][0]["Code"] == 11
        assert body["summary"][0]["id"] == 1
        assert body["pools"][0]["POOLS"][0]["URL"] == POOL_A
        assert body["bogus"][0]["STATUS"][0]["STATUS"] == "E"
        assert body["bogus"][0]["STATUS"][0]["Code"] == 14
        assert body["addpool"][0]["STATUS"][0]["Code"] == 45
        # pyasic's get_data batch
        body = parse(await request(port, cmd("pools+version+stats+summary")))
        got = {k: v[0]["STATUS"][0]["STATUS"] for k, v in body.items() if k != "id"}
        assert got == dict.fromkeys(("pools", "version", "stats", "summary"), "S")
        assert controls.calls == []

    serve(t)


def test_plain_text_requests_get_plain_text_replies() -> None:
    async def t(port: int, *_: Any) -> None:
        reply = await request(port, b"summary")
        assert reply.startswith(b"STATUS=S,") and reply.endswith(b"|\x00")
        assert b"|SUMMARY,Elapsed=600," in reply
        reply = await request(port, b"version|\n")
        assert b"Type=Antminer L3+" in reply and reply.endswith(b"|\x00")
        assert (await request(port, b"nonsense")).startswith(b"STATUS=E,")
        assert b"Code=45" in await request(port, b"switchpool|1", eof=True)

    serve(t, write_allow=ELSEWHERE)


# ---------------------------------------------------------------------------- privileged


PRIVILEGED = [
    ("addpool", "stratum+tcp://127.0.0.3:3335,wallet.rig2,secret-pw"),
    ("switchpool", 1),
    ("enablepool", 0),
    ("disablepool", 1),
    ("removepool", 1),
    ("restart", None),
    ("quit", None),
    ("ascset", "0,led,1"),
    ("privileged", None),
]


def test_privileged_commands_are_refused_from_addresses_outside_write_allow() -> None:
    async def t(port: int, controls: FakeControls, _: Any) -> None:
        for name, param in PRIVILEGED:
            reply = await request(port, cmd(name, param))
            s = status(parse(reply))
            assert (s["STATUS"], s["Code"]) == ("E", 45), name
            assert s["Msg"] == f"Access denied to '{name}' command"
            assert b"secret-pw" not in reply
        # reads still work
        assert status(parse(await request(port, cmd("summary"))))["STATUS"] == "S"

    controls = serve(t, write_allow=ELSEWHERE)
    assert controls.calls == []


def test_privileged_commands_from_an_allowed_address_call_the_controls() -> None:
    async def t(port: int, controls: FakeControls, _: Any) -> None:
        async def ok(name: str, param: Any, code: int, msg: str) -> None:
            reply = await request(port, cmd(name, param))
            s = status(parse(reply))
            assert (s["STATUS"], s["Code"], s["Msg"]) == ("S", code, msg), reply
            assert b"secret-pw" not in reply

        await ok("privileged", None, 46, "Privileged access OK")
        await ok("addpool", "stratum+tcp://127.0.0.3:3335,wallet.rig2,secret-pw", 55,
                 "Added pool 'stratum+tcp://127.0.0.3:3335'")  # fmt: skip
        assert controls.calls[-1] == ("add_pool", ("stratum+tcp://127.0.0.3:3335",
                                                   "wallet.rig2", None))  # fmt: skip
        await ok("switchpool", 1, 27, f"Switching to pool 1:'{POOL_B}'")
        assert controls.calls[-1] == ("switch_pool", (1,))
        await ok("disablepool", "2", 48, "Disabling pool 2:'stratum+tcp://127.0.0.3:3335'")
        await ok("enablepool", 2, 47, "Enabling pool 2:'stratum+tcp://127.0.0.3:3335'")
        await ok("removepool", 2, 68, "Removed pool 2:'stratum+tcp://127.0.0.3:3335'")
        assert controls.calls[-1] == ("remove_pool", (2,))
        await ok("ascset", "0,led,1", 119, "ASC 0 set OK")
        assert controls.calls[-1] == ("locate", (True,))
        await ok("ascset", "0,softoff", 119, "ASC 0 set OK")
        assert controls.calls[-1][0] == "pause"

        controls.called.clear()
        assert parse(await request(port, cmd("restart"))) == {"STATUS": "RESTART", "id": 1}
        await asyncio.wait_for(controls.called.wait(), 5)
        assert controls.calls[-1] == ("restart", ())
        controls.called.clear()
        assert parse(await request(port, cmd("quit"))) == {"STATUS": "BYE", "id": 1}
        await asyncio.wait_for(controls.called.wait(), 5)
        assert controls.calls[-1][0] == "pause"

    serve(t)


def test_privileged_errors_use_cgminer_codes() -> None:
    async def t(port: int, controls: FakeControls, _: Any) -> None:
        async def err(name: str, param: Any, code: int, severity: str = "E") -> str:
            s = status(parse(await request(port, cmd(name, param))))
            assert (s["STATUS"], s["Code"]) == (severity, code), (name, param, s)
            return str(s["Msg"])

        assert await err("switchpool", 7, 26) == "Invalid pool id 7 - range is 0 - 1"
        assert await err("enablepool", None, 25) == "Missing pool id parameter"
        assert await err("enablepool", 0, 49, "I") == f"Pool 0:'{POOL_A}' already enabled"
        assert await err("addpool", None, 52) == "Missing addpool details"
        msg = await err("addpool", "onlyaurl", 53)
        assert "onlyaurl" not in msg
        assert "secret" not in await err("addpool", "tcp://x:1,u,secret", 53)
        assert await err("ascset", None, 15) == "Missing device id parameter"
        assert await err("ascset", "9,led,1", 107) == "Invalid ASC id 9 - range is 0 - 3"
        assert await err("ascset", "0", 116) == "Missing option after ASC number"
        await err("ascset", "0,help", 118, "I")
        await err("ascset", "0,frobnicate", 120)
        await controls.remove_pool(1)
        assert await err("removepool", 0, 66) == f"Cannot remove last pool 0:'{POOL_A}'"
        assert await err("disablepool", 0, 51) == f"Cannot disable last active pool 0:'{POOL_A}'"

    serve(t)


def test_clients_outside_read_allow_are_closed_without_a_reply() -> None:
    async def t(port: int, controls: FakeControls, server: CgminerServer) -> None:
        try:
            reply = await request(port, cmd("version"))
        except ConnectionResetError:  # closed with the request unread: the kernel may reset
            reply = b""
        assert reply == b""
        assert server.stats["ignored"] == 1

    serve(t, read_allow=ELSEWHERE)


# ---------------------------------------------------------------------------- hostile input


def test_garbage_is_answered_with_cgminer_errors_never_a_crash() -> None:
    async def t(port: int, controls: FakeControls, server: CgminerServer) -> None:
        async def code(data: bytes) -> int:
            return int(status(parse(await request(port, data)))["Code"])

        assert await code(b"{not json") == 23
        assert await code(b"{}") == 24
        assert await code(b'{"command": 5}') == 24
        assert await code(b'{"command": "summary", "parameter": {"x": 1}}') == 11
        assert await code(b'{"command": "rm -rf"}') == 14
        assert await code(b'{"command": "\\u0000"}') == 14
        assert await code(b"{" + b"[" * 5000 + b"}") == 23
        assert await code(b"{\xff\xfe\x00garbage}") == 23
        # oversize: refused unparsed
        big = cmd("summary", "x" * 9000)
        assert await code(big) == 23
        plain = await request(port, b"summary" + b" " * 9000)
        assert plain.startswith(b"STATUS=E,") and b"Code=14" in plain
        # empty connections (pyasic's network scan) are closed quietly
        assert await request(port, b"", eof=True) == b""
        # still serving
        assert await code(cmd("version")) == 22
        assert controls.calls == []

    serve(t)


def test_a_slow_or_incomplete_request_is_cut_off_by_the_read_timeout() -> None:
    async def t(port: int, controls: FakeControls, server: CgminerServer) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        reply = await request(port, b'{"command": "sum')
        assert status(parse(reply))["Code"] == 23
        assert loop.time() - start < 5
        assert server.stats["timeouts"] == 1
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # silent client: closed
        writer.close()

    serve(t, read_timeout_s=0.3)


PEER_OUTSIDE = "10.1.2.3"
_api = CgminerAPI(l3plus_state(), FakeControls(), AccessPolicy(LOOPBACK, LOOPBACK))


@given(st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.builds(lambda c, p: json.dumps({"command": c, "parameter": p}).encode(),
              st.sampled_from([*REPORTS, *(n for n, _ in PRIVILEGED), "a+b", "+", ""])
              | st.text(max_size=30),
              st.none() | st.integers() | st.floats() | st.text(max_size=30)),
))  # fmt: skip
def test_any_request_bytes_get_one_nul_terminated_reply(data: bytes) -> None:
    reply, after = asyncio.run(_api.answer(data, PEER_OUTSIDE))
    assert reply.endswith(b"\x00") and reply.count(b"\x00") == 1
    text = reply[:-1]
    if data.strip().startswith(b"{"):
        body = json.loads(text)
        assert isinstance(body, dict) and body.get("id") == 1
    assert after == [] or all(r.after is None for r in after)  # outsiders trigger nothing
    assert _api.controls.calls == []  # type: ignore[union-attr]
