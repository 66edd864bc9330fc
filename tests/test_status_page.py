"""The status page in a real browser: headless Chromium (Debian chromium + chromedriver, driven
through chromedriver's W3C WebDriver HTTP API with urllib) loads the page of a WebSurface fed by a
State with known values; hashrate, pools and temperatures shown must match /api/status.
Screenshots go to tests/artifacts/ (status-page.png, and status-page-phone.png at phone width)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import require_peer
from webclient import request

from agent.api.http import WebOptions, WebSurface
from agent.state import State

pytestmark = pytest.mark.peers

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
POOLS = ("stratum+tcp://ltc.pool.example:3333", "stratum+ssl://doge-backup.example:3443")
TEMPS = (58.5, 61.0, 63.4, 77.2)  # no .x5 values: JS and Python round those differently
UNITS = ("H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s")


def fmt_hash(h: float) -> str:
    """What the page's fmtHash() shows."""
    i = 0
    while h >= 1000 and i < len(UNITS) - 1:
        h /= 1000
        i += 1
    return f"{h:.2f} {UNITS[i]}"


class Clock:
    t = 500.0

    def __call__(self) -> float:
        return self.t


def known_state() -> State:
    clock = Clock()
    state = State(clock=clock, window_s=60, wall=lambda: 1_790_000_000.0)
    for chain, temp in enumerate(TEMPS):
        state.set_chain(chain, chips=72, frequency_mhz=384.0, temp_c=temp)
    clock.t += 45  # the clock then stands still: every read shows the same figures
    n = 0
    for chain in range(4):
        for chip in range(72):
            for _ in range(1 + (chip * 7 + chain) % 5 - (1 if chip == 40 and chain == 2 else 0)):
                outcome = "hw_errors" if (chip == 13 and n % 2) else "accepted"
                state.record_nonce(chain, 256.0, outcome, pool=POOLS[n % 7 == 0], chip=chip)
                n += 1
    state.record_nonce(1, 256.0, "pending", chip=3)
    state.set_chip(3, 70, status="gated")
    state.set_pool(POOLS[0], status="alive", latency_ms=38.0)
    state.set_pool(POOLS[1], status="connecting", latency_ms=121.0)
    state.set_fans([{"rpm": 4320, "duty_pct": 62.0}, {"rpm": 4380, "duty_pct": 62.0}])
    state.set_guardian("mine", "profit 1.20 USD/day > 0.25 (LTC 71.3, DOGE 0.162)")
    state.set_tuner("tuning", "chain 2 chip 17: HW 2.1% > budget 1%: 384 -> 371.5 MHz")
    state.set_thermal("throttle", "chain 3 at 77.2 °C > hot 75 °C: clock 90%")
    state.add_event("pool", f"{POOLS[0]} alive, difficulty 512")
    state.add_event("thermal", "chain 3 throttled to 90%: 77.2 °C")
    state.add_event("tuner", "chain 3 chip 70 clock-gated after 3 strikes")
    return state


# ---------------------------------------------------------------------------- WebDriver over HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WebDriver:
    """The few W3C WebDriver commands this test needs, against a local chromedriver."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = ""

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            raise AssertionError(f"webdriver {method} {path}: {e.read()[:500]!r}") from None

    def start(self, chromium: str, profile: Path) -> None:
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--window-size=1280,900",
            "--hide-scrollbars",
        ]
        caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": chromium, "args": args}}
        value = self.call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        self.session = value["sessionId"]
        self.s("POST", "/timeouts", {"implicit": 10_000, "pageLoad": 15_000, "script": 10_000})

    def s(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.call(method, f"/session/{self.session}{path}", body)

    def script(self, script: str) -> Any:
        return self.s("POST", "/execute/sync", {"script": script, "args": []})

    def wait_loaded(self) -> None:
        # the implicit wait makes the browser wait for the first render of /api/status
        self.s("POST", "/element", {"using": "css selector", "value": 'body[data-loaded="1"]'})

    def screenshot(self, path: Path, width: int) -> None:
        self.s("POST", "/window/rect", {"width": width, "height": 900})
        height = self.script("return document.documentElement.scrollHeight;")
        self.s("POST", "/window/rect", {"width": width, "height": int(height) + 120})
        path.write_bytes(base64.b64decode(self.s("GET", "/screenshot")))

    def quit(self) -> None:
        if self.session:
            with contextlib.suppress(Exception):
                self.call("DELETE", f"/session/{self.session}")


READ_PAGE = """
const t = (el) => el ? [el.textContent, el.dataset.value] : null;
const q = (sel) => document.querySelector(sel);
return {
  hashrate: t(q('#hashrate')),
  chains: [...document.querySelectorAll('#chains tbody tr')].map(tr => ({
    id: tr.id, hashrate: t(tr.querySelector('.c-hashrate')), temp: t(tr.querySelector('.c-temp')),
    chips: t(tr.querySelector('.c-chips')), hw: t(tr.querySelector('.c-hw'))})),
  pools: [...document.querySelectorAll('#pools tbody tr')].map(tr => ({
    url: tr.querySelector('.p-url').textContent, status: tr.querySelector('.p-status').textContent,
    accepted: t(tr.querySelector('.p-accepted')), rejected: t(tr.querySelector('.p-rejected')),
    latency: t(tr.querySelector('.p-latency'))})),
  chipCells: Object.fromEntries([...document.querySelectorAll('.chips')].map(
    g => [g.id, g.children.length])),
  guardian: q('#guardian-reason').textContent, tuner: q('#tuner-reason').textContent,
  thermal: q('#thermal-state').textContent, events: document.querySelectorAll('#events li').length,
  fans: [...document.querySelectorAll('#fans > div')].map(d => d.querySelector('b').textContent),
  overflow: document.documentElement.scrollWidth > window.innerWidth,
};
"""


def test_status_page_in_headless_chromium(tmp_path: Path) -> None:
    chromium = require_peer("chromium")
    chromedriver = require_peer("chromedriver")
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    driver_proc = subprocess.Popen(
        [chromedriver, f"--port={port}", "--allowed-ips=127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wd = WebDriver(f"http://127.0.0.1:{port}")
    try:
        assert driver_proc.stdout is not None
        for _ in range(20):  # chromedriver says when it listens
            line = driver_proc.stdout.readline()
            if "started successfully" in line or not line:
                break
        wd.start(chromium, tmp_path / "profile")

        async def main() -> tuple[dict[str, Any], dict[str, Any]]:
            surface = WebSurface(known_state(), None, WebOptions(listen="127.0.0.1:0"))
            await surface.start()
            try:
                url = f"http://127.0.0.1:{surface.port}/"

                def browse() -> dict[str, Any]:
                    wd.s("POST", "/url", {"url": url})
                    wd.wait_loaded()
                    shown = wd.script(READ_PAGE)
                    wd.screenshot(ARTIFACTS / "status-page.png", 1280)
                    wd.screenshot(ARTIFACTS / "status-page-phone.png", 390)
                    shown["phone_overflow"] = wd.script(
                        "return document.documentElement.scrollWidth > window.innerWidth;"
                    )
                    return shown

                shown = await asyncio.to_thread(browse)
                status = (await request(surface.port, "GET", "/api/status")).json()
                return shown, status
            finally:
                await surface.stop()

        shown, status = asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        wd.quit()
        driver_proc.terminate()
        try:
            driver_proc.wait(10)
        except subprocess.TimeoutExpired:
            driver_proc.kill()

    # hashrate: the text a person reads and the raw value behind it
    assert shown["hashrate"][0] == fmt_hash(status["hashrate_hs"])
    assert float(shown["hashrate"][1]) == pytest.approx(status["hashrate_hs"])
    assert status["hashrate_hs"] > 0
    # temperatures and per-chain hashrate
    assert len(shown["chains"]) == len(status["chains"]) == 4
    for row, chain in zip(shown["chains"], status["chains"], strict=True):
        assert row["id"] == f"chain-{chain['id']}"
        assert row["temp"][0] == f"{chain['temp_c']:.1f} °C"
        assert float(row["temp"][1]) == chain["temp_c"]
        assert row["hashrate"][0] == fmt_hash(chain["hashrate_hs"])
        assert row["chips"][0] == str(chain["chips"])
        assert row["hw"][0] == str(chain["hw_errors"])
    # pools
    assert [p["url"] for p in shown["pools"]] == [p["url"] for p in status["pools"]]
    for row, pool in zip(shown["pools"], status["pools"], strict=True):
        assert row["status"] == pool["status"]
        assert row["accepted"][0] == str(pool["accepted"])
        assert row["rejected"][0] == str(pool["rejected"])
        assert float(row["latency"][1]) == pool["latency_ms"]
        assert row["latency"][0] == f"{pool['latency_ms']:.0f} ms"
    # per-chip map, control loops, fans, events
    assert shown["chipCells"] == {f"chips-{c}": 72 for c in range(4)}
    assert shown["guardian"] == status["guardian"]["reason"]
    assert shown["tuner"] == status["tuner"]["reason"]
    assert shown["thermal"] == "throttle"
    assert shown["fans"] == ["4320 rpm", "4380 rpm"]
    assert shown["events"] == 3
    # readable on a phone: nothing wider than the screen
    assert not shown["phone_overflow"]
    assert (ARTIFACTS / "status-page.png").stat().st_size > 10_000
