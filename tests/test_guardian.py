"""control.guardian: economics, price cache parsing and fetching, the decision table, the loop."""

from __future__ import annotations

import asyncio
import http.server
import itertools
import json
import logging
import os
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.control import guardian as G
from agent.control.guardian import (
    GuardianInputs,
    GuardianLoop,
    GuardianMemory,
    GuardianOptions,
    PriceError,
    Prices,
    decide,
)

HS = 504e6  # an L3+
W = 800.0
# cheap power so the price decides: revenue 0.555 $/day x price factor - 0.192 $/day
OPT = GuardianOptions(enabled=True, electricity_usd_kwh=0.01, min_dwell_s=600.0)


def prices(k: float = 1.0, at: float | None = 0.0) -> Prices:
    return Prices(70.0 * k, 0.08 * k, at)


DEFAULT_PRICES = prices()


def inputs(p: Prices | None = DEFAULT_PRICES, now: float = 0.0, problem: str | None = None):
    return GuardianInputs(now, HS, W, p, problem)


# ---------------------------------------------------------------------------- economics


def test_economics_counts_merged_doge():
    e = G.economics(HS, W, prices(), OPT)
    assert e.ltc_usd_day == pytest.approx(HS * 86400 / (30e6 * 2**32) * 6.25 * 70.0)
    assert e.doge_usd_day == pytest.approx(HS * 86400 / (20e6 * 2**32) * 10000 * 0.08)
    assert e.power_usd_day == pytest.approx(0.8 * 24 * 0.01)
    assert e.profit_usd_day == pytest.approx(e.ltc_usd_day + e.doge_usd_day - e.power_usd_day)
    assert "LTC" in e.describe() and "DOGE" in e.describe()
    solo = G.economics(HS, W, prices(), GuardianOptions(merged_mining=False))
    assert solo.doge_usd_day == 0.0
    assert G.economics(HS, W, Prices(70.0, None), OPT).doge_usd_day == 0.0
    harder = G.economics(HS, W, prices(), OPT, ltc_difficulty=60e6, doge_difficulty=40e6)
    assert harder.revenue_usd_day == pytest.approx(e.revenue_usd_day / 2)


def test_difficulty_from_nbits():
    assert G.difficulty_from_nbits(0x1D00FFFF) == pytest.approx(1.0)
    assert G.difficulty_from_nbits("1d00ffff") == pytest.approx(1.0)
    assert G.difficulty_from_nbits(0x1B0404CB) == pytest.approx(16307.42, rel=1e-4)
    for bad in (None, "zz", 0, -1, 1 << 40, True, 3.5, 0x01000000):
        assert G.difficulty_from_nbits(bad) is None


def test_options_validation():
    assert (
        GuardianOptions.from_config({"enabled": True, "stale_policy": "pause"}).stale_policy
        == "pause"
    )
    for bad in (
        {"stale_policy": "panic"},
        {"pause_below_usd_day": 1.0, "resume_above_usd_day": 1.0},
        {"min_dwell_s": -1},
        {"ltc_difficulty": 0},
        {"price_url": "file:///etc/passwd"},
    ):
        with pytest.raises(ValueError):
            GuardianOptions(**bad)


# ---------------------------------------------------------------------------- prices


def test_parse_prices_valid():
    p = G.parse_prices(b'{"litecoin": {"usd": 70.1}, "dogecoin": {"usd": 0.08}}')
    assert p == Prices(70.1, 0.08, None)
    p = G.parse_prices(
        '{"litecoin": {"usd": 70, "last_updated_at": 1700000100},'
        ' "dogecoin": {"usd": 0.08, "last_updated_at": 1700000000}}'
    )
    assert p == Prices(70.0, 0.08, 1700000000.0)  # the older stamp counts
    assert G.parse_prices('{"litecoin": {"eur": 60}}', currency="eur").doge is None


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"{}", "litecoin: not an object"),
        (b'{"litecoin": {"usd": "70"}}', "not a number"),
        (b'{"litecoin": {"usd": true}}', "not a number"),
        (b'{"litecoin": {"usd": -1}}', "positive"),
        (b'{"litecoin": {"usd": 1e999}}', "positive"),
        (b'{"litecoin": {"usd": 1' + b"0" * 400 + b"}}", "out of range"),
        (b'{"litecoin": {"usd": 70}, "dogecoin": []}', "dogecoin: not an object"),
        (b'{"litecoin": {"usd": 70, "last_updated_at": "now"}}', "last_updated_at"),
        (b'{"litecoin": {"usd": 70, "last_updated_at": -5}}', "not a time"),
        (b"[" * 60000, "not JSON"),
        (b" " * (G.D.GUARDIAN_MAX_PRICE_BYTES + 1), "larger than"),
    ],
)
def test_parse_prices_rejects_with_a_reason(data, why):
    with pytest.raises(PriceError, match=why):
        G.parse_prices(data)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200)
    | st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
        lambda kids: (
            st.lists(kids, max_size=3)
            | st.dictionaries(
                st.sampled_from(["litecoin", "dogecoin", "usd", "last_updated_at"]), kids
            )
        ),
        max_leaves=12,
    ).map(lambda doc: json.dumps(doc).encode())
)
def test_parse_prices_any_bytes_gives_prices_or_price_error(data):
    try:
        p = G.parse_prices(data)
    except PriceError as e:
        assert str(e)
    else:
        assert p.ltc > 0 and (p.doge is None or p.doge > 0)


def test_read_price_cache(tmp_path):
    with pytest.raises(PriceError, match="no price cache"):
        G.read_price_cache(tmp_path / "prices.json")
    f = tmp_path / "prices.json"
    f.write_text('{"litecoin": {"usd": 70}}')
    os.utime(f, (1000, 1000))
    assert G.read_price_cache(f) == Prices(70.0, None, 1000.0)  # mtime when no stamp
    f.write_text("oops")
    with pytest.raises(PriceError, match="not JSON"):
        G.read_price_cache(f)
    with pytest.raises(PriceError, match="unreadable"):
        G.read_price_cache(tmp_path)  # a directory


# ---------------------------------------------------------------------------- fetching


class PriceServer:
    """A loopback HTTP server answering with whatever `body` / `status` say."""

    def __init__(self):
        self.body = b'{"litecoin": {"usd": 70}}'
        self.status = 200
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/simple/price"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = PriceServer()
    yield s
    s.close()


def test_fetch_writes_the_cache_only_when_valid(server, tmp_path):
    cache = tmp_path / "prices.json"
    assert G.fetch_prices(server.url, cache, 2.0).ltc == 70.0
    assert json.loads(cache.read_text()) == {"litecoin": {"usd": 70}}
    server.body = b"<html>rate limited</html>"
    with pytest.raises(PriceError, match="not JSON"):
        G.fetch_prices(server.url, cache, 2.0)
    server.status, server.body = 500, b"{}"
    with pytest.raises(PriceError, match="failed"):
        G.fetch_prices(server.url, cache, 2.0)
    assert json.loads(cache.read_text()) == {"litecoin": {"usd": 70}}  # kept
    with pytest.raises(PriceError, match="non-http"):
        G.fetch_prices("file:///etc/hosts", cache, 2.0)


def test_fetch_times_out(tmp_path):
    with socket.socket() as silent:  # accepts (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        with pytest.raises(PriceError, match="failed"):
            G.fetch_prices(url, tmp_path / "p.json", 0.2)


def test_fetch_unreachable(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens
    with pytest.raises(PriceError, match="failed"):
        G.fetch_prices(f"http://127.0.0.1:{port}/", tmp_path / "p.json", 1.0)


# ---------------------------------------------------------------------------- decision table


def test_disabled_always_mines():
    d = decide(inputs(prices(0.01)), GuardianOptions(), None)
    assert (d.state, d.code, d.changed) == ("mining", "disabled", False)
    d = decide(inputs(), GuardianOptions(), GuardianMemory("paused", 0.0))
    assert (d.state, d.changed) == ("mining", True)  # turning it off resumes at once


def test_profitable_keeps_mining():
    d = decide(inputs(prices(1.0)), OPT, None)
    assert (d.state, d.code, d.changed) == ("mining", "profitable", False)
    assert d.profit_usd_day == pytest.approx(0.363, abs=0.01) and ": mining" in d.reason


def test_unprofitable_pauses_then_resumes_above_b():
    d = decide(inputs(prices(0.2)), OPT, None)
    assert (d.state, d.code, d.changed) == ("paused", "unprofitable", True)
    assert "pausing" in d.reason and d.memory.since == 0.0
    # in the band: stays paused
    d = decide(inputs(prices(0.5), now=1000), OPT, d.memory)
    assert (d.state, d.code) == ("paused", "hysteresis") and "hysteresis band" in d.reason
    d = decide(inputs(prices(0.1), now=1100), OPT, d.memory)
    assert (d.state, d.code) == ("paused", "unprofitable") and "staying paused" in d.reason
    d = decide(inputs(prices(0.9), now=1200), OPT, d.memory)
    assert (d.state, d.code, d.changed) == ("mining", "profitable", True) and "resuming" in d.reason
    # in the band while mining: stays mining
    d = decide(inputs(prices(0.5), now=2000), OPT, d.memory)
    assert (d.state, d.code) == ("mining", "hysteresis")


def test_dwell_time_holds_a_change():
    d = decide(inputs(prices(0.2)), OPT, None)
    d = decide(inputs(prices(2.0), now=599), OPT, d.memory)
    assert (d.state, d.code, d.changed) == ("paused", "dwell", False) and "1 s left" in d.reason
    d = decide(inputs(prices(2.0), now=600), OPT, d.memory)
    assert (d.state, d.changed) == ("mining", True)


@pytest.mark.parametrize(
    ("policy", "state", "code"),
    [("keep_mining", "mining", "stale_keep"), ("pause", "paused", "stale_pause")],
)
def test_stale_prices_follow_the_policy(policy, state, code):
    o = GuardianOptions(enabled=True, stale_policy=policy, price_max_age_s=3600)
    d = decide(inputs(prices(2.0, at=0.0), now=3601), o, None)
    assert (d.state, d.code) == (state, code) and "1.0 h old" in d.reason and "policy" in d.reason
    d = decide(inputs(None, now=0, problem="no price cache yet"), o, None)
    assert d.state == state and "no price cache yet" in d.reason


def test_stale_last_known_uses_the_last_fresh_prices():
    o = GuardianOptions(enabled=True, electricity_usd_kwh=0.01, stale_policy="last_known",
                        price_max_age_s=3600, min_dwell_s=0)  # fmt: skip
    d = decide(inputs(None, problem="unreadable"), o, None)
    assert (d.state, d.code) == ("mining", "no_prices") and "none known before" in d.reason
    d = decide(inputs(prices(0.2, at=0.0), now=10), o, d.memory)
    assert d.state == "paused"
    # the cache goes stale with a price that would resume: ignored, the last fresh one rules
    d = decide(inputs(prices(5.0, at=0.0), now=7200), o, d.memory)
    assert (d.state, d.code) == ("paused", "unprofitable_last_known")
    assert "last known prices" in d.reason


def test_prices_without_timestamp_are_stale():
    d = decide(
        inputs(prices(1.0, at=None)), GuardianOptions(enabled=True, stale_policy="pause"), None
    )
    assert d.code == "stale_pause"


def test_decide_is_pure():
    m = GuardianMemory()
    assert decide(inputs(prices(0.2)), OPT, m) == decide(inputs(prices(0.2)), OPT, m)
    assert m == GuardianMemory()


# ---------------------------------------------------------------------------- the loop


def test_loop_on_a_price_series_pauses_resumes_respects_dwell_and_stale_policy(
    server, tmp_path, caplog
):
    """Simulated clock, one tick a minute; the price URL serves a series crossing both thresholds,
    then stops answering so the cache goes stale (policy: pause)."""
    t0 = 1_700_000_000.0
    clock = [t0]
    events: list[tuple[float, str]] = []
    o = GuardianOptions(
        enabled=True, electricity_usd_kwh=0.01, min_dwell_s=600.0, price_url=server.url,
        refresh_s=60.0, interval_s=60.0, price_max_age_s=1800.0, stale_policy="pause",
    )  # fmt: skip
    mining = [True]

    def pause():
        mining[0] = False
        events.append((clock[0], "paused"))

    async def resume():
        mining[0] = True
        events.append((clock[0], "mining"))

    loop = GuardianLoop(
        read_hashrate=lambda: HS if mining[0] else 0.0,
        read_power=lambda: W if mining[0] else 15.0,
        pause=pause,
        resume=resume,
        price_path=tmp_path / "prices.json",
        options=o,
        read_nbits=lambda: None,
        clock=lambda: clock[0],
    )
    # price factor per minute: 1.0 -> dips to 0.2 for 3 min (pause, dwell holds the quick
    # recovery), recovers to 1.0, oscillates inside the band, dips again, then the feed dies
    series = [1.0] * 5 + [0.2] * 3 + [1.0] * 12 + [0.5, 0.4, 0.7] * 4 + [0.1] * 3 + [1.0] * 15
    dead_from = len(series)
    series += [1.0] * 60

    async def main():
        for i, k in enumerate(series):
            clock[0] = t0 + 60.0 * i
            if i < dead_from:
                doc = {
                    "litecoin": {"usd": 70.0 * k, "last_updated_at": clock[0]},
                    "dogecoin": {"usd": 0.08 * k, "last_updated_at": clock[0]},
                }
                server.status, server.body = 200, json.dumps(doc).encode()
            else:
                server.status = 503
            await loop.tick()

    with caplog.at_level(logging.INFO, logger="agent.control.guardian"):
        asyncio.run(main())
    rel = [(round((t - t0) / 60), s) for t, s in events]
    print("\nguardian events (minute, state):", rel, "\ncounts:", dict(loop.counts))
    # pause at the first dip; the recovery at minute 8 waits for the dwell (10 min)
    assert rel[0] == (5, "paused") and rel[1] == (15, "mining")
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(events)]
    assert all(g >= o.min_dwell_s for g in gaps), gaps
    # the band oscillation (0.4..0.7 never below the pause threshold) does not pause
    assert not any(20 <= m < 32 for m, _ in rel)
    assert (32, "paused") in rel and any(s == "mining" and 42 <= m < dead_from for m, s in rel)
    # the feed dies: 30 min later the cache is stale and the policy pauses
    last_m, last_s = rel[-1]
    assert last_s == "paused" and dead_from + 30 <= last_m <= dead_from + 32
    assert loop.last.code == "stale_pause"
    assert loop.counts["refresh_failed"] >= 30 and loop.counts["refreshed"] == dead_from
    assert "pausing" in caplog.text and "price refresh failed" in caplog.text


def test_loop_survives_bad_reads_and_a_failing_pause(tmp_path):
    (tmp_path / "prices.json").write_text(
        json.dumps({"litecoin": {"usd": 1.0, "last_updated_at": 1000.0}})
    )
    o = GuardianOptions(enabled=True, price_max_age_s=1e9)

    def boom():
        raise OSError("sensor bus")

    def bad_pause():
        raise RuntimeError("chains busy")

    loop = GuardianLoop(
        boom, lambda: None, bad_pause, lambda: None, tmp_path / "prices.json", o,
        read_nbits=boom, clock=lambda: 2000.0, nominal_hashrate_hs=HS,
    )  # fmt: skip
    d = asyncio.run(loop.tick())
    assert d.state == "paused" and loop.counts["read_failed"] == 1
    assert loop.counts["apply_failed"] == 1 and loop.memory.state == "mining"  # not applied
    asyncio.run(loop.tick())
    assert loop.counts["apply_failed"] == 2  # so it is tried again on the next tick
    # a corrupt cache: counted, policy applies (keep_mining default), loop goes on
    (tmp_path / "prices.json").write_bytes(b"\x00garbage")
    loop2 = GuardianLoop(
        lambda: HS, lambda: W, bad_pause, lambda: None, tmp_path / "prices.json", o
    )
    d = asyncio.run(loop2.tick())
    assert d.code == "stale_keep" and "not JSON" in d.reason
    assert loop2.counts["price_cache_bad"] == 1


def test_loop_run_stops_on_event(tmp_path):
    loop = GuardianLoop(lambda: HS, lambda: W, lambda: None, lambda: None, tmp_path / "p.json",
                        GuardianOptions(interval_s=0))  # fmt: skip

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        while loop.last is None:
            await asyncio.sleep(0)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert loop.last.code == "disabled"
