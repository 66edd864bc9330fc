"""agent.alerts: once per onset (fake clock), the command gets the JSON on stdin and in its
environment, the URL gets a POST on loopback, and a hung hook is abandoned without blocking."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

from agent.alerts import AlertHook, AlertOptions, EdgeTracker
from agent.config import loads


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_fires_once_per_onset_not_per_tick() -> None:
    clock = Clock()
    hook = AlertHook(AlertOptions(min_interval_s=60), clock=clock)
    fired = []
    for _ in range(100):  # a hundred ticks of one overheat: one alert
        fired.append(hook.condition("overheat", True, "chain 0 at 92 C"))
        clock.now += 1
    assert fired.count(True) == 1 and fired[0]
    assert hook.condition("overheat", False) is False  # cleared
    clock.now += 1
    assert hook.condition("overheat", True, "again") is True  # came back: fires again
    assert hook.counters["fired"] == 2
    assert [e.message for e in hook.sent] == ["chain 0 at 92 C", "again"]


def test_a_flapping_condition_is_held_to_min_interval() -> None:
    clock = Clock()
    tracker = EdgeTracker(min_interval_s=30)
    fires = 0
    for tick in range(120):  # on, off, on, off... once a second for two minutes
        fire, _ = tracker.should("fan_failure", tick % 2 == 0, clock())
        fires += fire
        clock.now += 1
    assert fires == 4  # at 0, 30, 60, 90 s


def test_reminder_while_the_condition_lasts() -> None:
    clock = Clock()
    hook = AlertHook(AlertOptions(min_interval_s=0, reminder_s=600), clock=clock)
    fired = []
    for _ in range(1800):
        fired.append(hook.condition("pools_down", True, "all pools are down"))
        clock.now += 1
    assert fired.count(True) == 3  # onset, then at 600 s and 1200 s
    assert [e.reminder for e in hook.sent] == [False, True, True]


def test_keys_are_separate() -> None:
    hook = AlertHook(AlertOptions(), clock=Clock())
    assert hook.condition("chain_dead", True, "chain 1", key="chain_dead:1")
    assert hook.condition("chain_dead", True, "chain 2", key="chain_dead:2")
    assert not hook.condition("chain_dead", True, "chain 1", key="chain_dead:1")


HOOK = """
import json, os, sys
event = json.loads(sys.stdin.read())
event["env_kind"] = os.environ.get("DOGE_AGENT_ALERT_KIND")
event["env_message"] = os.environ.get("DOGE_AGENT_ALERT_MESSAGE")
event["leaked"] = sorted(k for k in os.environ if k.startswith("DOGE_AGENT__"))
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(event) + "\\n")
"""


def test_command_hook_receives_the_event_on_stdin_and_in_env(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("DOGE_AGENT__API__PASSWORD", "never-passed-on")
    script, out = tmp_path / "hook.py", tmp_path / "events.jsonl"
    script.write_text(HOOK)
    conf = loads(f"[alerts]\ncommand = {json.dumps([sys.executable, str(script), str(out)])}\n")

    async def main() -> None:
        hook = AlertHook(AlertOptions.from_config(conf.alerts))
        await hook.start()
        for _ in range(10):
            hook.condition("overheat", True, "chain 2: DC-DC off: 91 C; it's $(rm -rf) `x`")
        await asyncio.wait_for(hook.drained(), 20)
        await hook.stop()
        assert hook.counters == {
            "fired": 1, "delivered": 1, "failed": 0, "timeouts": 0, "dropped": 0,
        }  # fmt: skip

    asyncio.run(main())
    (event,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert event["kind"] == "overheat" == event["env_kind"]
    assert (
        event["message"] == event["env_message"] == "chain 2: DC-DC off: 91 C; it's $(rm -rf) `x`"
    )
    assert event["time"].endswith("Z") and event["reminder"] is False
    assert event["leaked"] == []  # the agent's environment (and its secrets) is not passed on


class Catcher(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []
    got = threading.Event()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length))
        assert self.headers.get("Content-Type") == "application/json"
        Catcher.bodies.append(body)
        self.send_response(204)
        self.end_headers()
        Catcher.got.set()

    def log_message(self, *args: Any) -> None:
        pass


def test_http_hook_posts_json_to_a_loopback_server() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Catcher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"

    async def main() -> None:
        hook = AlertHook(AlertOptions(url=url, timeout_s=5))
        await hook.start()
        hook.condition("pools_down", True, "all pools are down")
        hook.condition("pools_down", True, "all pools are down")
        await asyncio.wait_for(hook.drained(), 20)
        await hook.stop()
        assert hook.counters["delivered"] == 1

    try:
        asyncio.run(main())
    finally:
        server.shutdown()
        server.server_close()
    assert Catcher.got.is_set()
    assert [b["kind"] for b in Catcher.bodies] == ["pools_down"]


def test_a_hung_hook_times_out_and_never_blocks(tmp_path: Path) -> None:
    script = tmp_path / "hang.py"
    script.write_text("import time\ntime.sleep(600)\n")

    async def main() -> None:
        hook = AlertHook(
            AlertOptions(command=(sys.executable, str(script)), timeout_s=0.5, queue_size=2)
        )
        await hook.start()
        started = time.monotonic()
        for i in range(6):  # raising alerts never waits for the hung command
            hook.condition("chain_dead", True, f"chain {i}", key=f"chain_dead:{i}")
        assert time.monotonic() - started < 0.2
        # The loop keeps turning while the hook hangs.
        ticks = 0
        for _ in range(5):
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 5
        await asyncio.wait_for(hook.drained(), 20)
        await hook.stop()
        c = hook.counters
        assert c["fired"] == 6
        assert c["dropped"] >= 3  # the queue holds 2; the oldest were dropped
        assert c["timeouts"] == c["failed"] == 6 - c["dropped"]

    asyncio.run(main())


def test_a_hung_url_times_out() -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"

    async def main() -> None:
        hook = AlertHook(AlertOptions(url=url, timeout_s=0.5))
        await hook.start()
        hook.condition("paused", True, "guardian: unprofitable")
        await asyncio.wait_for(hook.drained(), 20)
        await hook.stop()
        assert hook.counters["failed"] == 1 and hook.counters["timeouts"] == 1

    try:
        asyncio.run(main())
    finally:
        listener.close()


def test_a_missing_command_is_a_failure_not_a_crash() -> None:
    async def main() -> None:
        hook = AlertHook(AlertOptions(command=("/nonexistent/alert-hook",)))
        await hook.start()
        hook.condition("fan_failure", True, "fan 0: 0 rpm")
        await asyncio.wait_for(hook.drained(), 20)
        await hook.stop()
        assert hook.counters["failed"] == 1

    asyncio.run(main())


def test_the_service_raises_each_alert_once_per_onset() -> None:
    """The wiring: thermal flags on every tick, all pools down, a pause, a dead chain."""
    from types import SimpleNamespace

    from agent.hardware.chain import ChainEvent
    from agent.service import MiningService

    service = MiningService(loads('[board]\nkind = "cpu"\n'), serve_surfaces=False)
    clock = Clock()
    service.alerts.clock = clock
    hot = SimpleNamespace(chain=1, code="overheat", reason="chain 1: DC-DC off: 90 C")
    tripped = SimpleNamespace(flags=frozenset({"overheat", "fan_failed"}), chains=[hot],
                              fan_reason="fan 0: 0 rpm")  # fmt: skip
    calm = SimpleNamespace(flags=frozenset(), chains=[], fan_reason="pid")
    for _ in range(50):
        service._thermal_alerts(tripped)  # type: ignore[arg-type]
        clock.now += 1
    service._thermal_alerts(calm)  # type: ignore[arg-type]
    manager = object()
    service.pools = manager  # type: ignore[assignment]
    for _ in range(5):
        service._on_active_pool(manager, None)  # type: ignore[arg-type]
    service._on_active_pool(object(), None)  # type: ignore[arg-type]  # one being stopped: no
    for _ in range(3):
        service._on_chain_event(ChainEvent(2, "chain_dead", None, "no answer"))
    asyncio.run(service.pause("guardian: unprofitable"))
    asyncio.run(service.pause("guardian: unprofitable"))
    kinds = [e.key for e in service.alerts.sent]
    assert kinds == ["overheat", "fan_failure", "pools_down", "chain_dead:2", "paused"]
    assert service.alerts.sent[0].message == "overheat shutdown: chain 1: DC-DC off: 90 C"
