"""The economic guardian: mine while it pays, pause (chains down, pools kept) while it does not.

decide(inputs, options, memory) -> GuardianDecision(state, reason, ...) is pure. Profit per day:

    revenue = hashrate x 86400 / (difficulty x 2**32) x block reward x price     (LTC)
            + the same at DOGE's own difficulty, reward and price               (merged mining)
    profit  = revenue - watts / 1000 x 24 x price per kWh

Difficulty comes from the pool's notify nBits (LTC) or the configured cache values; prices from a
local cache file in CoinGecko's simple/price format ({"litecoin": {"usd": 70.1}, "dogecoin":
{"usd": 0.08}}, optionally with "last_updated_at"), refreshed from a configured URL when the
network allows. Prices older than price_max_age_s follow stale_policy: keep_mining, pause, or
last_known (the last fresh prices seen). Hysteresis: pause below pause_below_usd_day, resume
above resume_above_usd_day; and never a change within min_dwell_s of the last one.

GuardianLoop is the thin shell: refresh (urllib in an executor, with a timeout), read the cache,
decide, call pause() / resume() on a change, log every changed reason."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import math
import os
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from agent import defaults as D
from agent.mining.targets import network_difficulty

log = logging.getLogger(__name__)

State = Literal["mining", "paused"]
SECONDS_PER_DAY = 86400.0


# ---------------------------------------------------------------------------- options


@dataclass(frozen=True)
class GuardianOptions:
    enabled: bool = False  # off unless configured: no peer firmware pauses on price
    pause_below_usd_day: float = D.GUARDIAN_PAUSE_BELOW_USD_DAY
    resume_above_usd_day: float = D.GUARDIAN_RESUME_ABOVE_USD_DAY
    min_dwell_s: float = D.GUARDIAN_MIN_DWELL_S
    price_max_age_s: float = D.GUARDIAN_PRICE_MAX_AGE_S
    stale_policy: str = D.GUARDIAN_STALE_POLICY
    electricity_usd_kwh: float = D.GUARDIAN_ELECTRICITY_USD_KWH
    ltc_reward: float = D.GUARDIAN_LTC_REWARD
    doge_reward: float = D.GUARDIAN_DOGE_REWARD
    merged_mining: bool = D.GUARDIAN_MERGED_MINING
    ltc_difficulty: float = D.GUARDIAN_LTC_DIFFICULTY
    doge_difficulty: float = D.GUARDIAN_DOGE_DIFFICULTY
    currency: str = "usd"
    price_url: str | None = None
    price_file: str = D.GUARDIAN_PRICE_FILE  # relative to the state dir unless absolute
    refresh_s: float = D.GUARDIAN_REFRESH_S
    fetch_timeout_s: float = D.GUARDIAN_FETCH_TIMEOUT_S
    watts_default: float = D.GUARDIAN_WATTS_DEFAULT
    interval_s: float = D.GUARDIAN_INTERVAL_S

    def __post_init__(self) -> None:
        if self.stale_policy not in D.GUARDIAN_STALE_POLICIES:
            raise ValueError(
                f"stale_policy must be one of {D.GUARDIAN_STALE_POLICIES}, "
                f"got {self.stale_policy!r}"
            )
        if not self.resume_above_usd_day > self.pause_below_usd_day:
            raise ValueError("resume_above_usd_day must be greater than pause_below_usd_day")
        for name in ("min_dwell_s", "price_max_age_s", "electricity_usd_kwh", "fetch_timeout_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0")
        if not (self.ltc_difficulty > 0 and self.doge_difficulty > 0):
            raise ValueError("difficulties must be positive")
        if self.price_url is not None:
            scheme = urllib.parse.urlsplit(self.price_url).scheme
            if scheme not in ("http", "https"):
                raise ValueError(f"price_url must be http(s), got {self.price_url!r}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | Any | None) -> GuardianOptions:
        from agent.control.thermal import options_kwargs

        return cls(**options_kwargs(cls, section))


# ---------------------------------------------------------------------------- prices


class PriceError(ValueError):
    """The price cache or the fetched document is unusable; the message says why."""


@dataclass(frozen=True)
class Prices:
    ltc: float
    doge: float | None
    updated_at: float | None = None  # unix time, from last_updated_at if the source gave it


def _price(
    doc: dict[str, Any], coin: str, currency: str, required: bool
) -> tuple[float | None, float | None]:
    entry = doc.get(coin)
    if entry is None and not required:
        return None, None
    if not isinstance(entry, dict):
        raise PriceError(f"{coin}: not an object")
    raw = entry.get(currency)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise PriceError(f"{coin}.{currency}: not a number: {str(raw)[:40]!r}")
    try:
        value = float(raw)
    except OverflowError:
        raise PriceError(f"{coin}.{currency}: out of range") from None
    if not (math.isfinite(value) and value > 0):
        raise PriceError(f"{coin}.{currency}: must be a positive number, got {value!r}")
    ts = entry.get("last_updated_at")
    at: float | None = None
    if ts is not None:
        if isinstance(ts, bool) or not isinstance(ts, int | float):
            raise PriceError(f"{coin}.last_updated_at: not a number")
        try:
            at = float(ts)
        except OverflowError:
            raise PriceError(f"{coin}.last_updated_at: out of range") from None
        if not (math.isfinite(at) and at >= 0):
            raise PriceError(f"{coin}.last_updated_at: not a time")
    return value, at


def parse_prices(data: bytes | str, currency: str = "usd") -> Prices:
    """Prices from CoinGecko simple/price JSON, or PriceError; never any other exception."""
    if isinstance(data, bytes | bytearray):
        if len(data) > D.GUARDIAN_MAX_PRICE_BYTES:
            raise PriceError(f"{len(data)} bytes: larger than {D.GUARDIAN_MAX_PRICE_BYTES}")
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise PriceError(f"not UTF-8: {e.reason} at byte {e.start}") from None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise PriceError(f"not JSON: {str(e)[:80]}") from None
    if not isinstance(doc, dict):
        raise PriceError(f"not a JSON object but {type(doc).__name__}")
    ltc, ltc_at = _price(doc, "litecoin", currency, True)
    doge, doge_at = _price(doc, "dogecoin", currency, False)
    assert ltc is not None
    stamps = [t for t in (ltc_at, doge_at) if t is not None]
    return Prices(ltc, doge, min(stamps) if stamps else None)


def read_price_cache(path: str | Path, currency: str = "usd") -> Prices:
    """The cache file's prices (updated_at falls back to the file's mtime), or PriceError."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(D.GUARDIAN_MAX_PRICE_BYTES + 1)
            mtime = os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        raise PriceError(f"{p}: no price cache yet") from None
    except OSError as e:
        raise PriceError(f"{p}: unreadable: {e.strerror or e}") from None
    prices = parse_prices(data, currency)
    return prices if prices.updated_at is not None else replace(prices, updated_at=mtime)


def _write_atomic(path: Path, data: bytes) -> None:
    import tempfile  # here: used once per price refresh

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".prices-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fetch_prices(url: str, path: str | Path, timeout_s: float, currency: str = "usd") -> Prices:
    """Blocking: GET url, validate, then replace the cache file atomically. PriceError if not."""
    import urllib.request  # here, not at the top: with http.client and email, ~1.5 MB of RSS

    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise PriceError(f"refusing a non-http(s) price URL: {url!r}")
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:  # scheme checked above
            data = r.read(D.GUARDIAN_MAX_PRICE_BYTES + 1)
    except (OSError, ValueError) as e:  # URLError, HTTPError and timeouts are OSErrors
        raise PriceError(f"fetching {url} failed: {e}") from None
    prices = parse_prices(data, currency)  # never cache what does not parse
    try:
        _write_atomic(Path(path), data)
    except OSError as e:
        raise PriceError(f"writing the price cache {path} failed: {e}") from None
    return prices


# ---------------------------------------------------------------------------- economics


def difficulty_from_nbits(nbits: object) -> float | None:
    """Network difficulty from a notify's nBits (int or 8 hex digits), or None if unusable."""
    try:
        bits = int(nbits, 16) if isinstance(nbits, str) else nbits
        if isinstance(bits, bool) or not isinstance(bits, int) or not 0 < bits < 1 << 32:
            return None
        d = network_difficulty(bits)
    except (ValueError, ZeroDivisionError, OverflowError, TypeError):
        return None
    return d if math.isfinite(d) and d > 0 else None


def coin_usd_day(hashrate_hs: float, difficulty: float, reward: float, price: float) -> float:
    """Expected value per day: hashes per day / hashes per block x reward x price."""
    return hashrate_hs * SECONDS_PER_DAY / (difficulty * 2**32) * reward * price


@dataclass(frozen=True)
class Economics:
    ltc_usd_day: float
    doge_usd_day: float
    power_usd_day: float

    @property
    def revenue_usd_day(self) -> float:
        return self.ltc_usd_day + self.doge_usd_day

    @property
    def profit_usd_day(self) -> float:
        return self.revenue_usd_day - self.power_usd_day

    def describe(self) -> str:
        return (
            f"profit {self.profit_usd_day:+.2f} $/day (LTC {self.ltc_usd_day:.2f} + DOGE "
            f"{self.doge_usd_day:.2f} - power {self.power_usd_day:.2f})"
        )


def economics(
    hashrate_hs: float,
    power_w: float,
    prices: Prices,
    options: GuardianOptions,
    ltc_difficulty: float | None = None,
    doge_difficulty: float | None = None,
) -> Economics:
    ltc_d = ltc_difficulty or options.ltc_difficulty
    doge_d = doge_difficulty or options.doge_difficulty
    ltc = coin_usd_day(hashrate_hs, ltc_d, options.ltc_reward, prices.ltc)
    doge = 0.0
    if options.merged_mining and prices.doge is not None:
        doge = coin_usd_day(hashrate_hs, doge_d, options.doge_reward, prices.doge)
    power = power_w / 1000.0 * 24.0 * options.electricity_usd_kwh
    return Economics(ltc, doge, power)


# ---------------------------------------------------------------------------- decide


@dataclass(frozen=True)
class GuardianInputs:
    now: float  # unix time (prices carry unix timestamps)
    hashrate_hs: float  # while mining (the last measured or the model while paused)
    power_w: float  # while mining, at the wall
    prices: Prices | None  # None: no usable cache
    price_problem: str | None = None
    ltc_difficulty: float | None = None  # from notify nBits; None -> options
    doge_difficulty: float | None = None


@dataclass(frozen=True)
class GuardianMemory:
    state: State = "mining"
    since: float | None = None  # when the state last changed (None: never)
    last_prices: Prices | None = None  # the last fresh prices seen


@dataclass(frozen=True)
class GuardianDecision:
    state: State
    reason: str
    code: str  # disabled, profitable, unprofitable, hysteresis, dwell, stale_keep, stale_pause,
    #            stale_last_known, no_prices
    changed: bool
    profit_usd_day: float | None
    memory: GuardianMemory


def decide(
    inputs: GuardianInputs, options: GuardianOptions, memory: GuardianMemory | None
) -> GuardianDecision:
    m = memory or GuardianMemory()
    o = options
    if not o.enabled:
        return _finish(
            m, "mining", "guardian disabled: always mining", "disabled", None, inputs.now, 0.0
        )

    prices = inputs.prices
    age = None if prices is None or prices.updated_at is None else inputs.now - prices.updated_at
    fresh = prices is not None and age is not None and age <= o.price_max_age_s
    if fresh:
        m = replace(m, last_prices=prices)
    else:
        what = (
            f"prices {age / 3600:.1f} h old (limit {o.price_max_age_s / 3600:g} h)"
            if prices is not None and age is not None
            else f"no prices ({inputs.price_problem or 'unknown'})"
        )
        if o.stale_policy == "keep_mining":
            return _finish(
                m,
                "mining",
                f"{what}: keep mining by policy",
                "stale_keep",
                None,
                inputs.now,
                o.min_dwell_s,
            )
        if o.stale_policy == "pause":
            return _finish(
                m,
                "paused",
                f"{what}: pausing by policy",
                "stale_pause",
                None,
                inputs.now,
                o.min_dwell_s,
            )
        if m.last_prices is None:
            return _finish(
                m,
                "mining",
                f"{what} and none known before: keep mining",
                "no_prices",
                None,
                inputs.now,
                o.min_dwell_s,
            )
        prices = m.last_prices
        assert prices is not None

    eco = economics(
        inputs.hashrate_hs, inputs.power_w, prices, o, inputs.ltc_difficulty, inputs.doge_difficulty
    )
    profit = eco.profit_usd_day
    note = "" if fresh else " on the last known prices"
    code_suffix = "" if fresh else "_last_known"
    if m.state == "mining" and profit < o.pause_below_usd_day:
        target: State = "paused"
        why = f"{eco.describe()}{note} below {o.pause_below_usd_day:+.2f} $/day: pausing"
        code = "unprofitable"
    elif m.state == "paused" and profit > o.resume_above_usd_day:
        target = "mining"
        why = f"{eco.describe()}{note} above {o.resume_above_usd_day:+.2f} $/day: resuming"
        code = "profitable"
    else:
        target = m.state
        band = f"{o.pause_below_usd_day:+.2f}..{o.resume_above_usd_day:+.2f}"
        if m.state == "mining" and profit >= o.resume_above_usd_day:
            why, code = f"{eco.describe()}{note}: mining", "profitable"
        elif m.state == "paused" and profit <= o.pause_below_usd_day:
            why, code = f"{eco.describe()}{note}: staying paused", "unprofitable"
        else:
            why, code = (
                f"{eco.describe()}{note} inside the hysteresis band {band}: {m.state}",
                "hysteresis",
            )
    return _finish(m, target, why, code + code_suffix, profit, inputs.now, o.min_dwell_s)


def _finish(
    m: GuardianMemory,
    target: State,
    why: str,
    code: str,
    profit: float | None,
    now: float,
    dwell_s: float,
) -> GuardianDecision:
    """Apply the dwell time: no change within dwell_s of the last one."""
    if target == m.state:
        return GuardianDecision(m.state, why, code, False, profit, m)
    if m.since is not None and now - m.since < dwell_s:
        left = dwell_s - (now - m.since)
        held = f"{why}; held {m.state} for the dwell time ({left:.0f} s left)"
        return GuardianDecision(m.state, held, "dwell", False, profit, m)
    return GuardianDecision(target, why, code, True, profit, replace(m, state=target, since=now))


# ---------------------------------------------------------------------------- the loop


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    r = fn(*args)
    return await r if inspect.isawaitable(r) else r


@dataclass
class GuardianLoop:
    """read_hashrate() -> H/s now; read_power() -> W at the wall or None (modelled);
    read_nbits() -> the current notify's nBits or None; pause() / resume() on a change.
    Each may be sync or async. While paused, the figures last measured while mining are used."""

    read_hashrate: Callable[[], Any]
    read_power: Callable[[], Any]
    pause: Callable[[], Any]
    resume: Callable[[], Any]
    price_path: str | Path
    options: GuardianOptions = field(default_factory=GuardianOptions)
    read_nbits: Callable[[], Any] | None = None
    clock: Callable[[], float] = time.time
    nominal_hashrate_hs: float = 0.0  # used until a hashrate has been measured while mining
    logger: logging.Logger = log
    memory: GuardianMemory = field(default_factory=GuardianMemory)
    counts: Counter[str] = field(default_factory=Counter)
    last: GuardianDecision | None = None
    last_refresh: float | None = None
    _mining_hs: float | None = None
    _mining_w: float | None = None
    _ltc_difficulty: float | None = None
    _shown: str | None = None

    async def refresh(self) -> Prices | None:
        """Fetch the price URL into the cache (in an executor, with the timeout)."""
        url = self.options.price_url
        if url is None:
            return None
        self.last_refresh = self.clock()
        loop = asyncio.get_running_loop()
        try:
            prices = await loop.run_in_executor(
                None, fetch_prices, url, self.price_path, self.options.fetch_timeout_s,
                self.options.currency,
            )  # fmt: skip
        except PriceError as e:
            self.counts["refresh_failed"] += 1
            self.logger.warning("guardian: price refresh failed (cache kept): %s", e)
            return None
        self.counts["refreshed"] += 1
        return prices

    async def _figures(self) -> tuple[float, float]:
        try:
            hs = float(await _call(self.read_hashrate))
            w = await _call(self.read_power)
            w = None if w is None else float(w)
        except Exception as e:
            self.counts["read_failed"] += 1
            self.logger.warning("guardian: reading hashrate/power failed: %s", e)
            hs, w = 0.0, None
        if self.memory.state == "mining" and math.isfinite(hs) and hs > 0:
            self._mining_hs = hs
            if w is not None and math.isfinite(w) and w > 0:
                self._mining_w = w
        hs_used = self._mining_hs if self._mining_hs is not None else self.nominal_hashrate_hs
        w_used = self._mining_w if self._mining_w is not None else self.options.watts_default
        return hs_used, w_used

    async def tick(self) -> GuardianDecision:
        now = self.clock()
        o = self.options
        if (
            o.enabled
            and o.price_url
            and (self.last_refresh is None or now - self.last_refresh >= o.refresh_s)
        ):
            await self.refresh()
        prices: Prices | None = None
        problem: str | None = None
        if o.enabled:
            try:
                prices = read_price_cache(self.price_path, o.currency)
            except PriceError as e:
                problem = str(e)
                self.counts["price_cache_bad"] += 1
        if self.read_nbits is not None:
            try:
                d = difficulty_from_nbits(await _call(self.read_nbits))
            except Exception:
                d = None
            if d is not None:
                self._ltc_difficulty = d
        hs, w = await self._figures()
        inputs = GuardianInputs(now, hs, w, prices, problem, self._ltc_difficulty)
        d = decide(inputs, o, self.memory)
        before = self.memory
        self.memory, self.last = d.memory, d
        if d.code != self._shown:
            self._shown = d.code
            self.counts[f"reason:{d.code}"] += 1
            self.logger.info("guardian: %s: %s", d.state, d.reason)
        if d.changed:
            self.counts[d.state] += 1
            self.logger.warning(
                "guardian: %s: %s", "pausing" if d.state == "paused" else "resuming", d.reason
            )
            try:
                await _call(self.pause if d.state == "paused" else self.resume)
            except Exception as e:
                self.counts["apply_failed"] += 1
                self.logger.error("guardian: %s failed (retried next tick): %s", d.state, e)
                self.memory = before  # not applied: the state did not change
        return d

    async def run(self, stop: asyncio.Event | None = None) -> None:
        while stop is None or not stop.is_set():
            await self.tick()
            if stop is None:
                await asyncio.sleep(self.options.interval_s)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.options.interval_s)
