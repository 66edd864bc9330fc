"""Thermal control: a pure decide() over temperatures and fans, and a thin periodic ThermalLoop.

decide(readings, fans, options, memory, now) -> ThermalDecision. readings maps each chain to its
sensor values in °C (None = no reading); fans are (index, rpm, duty_pct) samples. The decision
holds the fan duty (None in immersion mode), one action per chain (run, throttle to a share of the
tuned clock, or power_off), the latched flags, and a reason for every one of them. Memory (PID
state, throttle levels, latches, last raw readings) goes in and comes back out: nothing is kept
anywhere else, so the same inputs always give the same decision.

Rules (reference §3.2, §4; DESIGN rule 6):
- a reading that is missing, a sentinel (0, 255), outside the plausible range or a jump no board
  can make between two samples is not trusted: fans 100 %;
- the fan duty is a PID on the hottest trusted reading toward target_temp_c, clamped to
  [fan_min_pct, 100], with conditional integration (anti-windup); at or above hot_temp_c, 100 %;
- a chain at or above hot_temp_c is throttled one step per throttle_interval_s, and stepped back
  up once below hot - margin;
- a chain at or above dangerous_temp_c has its DC-DC turned off, latched; it retries only when it
  reads below rearm_temp_c and cooldown_s has passed, at rearm_freq_pct; after max_trips trips it
  stays off until restart;
- a chain with no trusted reading for sensor_lost_s is tripped like an overheat;
- in air mode, a fan at 0 rpm with non-zero duty for fan_grace_s trips every chain (latched until
  every fan spins again and the cool-down has passed); immersion mode has no fans to check."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from agent import defaults as D

log = logging.getLogger(__name__)

Action = Literal["run", "throttle", "power_off"]


# ---------------------------------------------------------------------------- options


@dataclass(frozen=True)
class ThermalOptions:
    mode: str = D.THERMAL_MODE
    target_temp_c: float = D.TARGET_TEMP_C
    hot_temp_c: float = D.HOT_TEMP_C
    dangerous_temp_c: float = D.DANGEROUS_TEMP_C
    rearm_temp_c: float = D.THERMAL_REARM_TEMP_C
    cooldown_s: float = D.THERMAL_COOLDOWN_S
    max_trips: int = D.THERMAL_MAX_TRIPS
    rearm_freq_pct: float = D.THERMAL_REARM_FREQ_PCT
    throttle_step_pct: float = D.THERMAL_THROTTLE_STEP_PCT
    throttle_min_pct: float = D.THERMAL_THROTTLE_MIN_PCT
    throttle_interval_s: float = D.THERMAL_THROTTLE_INTERVAL_S
    unthrottle_margin_c: float = D.THERMAL_UNTHROTTLE_MARGIN_C
    sensor_lost_s: float = D.THERMAL_SENSOR_LOST_S
    plausible_min_c: float = D.SENSOR_MIN_PLAUSIBLE_C
    plausible_max_c: float = D.SENSOR_MAX_PLAUSIBLE_C
    sentinels_c: tuple[float, ...] = D.THERMAL_SENTINELS_C
    max_jump_c: float = D.THERMAL_MAX_JUMP_C
    fan_grace_s: float = D.FAN_DEAD_GRACE_S
    fan_min_pct: float = D.THERMAL_FAN_MIN_PCT
    fan_max_pct: float = D.THERMAL_FAN_MAX_PCT
    kp: float = D.THERMAL_PID_KP
    ki: float = D.THERMAL_PID_KI
    kd: float = D.THERMAL_PID_KD
    bias_pct: float = D.THERMAL_PID_BIAS_PCT
    interval_s: float = D.THERMAL_INTERVAL_S

    def __post_init__(self) -> None:
        if self.mode not in D.THERMAL_MODES:
            raise ValueError(f"thermal mode must be one of {D.THERMAL_MODES}, got {self.mode!r}")
        if not self.rearm_temp_c < self.target_temp_c <= self.hot_temp_c < self.dangerous_temp_c:
            raise ValueError(
                "thermal thresholds must satisfy rearm < target <= hot < dangerous, got "
                f"{self.rearm_temp_c:g} / {self.target_temp_c:g} / {self.hot_temp_c:g} / "
                f"{self.dangerous_temp_c:g}"
            )
        if not 0 <= self.fan_min_pct <= self.fan_max_pct <= 100:
            raise ValueError("fan limits must satisfy 0 <= fan_min_pct <= fan_max_pct <= 100")
        if not 0 < self.throttle_min_pct <= self.rearm_freq_pct <= 100:
            raise ValueError("throttle_min_pct <= rearm_freq_pct <= 100 required")

    @property
    def immersion(self) -> bool:
        return self.mode == "immersion"

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | Any | None) -> ThermalOptions:
        """From a [thermal] mapping (or an object with those attributes); unset keys -> defaults."""
        return cls(**options_kwargs(cls, section))


def options_kwargs(cls: type, section: Mapping[str, Any] | Any | None) -> dict[str, Any]:
    if section is None:
        return {}
    names = cls.__dataclass_fields__  # type: ignore[attr-defined]
    if isinstance(section, Mapping):
        return {k: v for k, v in section.items() if k in names and v is not None}
    return {k: getattr(section, k) for k in names if getattr(section, k, None) is not None}


# ---------------------------------------------------------------------------- inputs / outputs


class FanSample(Protocol):
    """agent.hardware.fans.FanReading fits."""

    @property
    def index(self) -> int: ...
    @property
    def rpm(self) -> int | None: ...
    @property
    def duty_pct(self) -> float: ...


@dataclass(frozen=True)
class Fan:
    index: int
    rpm: int | None
    duty_pct: float


@dataclass(frozen=True)
class ChainAction:
    chain: int
    action: Action
    freq_pct: float  # share of the tuned clock to run at (0 when powered off)
    code: str  # ok, hot, cooling, overheat, cooldown, locked_out, sensor_lost, fan_failed, blind
    reason: str


@dataclass(frozen=True)
class ChainMemory:
    freq_pct: float = 100.0
    last_step_t: float | None = None
    tripped_at: float | None = None
    trip_reason: str = ""
    trip_code: str = ""  # overheat | sensor_lost
    trips: int = 0
    blind_since: float | None = None


@dataclass(frozen=True)
class ThermalMemory:
    t: float | None = None
    integral: float = 0.0
    last_temp_c: float | None = None
    last_raw: Mapping[tuple[int, int], float] = field(default_factory=dict)
    chains: Mapping[int, ChainMemory] = field(default_factory=dict)
    fan_zero_since: Mapping[int, float] = field(default_factory=dict)
    fan_failed_at: float | None = None
    fan_failed_reason: str = ""


@dataclass(frozen=True)
class ThermalDecision:
    fan_duty_pct: float | None  # None: immersion, no fan control
    fan_code: str  # pid, hot, unknown_temp, fan_failed, immersion, no_chains
    fan_reason: str
    chains: tuple[ChainAction, ...]
    flags: frozenset[str]  # latched: overheat, fan_failed, sensor_lost, locked_out
    hottest_c: float | None
    problems: tuple[str, ...]  # each reading not trusted, with why
    memory: ThermalMemory

    def action(self, chain: int) -> ChainAction:
        for a in self.chains:
            if a.chain == chain:
                return a
        raise KeyError(chain)


# ---------------------------------------------------------------------------- pure helpers


def judge_reading(
    value: object, previous: float | None, options: ThermalOptions
) -> tuple[float | None, str | None]:
    """(trusted °C, None) or (None, why the value is not trusted)."""
    if value is None:
        return None, "no reading"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"not a number: {value!r}"
    v = float(value)
    if not math.isfinite(v):
        return None, f"not finite: {v!r}"
    if v in options.sentinels_c:
        return None, f"{v:g} °C is a no-reading sentinel"
    if not options.plausible_min_c <= v <= options.plausible_max_c:
        return None, (
            f"{v:g} °C outside {options.plausible_min_c:g}..{options.plausible_max_c:g} °C"
        )
    if previous is not None and abs(v - previous) > options.max_jump_c:
        return (
            None,
            f"jumped {v - previous:+.1f} °C since the last sample (> {options.max_jump_c:g})",
        )
    return v, None


def pid_step(
    temp_c: float, memory: ThermalMemory, dt_s: float, options: ThermalOptions
) -> tuple[float, float]:
    """(duty %, new integral). Derivative on the measurement; the integral only grows while the
    output is not saturated in the direction it would push (conditional integration)."""
    error = temp_c - options.target_temp_c
    deriv = 0.0
    if memory.last_temp_c is not None and dt_s > 0:
        deriv = (temp_c - memory.last_temp_c) / dt_s
    lo, hi = options.fan_min_pct, options.fan_max_pct
    integral = memory.integral
    unclamped = options.bias_pct + options.kp * error + integral + options.kd * deriv
    saturated_hi = unclamped >= hi and error > 0
    saturated_lo = unclamped <= lo and error < 0
    if dt_s > 0 and not (saturated_hi or saturated_lo):
        integral += options.ki * error * dt_s
    # the integral alone never needs to reach beyond the output range
    integral = max(lo - options.bias_pct, min(hi - options.bias_pct, integral))
    duty = options.bias_pct + options.kp * error + integral + options.kd * deriv
    return max(lo, min(hi, duty)), integral


# ---------------------------------------------------------------------------- decide


def decide(
    readings: Mapping[int, Sequence[float | None]],
    fans: Sequence[FanSample],
    options: ThermalOptions,
    memory: ThermalMemory | None,
    now: float,
) -> ThermalDecision:
    memory = memory or ThermalMemory()
    dt = 0.0 if memory.t is None else max(0.0, now - memory.t)
    chain_ids = sorted(set(readings) | set(memory.chains))

    # 1. trust each reading
    last_raw: dict[tuple[int, int], float] = {}
    problems: list[str] = []
    hottest: dict[int, float | None] = {}
    any_untrusted = False
    for c in chain_ids:
        values = list(readings.get(c, ()))
        if not values:
            any_untrusted = True
            problems.append(f"chain {c}: no sensor readings")
        best: float | None = None
        for i, raw in enumerate(values):
            prev = memory.last_raw.get((c, i))
            temp, why = judge_reading(raw, prev, options)
            if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
                last_raw[(c, i)] = float(raw)  # a held step is trusted on the next sample
            if why is not None:
                any_untrusted = True
                problems.append(f"chain {c} sensor {i}: {why}")
            elif temp is not None and (best is None or temp > best):
                best = temp
        hottest[c] = best
    trusted = [t for t in hottest.values() if t is not None]
    hottest_all = max(trusted) if trusted else None

    # 2. fans (air only)
    zero_since: dict[int, float] = {}
    fan_failed_at = memory.fan_failed_at
    fan_failed_reason = memory.fan_failed_reason
    if not options.immersion:
        dead: list[str] = []
        all_spin = bool(fans)
        for f in fans:
            stopped = f.rpm is not None and f.rpm <= 0 and f.duty_pct > 0
            if f.rpm is None or f.rpm <= 0:
                all_spin = False
            if stopped:
                since = memory.fan_zero_since.get(f.index, now)
                zero_since[f.index] = since
                if now - since >= options.fan_grace_s:
                    dead.append(
                        f"fan {f.index} at 0 rpm for {now - since:.0f} s at {f.duty_pct:.0f} % duty"
                    )
        if dead and fan_failed_at is None:
            fan_failed_at, fan_failed_reason = now, "; ".join(dead)
        elif (
            fan_failed_at is not None
            and not dead
            and all_spin
            and now - fan_failed_at >= options.cooldown_s
        ):
            fan_failed_at, fan_failed_reason = None, ""
    else:
        fan_failed_at, fan_failed_reason = None, ""

    # 3. per chain
    actions: list[ChainAction] = []
    chains_mem: dict[int, ChainMemory] = {}
    flags: set[str] = set()
    for c in chain_ids:
        cm = memory.chains.get(c, ChainMemory())
        act, cm = _chain(c, hottest[c], cm, options, now, fan_failed_at, fan_failed_reason)
        actions.append(act)
        chains_mem[c] = cm
        if cm.tripped_at is not None and cm.trip_code == "overheat":
            flags.add("overheat")
        if cm.tripped_at is not None and cm.trip_code == "sensor_lost":
            flags.add("sensor_lost")
        if act.code == "locked_out":
            flags.add("locked_out")
    if fan_failed_at is not None:
        flags.add("fan_failed")

    # 4. fan duty
    integral, last_temp = memory.integral, memory.last_temp_c
    duty: float | None
    if options.immersion:
        duty, code, why = None, "immersion", "immersion mode: no fan control"
    elif fan_failed_at is not None:
        duty, code, why = 100.0, "fan_failed", f"fan failure: {fan_failed_reason}"
    elif any_untrusted or hottest_all is None:
        first = problems[0] if problems else "no chains reported"
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        duty, code, why = 100.0, "unknown_temp", f"temperature not known: {first}{more}"
    elif hottest_all >= options.hot_temp_c:
        duty, code = 100.0, "hot"
        why = f"hottest {hottest_all:.1f} °C >= hot {options.hot_temp_c:g} °C"
    else:
        duty, integral = pid_step(hottest_all, memory, dt, options)
        code = "pid"
        why = f"PID: hottest {hottest_all:.1f} °C, target {options.target_temp_c:g} °C"
    if hottest_all is not None:
        last_temp = hottest_all

    new_memory = ThermalMemory(
        t=now,
        integral=integral,
        last_temp_c=last_temp,
        last_raw=last_raw,
        chains=chains_mem,
        fan_zero_since=zero_since,
        fan_failed_at=fan_failed_at,
        fan_failed_reason=fan_failed_reason,
    )
    return ThermalDecision(
        fan_duty_pct=None if duty is None else round(duty, 2),
        fan_code=code,
        fan_reason=why,
        chains=tuple(actions),
        flags=frozenset(flags),
        hottest_c=hottest_all,
        problems=tuple(problems),
        memory=new_memory,
    )


def _chain(
    c: int,
    temp: float | None,
    cm: ChainMemory,
    o: ThermalOptions,
    now: float,
    fan_failed_at: float | None,
    fan_failed_reason: str,
) -> tuple[ChainAction, ChainMemory]:
    blind_since = (
        None if temp is not None else (cm.blind_since if cm.blind_since is not None else now)
    )
    cm = replace(cm, blind_since=blind_since)
    shown = "no trusted reading" if temp is None else f"{temp:.1f} °C"

    # latched overheat / sensor-loss trip
    if cm.tripped_at is not None:
        if cm.trips >= o.max_trips:
            return ChainAction(
                c, "power_off", 0.0, "locked_out",
                f"chain {c}: tripped {cm.trips} times (last: {cm.trip_reason}); off until restart",
            ), cm  # fmt: skip
        waited = now - cm.tripped_at
        if temp is None or temp >= o.rearm_temp_c or waited < o.cooldown_s:
            return ChainAction(
                c, "power_off", 0.0, "cooldown",
                f"chain {c}: cooling down after '{cm.trip_reason}': {shown}, {waited:.0f} s; "
                f"retry below {o.rearm_temp_c:g} °C after {o.cooldown_s:g} s",
            ), cm  # fmt: skip
        cm = replace(cm, tripped_at=None, freq_pct=o.rearm_freq_pct, last_step_t=now)
        if fan_failed_at is None:
            return ChainAction(
                c, "throttle", cm.freq_pct, "rearmed",
                f"chain {c}: re-armed at {temp:.1f} °C after {waited:.0f} s; "
                f"restarting at {cm.freq_pct:g} %",
            ), cm  # fmt: skip

    # new trips
    if temp is not None and temp >= o.dangerous_temp_c:
        why = f"{temp:.1f} °C >= dangerous {o.dangerous_temp_c:g} °C"
        cm = replace(
            cm, tripped_at=now, trip_reason=why, trip_code="overheat", trips=cm.trips + 1,
            freq_pct=0.0,
        )  # fmt: skip
        return ChainAction(c, "power_off", 0.0, "overheat", f"chain {c}: DC-DC off: {why}"), cm
    if blind_since is not None and now - blind_since >= o.sensor_lost_s:
        why = f"no trusted temperature for {now - blind_since:.0f} s"
        cm = replace(
            cm, tripped_at=now, trip_reason=why, trip_code="sensor_lost", trips=cm.trips + 1,
            freq_pct=0.0,
        )  # fmt: skip
        return ChainAction(c, "power_off", 0.0, "sensor_lost", f"chain {c}: DC-DC off: {why}"), cm
    if fan_failed_at is not None:
        return ChainAction(
            c,
            "power_off",
            0.0,
            "fan_failed",
            f"chain {c}: DC-DC off: fan failure: {fan_failed_reason}",
        ), cm

    # throttle
    pct = cm.freq_pct if cm.freq_pct > 0 else 100.0
    ready = cm.last_step_t is None or now - cm.last_step_t >= o.throttle_interval_s
    if temp is not None and temp >= o.hot_temp_c:
        if ready and pct > o.throttle_min_pct:
            pct = max(o.throttle_min_pct, pct - o.throttle_step_pct)
            cm = replace(cm, freq_pct=pct, last_step_t=now)
        return ChainAction(
            c,
            "throttle",
            pct,
            "hot",
            f"chain {c}: {shown} >= hot {o.hot_temp_c:g} °C: clock at {pct:g} %",
        ), cm
    if pct < 100.0:
        cool = temp is not None and temp < o.hot_temp_c - o.unthrottle_margin_c
        if cool and ready:
            pct = min(100.0, pct + o.throttle_step_pct)
            cm = replace(cm, freq_pct=pct, last_step_t=now)
        if pct < 100.0:
            return ChainAction(
                c, "throttle", pct, "cooling",
                f"chain {c}: {shown}: clock at {pct:g} %, stepping up below "
                f"{o.hot_temp_c - o.unthrottle_margin_c:g} °C",
            ), cm  # fmt: skip
    cm = replace(cm, freq_pct=100.0)
    if temp is None:
        return ChainAction(
            c, "run", 100.0, "blind",
            f"chain {c}: no trusted reading for {now - (blind_since or now):.0f} s; fans 100 %, "
            f"off after {o.sensor_lost_s:g} s",
        ), cm  # fmt: skip
    return ChainAction(
        c, "run", 100.0, "ok", f"chain {c}: {shown} below hot {o.hot_temp_c:g} °C"
    ), cm


# ---------------------------------------------------------------------------- the loop


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@dataclass
class ThermalLoop:
    """Reads sensors and fans through callables, decides, applies, logs every changed action.

    read_temps() -> {chain: [°C or None, ...]}; read_fans() -> [FanSample]; apply(decision).
    Each may be sync or async. A failing read counts as 'no readings' (fans 100 %); a failing
    apply is logged and counted; neither stops the loop."""

    read_temps: Callable[[], Mapping[int, Sequence[float | None]] | Awaitable[Any]]
    read_fans: Callable[[], Sequence[FanSample] | Awaitable[Any]]
    apply: Callable[[ThermalDecision], Any]
    options: ThermalOptions = field(default_factory=ThermalOptions)
    clock: Callable[[], float] = time.monotonic
    logger: logging.Logger = log
    memory: ThermalMemory = field(default_factory=ThermalMemory)
    counts: Counter[str] = field(default_factory=Counter)
    last: ThermalDecision | None = None
    _shown: dict[object, str] = field(default_factory=dict)

    async def tick(self) -> ThermalDecision:
        try:
            temps = await _maybe_await(self.read_temps())
            if not isinstance(temps, Mapping):
                raise TypeError(f"read_temps returned {type(temps).__name__}")
        except Exception as e:
            self.counts["read_temps_failed"] += 1
            self.logger.warning("thermal: temperature read failed: %s", e)
            temps = {}
        try:
            fans = list(await _maybe_await(self.read_fans())) if not self.options.immersion else []
        except Exception as e:
            self.counts["read_fans_failed"] += 1
            self.logger.warning("thermal: fan read failed: %s", e)
            fans = []
        d = decide(temps, fans, self.options, self.memory, self.clock())
        self.memory = d.memory
        self.last = d
        self._log(d)
        try:
            await _maybe_await(self.apply(d))
        except Exception as e:
            self.counts["apply_failed"] += 1
            self.logger.error("thermal: applying the decision failed: %s", e)
        return d

    def _log(self, d: ThermalDecision) -> None:
        """Log and count each action that changed since the last tick, with its reason."""
        items: list[tuple[object, str, str, int]] = [
            ("fans", f"fans:{d.fan_code}", f"fans {d.fan_duty_pct} %: {d.fan_reason}", logging.INFO)
        ]
        for a in d.chains:
            level = logging.WARNING if a.action == "power_off" or a.code == "hot" else logging.INFO
            items.append((a.chain, f"chain:{a.action}:{a.code}", f"{a.action}: {a.reason}", level))
        for key, sig, text, level in items:
            if self._shown.get(key) != sig:
                self._shown[key] = sig
                self.counts[sig] += 1
                self.logger.log(level, "thermal: %s", text)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        while stop is None or not stop.is_set():
            await self.tick()
            if stop is None:
                await asyncio.sleep(self.options.interval_s)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.options.interval_s)
