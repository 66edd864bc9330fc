"""agent.api.http: /api/status, /api/health, /metrics against the snapshot; POST controls only for
allowed, authenticated clients (401/403/429/200); no password in any answer or log line."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from webclient import Answer, request

from agent.api.controls import ControlError
from agent.api.http import SnapshotCollector, WebOptions, WebSurface, _go_float, health
from agent.api.httpserver import Limits
from agent.state import State

PASSWORD = "0wner-Pa55word!"
TOKEN = "tok-3f9a1c77e2d54b6a"
POOL_PASSWORD = "pool-secret-xyz"
POOL = "stratum+tcp://pool.example:3333"
BACKUP = "stratum+tcp://backup.example:3333"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeControls:
    """Implements agent.api.controls.Controls; records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._locating = False

    async def pause(self, reason: str) -> str:
        self.calls.append(("pause", reason))
        return "paused"

    async def resume(self, reason: str) -> str:
        self.calls.append(("resume", reason))
        return "resumed"

    async def restart(self) -> str:
        self.calls.append(("restart",))
        return "restarting"

    def locate(self, on: bool, seconds: float | None = None) -> str:
        self.calls.append(("locate", on, seconds))
        self._locating = on
        return "locating" if on else "locate off"

    def locating(self) -> bool:
        return self._locating

    def pools(self) -> list[dict[str, Any]]:
        return [{"index": 0, "url": POOL, "user": "w.1", "priority": 0, "enabled": True,
                 "status": "alive", "password": POOL_PASSWORD}]  # fmt: skip

    async def add_pool(self, url: str, user: str, password: str, priority: int | None) -> str:
        self.calls.append(("add_pool", url, user, password, priority))
        if "bad" in url:
            raise ControlError(f"cannot reach {url} with password {password}")
        return f"added {url} (password {password})"

    async def switch_pool(self, index: int) -> str:
        self.calls.append(("switch_pool", index))
        if index > 5:
            raise ControlError(f"no pool {index}")
        return f"switched to {index}"

    async def enable_pool(self, index: int, enabled: bool) -> str:
        self.calls.append(("enable_pool", index, enabled))
        return "ok"

    async def remove_pool(self, index: int) -> str:
        self.calls.append(("remove_pool", index))
        return "removed"


def known_state(clock: Clock) -> State:
    """A State with fixed values: the clock stands still, so every read gives the same figures."""
    state = State(clock=clock, window_s=60, wall=lambda: 1_790_000_000.0)
    for chain, temp in enumerate((58.5, 61.0, 63.25, 59.75)):
        state.set_chain(chain, chips=72, frequency_mhz=384.0, temp_c=temp)
    clock.t += 30
    outcomes = ["accepted"] * 40 + ["rejected"] * 3 + ["stale"] * 2 + ["below_target"] * 5
    outcomes += ["hw_errors"] * 4 + ["pending"] * 6
    for i, outcome in enumerate(outcomes):
        pool = POOL if i % 3 else BACKUP
        state.record_nonce(i % 4, 256.0, outcome, pool=pool, chip=i % 72)
    state.set_pool(POOL, status="alive", latency_ms=42.5)
    state.set_pool(BACKUP, status="connecting")
    state.set_fans([{"rpm": 4320, "duty_pct": 55.0}, {"rpm": 4410, "duty_pct": 55.0}])
    state.set_guardian("mine", "profit 1.20 USD/day above 0.25")
    state.set_tuner("tuning", "chain 2 chip 17: HW errors 2.1% > 1%: -12.5 MHz")
    state.set_thermal("ok", "58.5-63.2 °C, fans 55%")
    state.add_event("pool", f"{POOL} alive")
    return state


def serve(
    body: Callable[[WebSurface, FakeControls], Awaitable[None]],
    *,
    state: State | None = None,
    **opts: Any,
) -> WebSurface:
    clock = Clock()
    options = WebOptions(
        listen="127.0.0.1:0",
        password=PASSWORD,
        token=TOKEN,
        limits=Limits(request_timeout_s=2.0, keepalive_idle_s=1.0),
        **opts,
    )
    controls = FakeControls()

    async def main() -> WebSurface:
        surface = WebSurface(state or known_state(clock), controls, options, clock=clock)
        await surface.start()
        try:
            async with asyncio.timeout(20):
                await body(surface, controls)
        finally:
            await surface.stop()
        return surface

    return asyncio.run(main())


def assert_no_secret(a: Answer) -> None:
    basic = base64.b64encode(f"admin:{PASSWORD}".encode())
    for secret in (PASSWORD.encode(), TOKEN.encode(), POOL_PASSWORD.encode(), basic):
        assert secret not in a.raw


# ---------------------------------------------------------------------------- reads


def test_api_status_has_the_design_fields_and_the_nonce_invariant() -> None:
    async def body(w: WebSurface, _: FakeControls) -> None:
        a = await request(w.port, "GET", "/api/status")
        assert a.status == 200 and a.headers["content-type"] == "application/json"
        s = a.json()
        assert s == w.state.snapshot()
        for key in ("hashrate_hs", "nonces", "shares", "pools", "chains", "fans", "guardian",
                    "uptime_s", "chips", "tuner", "thermal", "events", "version"):  # fmt: skip
            assert key in s, key
        assert set(s["shares"]) == {"accepted", "rejected", "stale", "below_target", "hw_errors",
                                    "pending"}  # fmt: skip
        assert s["nonces"] == sum(s["shares"].values()) == 60
        assert s["shares"]["accepted"] == 40 and s["shares"]["pending"] == 6
        for p in s["pools"]:
            assert set(p) >= {"url", "status", "accepted", "rejected", "latency_ms"}
        for c in s["chains"]:
            assert set(c) >= {"id", "chips", "frequency_mhz", "hashrate_hs", "nonces",
                              "hw_errors", "temp_c"}  # fmt: skip
        assert sum(c["nonces"] for c in s["chains"]) == s["nonces"]
        assert sum(c["hw_errors"] for c in s["chains"]) == s["shares"]["hw_errors"]
        assert sum(c["nonces"] for c in s["chips"]) == s["nonces"]
        assert s["hashrate_hs"] == pytest.approx(sum(c["hashrate_hs"] for c in s["chains"]))
        assert s["fans"] == [{"rpm": 4320, "duty_pct": 55.0}, {"rpm": 4410, "duty_pct": 55.0}]
        assert s["tuner"]["state"] == "tuning" and "chip 17" in s["tuner"]["reason"]
        assert s["events"][0]["message"] == f"{POOL} alive"
        # HEAD answers without a body
        h = await request(w.port, "HEAD", "/api/status")
        assert h.status == 200 and h.body == b""

    serve(body)


def test_api_status_turns_non_finite_numbers_into_null() -> None:
    state = State()
    state.set_chain(0, chips=1, temp_c=float("nan"))

    async def body(w: WebSurface, _: FakeControls) -> None:
        a = await request(w.port, "GET", "/api/status")
        assert a.status == 200 and a.json()["chains"][0]["temp_c"] is None

    serve(body, state=state)


def test_api_health_ok_and_degraded() -> None:
    async def body(w: WebSurface, _: FakeControls) -> None:
        a = await request(w.port, "GET", "/api/health")
        assert a.status == 200 and a.json()["status"] == "ok" and a.json()["reasons"] == []
        w.state.set_chain(1, temp_c=80.0)
        w.state.set_pool(POOL, status="failing")
        w.state.set_fans([{"rpm": 0, "duty_pct": 60.0}])
        a = await request(w.port, "GET", "/api/health")
        h = a.json()
        assert a.status == 503 and h["status"] == "degraded"
        assert "no pool alive" in h["reasons"]
        assert any(r.startswith("chain 1 hot") for r in h["reasons"])
        assert "fan 0 not turning" in h["reasons"]

    serve(body)
    assert health({"pools": [], "chains": [], "fans": []})["reasons"] == ["no pool configured"]


def _metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_parse_and_match_the_snapshot() -> None:
    async def body(w: WebSurface, _: FakeControls) -> None:
        a = await request(w.port, "GET", "/metrics")
        assert a.status == 200 and a.headers["content-type"].startswith("text/plain; version=0.0.4")
        m = _metrics(a.body.decode())
        s = w.state.snapshot()
        assert m[("doge_agent_hashrate_hs", ())] == pytest.approx(s["hashrate_hs"])
        assert m[("doge_agent_nonces_total", ())] == s["nonces"]
        for outcome in ("accepted", "rejected", "stale", "below_target", "hw_errors"):
            key = ("doge_agent_nonce_outcomes_total", (("outcome", outcome),))
            assert m[key] == s["shares"][outcome]
        assert m[("doge_agent_nonces_pending", ())] == s["shares"]["pending"]
        for c in s["chains"]:
            lab = (("chain", str(c["id"])),)
            assert m[("doge_agent_chain_hashrate_hs", lab)] == pytest.approx(c["hashrate_hs"])
            assert m[("doge_agent_chain_temp_c", lab)] == c["temp_c"]
            assert m[("doge_agent_chain_hw_errors_total", lab)] == c["hw_errors"]
            assert m[("doge_agent_chain_chips", lab)] == 72
        for i, f in enumerate(s["fans"]):
            assert m[("doge_agent_fan_rpm", (("fan", str(i)),))] == f["rpm"]
            assert m[("doge_agent_fan_duty_pct", (("fan", str(i)),))] == f["duty_pct"]
        for p in s["pools"]:
            lab = (("pool", p["url"]),)
            assert m[("doge_agent_pool_accepted_total", lab)] == p["accepted"]
            assert m[("doge_agent_pool_rejected_total", lab)] == p["rejected"]
            assert m[("doge_agent_pool_up", lab)] == (1.0 if p["status"] == "alive" else 0.0)
        assert m[("doge_agent_pool_latency_ms", (("pool", POOL),))] == 42.5
        assert m[("doge_agent_uptime_seconds", ())] == pytest.approx(s["uptime_s"])
        assert m[("doge_agent_guardian_state", (("state", "mine"),))] == 1.0
        assert ("doge_agent_http_requests_total", ()) in m
        await request(w.port, "GET", "/nowhere")
        m = _metrics((await request(w.port, "GET", "/metrics")).body.decode())
        assert m[("doge_agent_http_errors_total", (("status", "404"),))] == 1

    serve(body)


# The agent writes the exposition itself (prometheus_client costs it ~1-4 MB of RSS); the real
# prometheus_client is the peer that parses it and the reference it must match byte for byte.

ODD = 'stratum+tcp://a"b\\c\nd ü:1'  # a quote, a backslash, a newline and non-ASCII in a label


def _odd_state() -> State:
    state = State(clock=Clock(), window_s=60, wall=lambda: 1_790_000_000.0)
    state.set_pool(ODD, status="alive", latency_ms=float("nan"))
    state.set_pool("stratum+tcp://inf:1", status="dead", latency_ms=float("inf"))
    state.set_guardian('we"ird\\state\n', "x")
    state.set_fans([{"rpm": 12345678.0, "duty_pct": 1e-7}, {"rpm": None, "duty_pct": None}])
    return state


def _reference_exposition(collector: SnapshotCollector) -> bytes:
    """The same families written by prometheus_client.generate_latest."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Reference:
        def collect(self):  # type: ignore[no-untyped-def]
            for f in collector.collect():
                cls = CounterMetricFamily if f.type == "counter" else GaugeMetricFamily
                ref = cls(f.name, f.documentation, labels=list(f.labels))
                for values, value in f.samples:
                    ref.add_metric(list(values), value)
                yield ref

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Reference())  # type: ignore[arg-type]
    return generate_latest(registry)


@pytest.mark.parametrize("make_state", [None, _odd_state])
def test_metrics_are_byte_for_byte_what_prometheus_client_writes(make_state) -> None:
    async def body(w: WebSurface, _: FakeControls) -> None:
        await request(w.port, "GET", "/nowhere")
        served = (await request(w.port, "GET", "/metrics")).body
        snap = w.state.snapshot()
        w.state.snapshot = lambda: snap  # both read the same snapshot (the uptime moves on)
        assert w.metrics.render() == _reference_exposition(w.metrics)
        assert served.startswith(b"# HELP doge_agent_build_info Agent version\n")

    serve(body, state=make_state() if make_state else None)


def test_metrics_odd_labels_and_values_survive_the_parser() -> None:
    async def body(w: WebSurface, _: FakeControls) -> None:
        m = _metrics((await request(w.port, "GET", "/metrics")).body.decode())
        assert m[("doge_agent_pool_up", (("pool", ODD),))] == 1.0
        assert math.isnan(m[("doge_agent_pool_latency_ms", (("pool", ODD),))])
        assert m[("doge_agent_pool_latency_ms", (("pool", "stratum+tcp://inf:1"),))] == math.inf
        assert m[("doge_agent_guardian_state", (("state", 'we"ird\\state\n'),))] == 1.0
        assert m[("doge_agent_fan_rpm", (("fan", "0"),))] == 12345678.0
        assert m[("doge_agent_fan_duty_pct", (("fan", "0"),))] == 1e-7
        assert ("doge_agent_fan_rpm", (("fan", "1"),)) not in m  # unread: no sample, not 0

    serve(body, state=_odd_state())


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**63), 2**64))
def test_metric_values_are_formatted_as_prometheus_client_does(value: float) -> None:
    from prometheus_client.utils import floatToGoString

    assert _go_float(value) == floatToGoString(value)


def test_the_web_surface_does_not_import_prometheus_client() -> None:
    code = (
        "import sys, agent.api.http, agent.service\n"
        "assert 'prometheus_client' not in sys.modules, 'imported'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOGE_AGENT")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_reads_only_from_read_allow_networks() -> None:
    async def body(w: WebSurface, _: FakeControls) -> None:
        for path in ("/", "/api/status", "/api/health", "/metrics"):
            assert (await request(w.port, "GET", path)).status == 403

    serve(body, read_allow=("10.0.0.0/8",))


def test_status_page_is_self_contained() -> None:
    async def body(w: WebSurface, _: FakeControls) -> None:
        a = await request(w.port, "GET", "/")
        assert a.status == 200 and a.headers["content-type"].startswith("text/html")
        page = a.body.decode()
        assert "/api/status" in page and 'name="viewport"' in page
        for outside in ("http://", "https://", "src=", "<link"):
            assert outside not in page, outside
        assert "default-src 'none'" in a.headers["content-security-policy"]

    serve(body)


# ---------------------------------------------------------------------------- writes


def test_controls_need_authentication_and_an_allowed_address(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    answers: list[Answer] = []

    async def body(w: WebSurface, c: FakeControls) -> None:
        async def post(path: str, **kw: Any) -> Answer:
            a = await request(w.port, "POST", path, **kw)
            answers.append(a)
            return a

        a = await post("/api/control/pause")
        assert a.status == 401 and a.headers["www-authenticate"].startswith("Basic realm=")
        a = await post("/api/control/pause", user="admin", password="wrong")
        assert a.status == 401
        a = await post("/api/control/pause", token="wrong-token")
        assert a.status == 401
        assert c.calls == []

        a = await post("/api/control/pause", user="admin", password=PASSWORD, body={"reason": "t"})
        assert a.status == 200 and a.json() == {"ok": True, "result": "paused"}
        a = await post("/api/control/resume", token=TOKEN)
        assert a.status == 200 and a.json()["result"] == "resumed"
        a = await post("/api/control/restart", token=TOKEN)
        assert a.status == 200
        a = await post("/api/control/locate", token=TOKEN, body={"on": True, "seconds": 30})
        assert a.status == 200 and a.json()["result"] == "locating"
        a = await post("/api/control/pools", token=TOKEN)
        assert a.status == 200 and a.json()["result"][0]["url"] == POOL
        a = await post("/api/control/switch_pool", token=TOKEN, body={"index": 1})
        assert a.status == 200
        a = await post("/api/control/switch_pool", token=TOKEN, body={"index": 9})
        assert a.status == 409 and a.json() == {"ok": False, "error": "no pool 9"}
        a = await post("/api/control/disable_pool", token=TOKEN, body=b"index=0",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert a.status == 200
        a = await post(
            "/api/control/add_pool",
            token=TOKEN,
            body={"url": BACKUP, "user": "w.2", "password": POOL_PASSWORD, "priority": 3},
        )
        assert a.status == 200 and "***" in a.json()["result"]
        a = await post(
            "/api/control/add_pool",
            token=TOKEN,
            body={"url": "stratum+tcp://bad:1", "user": "w", "password": POOL_PASSWORD},
        )
        assert a.status == 409
        for bad in ({"index": "x"}, {"index": -1}, {"index": True}):
            a = await post("/api/control/remove_pool", token=TOKEN, body=bad)
            assert a.status == 400
        a = await post("/api/control/add_pool", token=TOKEN, body={"url": "http://x", "user": "u"})
        assert a.status == 400
        a = await post("/api/control/locate", token=TOKEN, body={"seconds": "nan"})
        assert a.status == 400
        a = await post("/api/control/selfdestruct", token=TOKEN)
        assert a.status == 404
        a = await post("/api/control/pause", token=TOKEN, body=b"[1]")
        assert a.status == 400
        a = await request(w.port, "GET", "/api/control/pause", token=TOKEN)
        assert a.status == 405

        assert ("pause", "t") in c.calls and ("locate", True, 30.0) in c.calls
        assert ("switch_pool", 1) in c.calls and ("enable_pool", 0, False) in c.calls
        assert ("add_pool", BACKUP, "w.2", POOL_PASSWORD, 3) in c.calls
        status = await request(w.port, "GET", "/api/status")
        answers.append(status)
        assert any(e["kind"] == "control" for e in status.json()["events"])

    serve(body)
    for a in answers:
        assert_no_secret(a)
    for secret in (PASSWORD, TOKEN, POOL_PASSWORD):
        assert secret not in caplog.text
    assert "failed login from 127.0.0.1" in caplog.text


def test_writes_from_other_networks_are_forbidden_even_with_the_password() -> None:
    async def body(w: WebSurface, c: FakeControls) -> None:
        a = await request(w.port, "POST", "/api/control/pause", user="admin", password=PASSWORD)
        assert a.status == 403
        assert (await request(w.port, "GET", "/api/status")).status == 200  # reads still open
        assert c.calls == []

    serve(body, write_allow=("192.168.0.0/16",))


def test_repeated_failures_lock_the_address_out() -> None:
    async def body(w: WebSurface, c: FakeControls) -> None:
        for _ in range(3):
            a = await request(w.port, "POST", "/api/control/pause", user="admin", password="guess")
            assert a.status == 401
        a = await request(w.port, "POST", "/api/control/pause", user="admin", password=PASSWORD)
        assert a.status == 429 and int(a.headers["retry-after"]) >= 1
        assert c.calls == []
        w.guard._clock.t += 61  # type: ignore[attr-defined]  # the lockout ends
        a = await request(w.port, "POST", "/api/control/pause", user="admin", password=PASSWORD)
        assert a.status == 200 and c.calls == [("pause", "web: owner")]

    serve(body, login_max_failures=3, login_lockout_s=60.0)


def test_per_client_rate_limit() -> None:
    async def body(w: WebSurface, _: FakeControls) -> None:
        codes = [(await request(w.port, "GET", "/api/health")).status for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]

    w = serve(body, rate_per_s=0.001, rate_burst=3)
    assert w.server.stats["rate_limited"] == 2


def test_no_password_configured_means_no_basic_login() -> None:
    async def body(w: WebSurface, c: FakeControls) -> None:
        a = await request(w.port, "POST", "/api/control/pause", user="admin", password="")
        assert a.status == 401 and c.calls == []

    clock = Clock()
    options = WebOptions(listen="127.0.0.1:0")

    async def main() -> None:
        w = WebSurface(known_state(clock), FakeControls(), options)
        await w.start()
        try:
            await body(w, w.controls)  # type: ignore[arg-type]
        finally:
            await w.stop()

    asyncio.run(main())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
ACTIONS = ["pause", "resume", "restart", "locate", "pools", "add_pool", "switch_pool",
           "enable_pool", "disable_pool", "remove_pool", "nope"]  # fmt: skip
CONTROL_KEYS = ["index", "on", "seconds", "url", "user", "password", "priority", "reason"]


@settings(max_examples=40)
@given(
    st.sampled_from(ACTIONS),
    st.one_of(
        st.dictionaries(
            st.sampled_from(CONTROL_KEYS),
            json_values,
            max_size=5,
        ),
        json_values,
    ),
)
def test_control_bodies_never_cause_a_server_error(action: str, args: Any) -> None:
    async def body(w: WebSurface, _: FakeControls) -> None:
        raw = json.dumps(args).encode()
        headers = {"Content-Type": "application/json"}
        path = f"/api/control/{action}"
        a = await request(w.port, "POST", path, token=TOKEN, body=raw, headers=headers)
        assert a.status in (200, 400, 404, 409), (a.status, a.body)
        assert_no_secret(a)

    w = serve(body)
    assert w.server.stats["handler_errors"] == 0


def test_options_from_config() -> None:
    from agent.config import Config

    o = WebOptions.from_config(Config(), password=PASSWORD)
    assert o.listen == Config().api.http_listen and o.password == PASSWORD
    assert "127.0.0.0/8" in o.read_allow


def test_options_repr_hides_secrets() -> None:
    text = repr(WebOptions(password=PASSWORD, token=TOKEN))
    assert PASSWORD not in text and TOKEN not in text
