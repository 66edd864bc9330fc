"""Per-chip autotuning: pure decisions over nonce and HW-error counters, profiles, a thin loop.

decide(chains, options, memory, now) -> TunerDecision. Each ChainSample carries the chain's
voltage, temperature, power (measured, or None to use the model) and per-chip cumulative counters
(ChipStats fits: good nonces, HW errors, nonces per core). Memory keeps, per chip, the counters
at its last change (so every verdict is on samples taken at the current clock and voltage), the
lowest clock where it failed (its ceiling), strikes and gating; per chain, the voltage search.

A verdict needs enough samples to be sure: the HW-error rate's one-sided Wilson bounds at
`confidence` are compared with `hw_budget`:
- upper bound <= budget: good -> one step up, unless that reaches the ceiling, the PLL maximum or
  the power target (then the chip is settled there);
- lower bound > budget: bad -> one step down and the ceiling moves here; at the minimum clock a
  bad verdict is a strike, and `fail_strikes` strikes clock-gate the chip;
- good nonces surely (Poisson upper bound) below `low_rate_fraction` of the model rate: slow, as
  bad; a core surely below `core_fraction` of the chip's mean core is clock-gated;
- upper bound still over the budget after TUNER_UNPROVEN_SAMPLES_X x min_samples: the chip is at
  its edge, as bad (a chip is only kept where it is shown within the budget);
- otherwise: hold, with the counts in the reason.
When every chip of a chain is settled, the chain's voltage walks down in steps while the modelled
or measured hashrate per watt improves, and goes back to the best one when it stops improving.
Over the power target, the fastest chips step down first. A chain whose temperature moved more
than retune_delta_c since it settled is tuned again. Every action and every verdict has a reason.

Profiles (per-chip frequency + voltage + gating per chain) are saved atomically as JSON in the
state dir and validated on load: a corrupt file is reported and ignored."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from agent import defaults as D
from agent.hardware import bm1485 as bm
from agent.mining.targets import HASHES_PER_DIFF1

log = logging.getLogger(__name__)

Kind = Literal["set_frequency", "set_voltage", "disable_chip", "disable_core", "retune"]
PROFILE_VERSION = 1

# power model per chip (same calibration as the emulator's thermal model: ~200 W per chain)
DYNAMIC_W_PER_MHZ = 0.0068
STATIC_W = 0.15
V_NOMINAL = 10.0


# ---------------------------------------------------------------------------- options


@dataclass(frozen=True)
class TunerOptions:
    enabled: bool = True
    min_mhz: float = D.TUNER_MIN_MHZ
    max_mhz: float = D.TUNER_MAX_MHZ
    step_mhz: float = D.TUNER_STEP_MHZ
    hw_budget: float = D.TUNER_HW_BUDGET
    confidence: float = D.TUNER_CONFIDENCE
    min_samples: int = D.TUNER_MIN_SAMPLES
    low_rate_fraction: float = D.TUNER_LOW_RATE_FRACTION
    fail_strikes: int = D.TUNER_FAIL_STRIKES
    core_fraction: float = D.TUNER_CORE_FRACTION
    tune_voltage: bool = True
    voltage_min_v: float = D.TUNER_VOLTAGE_MIN_V
    voltage_max_v: float = D.TUNER_VOLTAGE_MAX_V
    voltage_step_v: float = D.TUNER_VOLTAGE_STEP_V
    power_target_w: float | None = None  # total of the chains; None: no power target
    retune_delta_c: float = D.TUNER_RETUNE_DELTA_C
    ticket_difficulty: float = D.BM1485_TICKET_DIFFICULTY  # what one chip nonce is worth
    interval_s: float = D.TUNER_INTERVAL_S

    def __post_init__(self) -> None:
        if not bm.PLL_MIN_MHZ <= self.min_mhz < self.max_mhz <= bm.PLL_MAX_MHZ:
            raise ValueError(
                f"tuner clock range must lie in {bm.PLL_MIN_MHZ:g}..{bm.PLL_MAX_MHZ:g} MHz"
            )
        if not 0 < self.hw_budget < 1 or not 0.5 < self.confidence < 1:
            raise ValueError("hw_budget must be in (0, 1) and confidence in (0.5, 1)")
        if self.step_mhz <= 0 or self.voltage_step_v <= 0 or self.min_samples < 1:
            raise ValueError("step_mhz, voltage_step_v and min_samples must be positive")
        if not self.voltage_min_v <= self.voltage_max_v:
            raise ValueError("voltage_min_v must be <= voltage_max_v")
        if self.power_target_w is not None and self.power_target_w <= 0:
            raise ValueError("power_target_w must be positive")

    @property
    def hashes_per_nonce(self) -> float:
        return self.ticket_difficulty * HASHES_PER_DIFF1

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | Any | None) -> TunerOptions:
        from agent.control.thermal import options_kwargs

        return cls(**options_kwargs(cls, section))


# ---------------------------------------------------------------------------- inputs / outputs


@dataclass(frozen=True)
class ChipSample:
    chip: int
    frequency_mhz: float
    nonces: int  # good (verified) nonces, cumulative
    hw_errors: int  # cumulative
    cores: Mapping[int, int] = field(default_factory=dict)  # core -> good nonces, cumulative


@dataclass(frozen=True)
class ChainSample:
    chain: int
    voltage_v: float
    chips: tuple[ChipSample, ...]
    temp_c: float | None = None
    power_w: float | None = None  # measured; None -> modelled


@dataclass(frozen=True)
class TunerAction:
    kind: Kind
    chain: int
    chip: int | None
    core: int | None
    value: float | None  # MHz for set_frequency, volts for set_voltage
    reason: str


@dataclass(frozen=True)
class Verdict:
    chain: int
    chip: int
    verdict: str  # good, bad, slow, unsure, settled, disabled
    reason: str


@dataclass(frozen=True)
class ChipMemory:
    t0: float
    freq_mhz: float
    voltage_v: float
    nonces0: int
    hw0: int
    cores0: Mapping[int, int] = field(default_factory=dict)
    ceiling_mhz: float | None = None
    settled: bool = False
    strikes: int = 0
    disabled: bool = False
    disabled_cores: frozenset[int] = frozenset()


@dataclass(frozen=True)
class ChainMemory:
    best_v: float | None = None
    best_eff: float | None = None  # H/s per W
    v_settled: bool = False
    tuned_temp_c: float | None = None


@dataclass(frozen=True)
class TunerMemory:
    chips: Mapping[tuple[int, int], ChipMemory] = field(default_factory=dict)
    chains: Mapping[int, ChainMemory] = field(default_factory=dict)


@dataclass(frozen=True)
class TunerDecision:
    actions: tuple[TunerAction, ...]
    verdicts: tuple[Verdict, ...]
    memory: TunerMemory


# ---------------------------------------------------------------------------- statistics


def _z(confidence: float) -> float:
    from statistics import NormalDist  # here: only a tuning agent needs it (~0.4 MB of RSS)

    return NormalDist().inv_cdf(confidence)


def wilson_bounds(errors: int, total: int, confidence: float) -> tuple[float, float]:
    """One-sided Wilson score bounds (lower, upper) on a binomial proportion."""
    if total <= 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = errors / total
    den = 1 + z * z / total
    mid = (p + z * z / (2 * total)) / den
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def poisson_upper(count: int, confidence: float) -> float:
    """An upper confidence bound on a Poisson mean given `count` events (Wilson-Hilferty)."""
    z = _z(confidence)
    k = count + 1
    return k * (1 - 1 / (9 * k) + z / (3 * math.sqrt(k))) ** 3


def chip_power_w(freq_mhz: float, voltage_v: float) -> float:
    return (DYNAMIC_W_PER_MHZ * freq_mhz + STATIC_W) * (voltage_v / V_NOMINAL) ** 2


def chain_power_w(freqs: Sequence[float], voltage_v: float) -> float:
    return sum(chip_power_w(f, voltage_v) for f in freqs)


# ---------------------------------------------------------------------------- decide


def _fresh(s: ChipSample, v: float, now: float, old: ChipMemory | None) -> ChipMemory:
    base = old or ChipMemory(now, s.frequency_mhz, v, s.nonces, s.hw_errors)
    return replace(
        base, t0=now, freq_mhz=s.frequency_mhz, voltage_v=v, nonces0=s.nonces,
        hw0=s.hw_errors, cores0=dict(s.cores),
    )  # fmt: skip


def decide(
    chains: Sequence[ChainSample],
    options: TunerOptions,
    memory: TunerMemory | None,
    now: float,
) -> TunerDecision:
    memory = memory or TunerMemory()
    o = options
    actions: list[TunerAction] = []
    verdicts: list[Verdict] = []
    chips_mem = dict(memory.chips)
    chains_mem = dict(memory.chains)
    if not o.enabled:
        return TunerDecision((), (), memory)

    # power: measured or modelled, per chain
    power = {
        c.chain: c.power_w
        if c.power_w is not None
        else chain_power_w(
            [s.frequency_mhz for s in c.chips if not _off(chips_mem, c, s)], c.voltage_v
        )
        for c in chains
    }
    total_w = sum(power.values())
    over_w = total_w - o.power_target_w if o.power_target_w is not None else 0.0
    headroom_w = -over_w if o.power_target_w is not None else math.inf

    for c in chains:
        cm = chains_mem.get(c.chain, ChainMemory())
        # re-tune on a temperature shift
        if (
            cm.tuned_temp_c is not None
            and c.temp_c is not None
            and abs(c.temp_c - cm.tuned_temp_c) > o.retune_delta_c
        ):
            why = (
                f"chain {c.chain}: temperature {c.temp_c:.1f} °C moved more than "
                f"{o.retune_delta_c:g} °C from {cm.tuned_temp_c:.1f} °C at tuning: re-tuning"
            )
            actions.append(TunerAction("retune", c.chain, None, None, None, why))
            cm = ChainMemory()
            for s in c.chips:
                key = (c.chain, s.chip)
                if key in chips_mem:
                    chips_mem[key] = replace(
                        _fresh(s, c.voltage_v, now, chips_mem[key]), ceiling_mhz=None, settled=False
                    )

        for s in c.chips:
            key = (c.chain, s.chip)
            m = chips_mem.get(key)
            if (
                m is None
                or abs(m.freq_mhz - s.frequency_mhz) > 0.5
                or abs(m.voltage_v - c.voltage_v) > 1e-6
                or s.nonces < m.nonces0
                or s.hw_errors < m.hw0
            ):
                m = _fresh(s, c.voltage_v, now, m)  # a new clock, voltage or counter reset
            act, m, v = _chip(c, s, m, o, now, headroom_w)
            chips_mem[key] = m
            verdicts.append(v)
            if act is not None:
                actions.append(act)
                if act.kind == "set_frequency" and act.value is not None:
                    headroom_w -= chip_power_w(act.value, c.voltage_v) - chip_power_w(
                        s.frequency_mhz, c.voltage_v
                    )

        # voltage search once every chip of the chain is settled
        live = [chips_mem[(c.chain, s.chip)] for s in c.chips]
        all_settled = bool(live) and all(m.settled or m.disabled for m in live)
        if all_settled and cm.tuned_temp_c is None and c.temp_c is not None:
            cm = replace(cm, tuned_temp_c=c.temp_c)
        if o.tune_voltage and all_settled and not cm.v_settled and power[c.chain] > 0:
            act, cm = _voltage(c, cm, chips_mem, power[c.chain], o)
            if act is not None:
                actions.append(act)
                for s in c.chips:  # every chip is judged again at the new voltage
                    key = (c.chain, s.chip)
                    m = chips_mem[key]
                    rising = act.value is not None and act.value > c.voltage_v
                    chips_mem[key] = replace(
                        m, settled=False, ceiling_mhz=None if rising else m.ceiling_mhz
                    )
        chains_mem[c.chain] = cm

    # power target: the fastest chips step down first
    if o.power_target_w is not None and over_w > 0:
        actions = [a for a in actions if a.kind != "set_frequency" or _is_down(a, chains)]
        saved = sum(
            chip_power_w(_freq(chains, a), _volt(chains, a.chain))
            - chip_power_w(a.value or 0, _volt(chains, a.chain))
            for a in actions
            if a.kind == "set_frequency"
        )
        planned = {(a.chain, a.chip) for a in actions if a.kind == "set_frequency"}
        cands = sorted(
            (
                (s.frequency_mhz, c.chain, s.chip, c.voltage_v)
                for c in chains
                for s in c.chips
                if (c.chain, s.chip) not in planned and not _off(chips_mem, c, s)
            ),
            reverse=True,
        )
        for f, chain, chip, v in cands:
            if saved >= over_w:
                break
            nf = max(o.min_mhz, f - o.step_mhz)
            if nf >= f:
                continue
            saved += chip_power_w(f, v) - chip_power_w(nf, v)
            why = (
                f"chain {chain} chip {chip}: power {total_w:.0f} W over target "
                f"{o.power_target_w:g} W: {f:g} -> {nf:g} MHz"
            )
            actions.append(TunerAction("set_frequency", chain, chip, None, nf, why))
            key = (chain, chip)
            chips_mem[key] = replace(chips_mem[key], ceiling_mhz=f, settled=True)

    return TunerDecision(tuple(actions), tuple(verdicts), TunerMemory(chips_mem, chains_mem))


def _off(chips_mem: Mapping[tuple[int, int], ChipMemory], c: ChainSample, s: ChipSample) -> bool:
    m = chips_mem.get((c.chain, s.chip))
    return m is not None and m.disabled


def _freq(chains: Sequence[ChainSample], a: TunerAction) -> float:
    for c in chains:
        if c.chain == a.chain:
            for s in c.chips:
                if s.chip == a.chip:
                    return s.frequency_mhz
    return 0.0


def _volt(chains: Sequence[ChainSample], chain: int) -> float:
    return next((c.voltage_v for c in chains if c.chain == chain), V_NOMINAL)


def _is_down(a: TunerAction, chains: Sequence[ChainSample]) -> bool:
    return a.value is not None and a.value < _freq(chains, a)


def _chip(
    c: ChainSample,
    s: ChipSample,
    m: ChipMemory,
    o: TunerOptions,
    now: float,
    headroom_w: float,
) -> tuple[TunerAction | None, ChipMemory, Verdict]:
    name = f"chain {c.chain} chip {s.chip}"
    f = s.frequency_mhz
    if m.disabled:
        return None, m, Verdict(c.chain, s.chip, "disabled", f"{name}: clock-gated")
    good = s.nonces - m.nonces0
    hw = s.hw_errors - m.hw0
    n = good + hw
    elapsed = max(0.0, now - m.t0)

    # slow: far fewer good nonces than the model says this clock must give
    expected = elapsed * bm.chip_hashrate_hs(f) / o.hashes_per_nonce
    slow = (
        expected >= o.min_samples
        and poisson_upper(good, o.confidence) < o.low_rate_fraction * expected
    )
    lo, hi = wilson_bounds(hw, n, o.confidence)
    rate = f"{hw}/{n} HW ({hi * 100:.2f} % upper, {lo * 100:.2f} % lower bound)"

    # cores that surely do much less than their siblings
    if not slow and good >= o.min_samples * 4:
        counts = {
            k: s.cores.get(k, 0) - m.cores0.get(k, 0) for k in bm.CORES if k not in m.disabled_cores
        }
        if counts:
            mean = sum(counts.values()) / len(counts)
            for core, k in sorted(counts.items()):
                if poisson_upper(k, o.confidence) < o.core_fraction * mean:
                    why = (
                        f"{name}: core {core} gave {k} nonces vs a mean of {mean:.0f} per core: "
                        "clock-gating it"
                    )
                    m2 = replace(
                        _fresh(s, c.voltage_v, now, m), disabled_cores=m.disabled_cores | {core}
                    )
                    return (
                        TunerAction("disable_core", c.chain, s.chip, core, None, why),
                        m2,
                        Verdict(c.chain, s.chip, "bad", why),
                    )

    over = n >= o.min_samples and lo > o.hw_budget
    # still not shown within the budget after many samples: the chip sits at its edge, where a
    # small drift in voltage or temperature puts it over; the budget is kept by stepping down
    unproven = n >= o.min_samples * D.TUNER_UNPROVEN_SAMPLES_X and hi > o.hw_budget
    if slow or over or unproven:
        if slow:
            what = (
                f"{good} good nonces in {elapsed:.0f} s, surely under "
                f"{o.low_rate_fraction:.0%} of the {expected:.0f} expected"
            )
        elif over:
            what = f"{rate} over the {o.hw_budget:.2%} budget"
        else:
            what = f"{rate} not shown within the {o.hw_budget:.2%} budget after {n} nonces"
        verdict = "slow" if slow else "bad"
        if f - o.step_mhz < o.min_mhz:
            strikes = m.strikes + 1
            if strikes >= o.fail_strikes:
                why = (
                    f"{name}: {what} at the minimum {f:g} MHz, {strikes} times: "
                    "clock-gating the chip"
                )
                m2 = replace(m, strikes=strikes, disabled=True, settled=True)
                return (
                    TunerAction("disable_chip", c.chain, s.chip, None, None, why),
                    m2,
                    Verdict(c.chain, s.chip, verdict, why),
                )
            why = f"{name}: {what} at the minimum {f:g} MHz (strike {strikes}/{o.fail_strikes})"
            m2 = replace(_fresh(s, c.voltage_v, now, m), strikes=strikes)
            return None, m2, Verdict(c.chain, s.chip, verdict, why)
        nf = max(o.min_mhz, f - o.step_mhz)
        why = f"{name}: {what}: {f:g} -> {nf:g} MHz"
        m2 = replace(
            m, ceiling_mhz=f if m.ceiling_mhz is None else min(f, m.ceiling_mhz), settled=False
        )
        return (
            TunerAction("set_frequency", c.chain, s.chip, None, nf, why),
            m2,
            Verdict(c.chain, s.chip, verdict, why),
        )

    if n < o.min_samples:
        why = f"{name}: {n}/{o.min_samples} samples at {f:g} MHz: not sure yet"
        return None, m, Verdict(c.chain, s.chip, "unsure", why)

    if hi <= o.hw_budget:
        nf = min(o.max_mhz, f + o.step_mhz)
        limit = None
        if m.ceiling_mhz is not None and nf >= m.ceiling_mhz:
            limit = f"the next step {nf:g} MHz failed before"
        elif nf <= f:
            limit = f"the maximum {o.max_mhz:g} MHz"
        elif chip_power_w(nf, c.voltage_v) - chip_power_w(f, c.voltage_v) > headroom_w:
            limit = "the power target"
        if limit is not None:
            why = f"{name}: {rate} within budget at {f:g} MHz; settled: {limit}"
            return None, replace(m, settled=True), Verdict(c.chain, s.chip, "settled", why)
        why = f"{name}: {rate} within the {o.hw_budget:.2%} budget: {f:g} -> {nf:g} MHz"
        return (
            TunerAction("set_frequency", c.chain, s.chip, None, nf, why),
            replace(m, settled=False),
            Verdict(c.chain, s.chip, "good", why),
        )

    why = f"{name}: {rate} not sure against the {o.hw_budget:.2%} budget: holding {f:g} MHz"
    return None, m, Verdict(c.chain, s.chip, "settled" if m.settled else "unsure", why)


def chain_efficiency(
    c: ChainSample, chips_mem: Mapping[tuple[int, int], ChipMemory], power_w: float
) -> float:
    """Estimated good hashrate (model rate x (1 - HW share) per live chip) per watt."""
    hs = 0.0
    for s in c.chips:
        m = chips_mem.get((c.chain, s.chip))
        if m is not None and m.disabled:
            continue
        good = s.nonces - (m.nonces0 if m else 0)
        hw = s.hw_errors - (m.hw0 if m else 0)
        share = hw / (good + hw) if good + hw > 0 else 0.0
        hs += bm.chip_hashrate_hs(s.frequency_mhz) * (1 - share)
    return hs / power_w if power_w > 0 else 0.0


def _voltage(
    c: ChainSample,
    cm: ChainMemory,
    chips_mem: Mapping[tuple[int, int], ChipMemory],
    power_w: float,
    o: TunerOptions,
) -> tuple[TunerAction | None, ChainMemory]:
    eff = chain_efficiency(c, chips_mem, power_w)
    v = c.voltage_v
    shown = f"{eff / 1e3:.1f} kH/s/W"
    if cm.best_eff is None or eff > cm.best_eff:
        cm = replace(cm, best_v=v, best_eff=eff)
        nv = round(v - o.voltage_step_v, 3)
        if nv < o.voltage_min_v - 1e-9:
            why = f"chain {c.chain}: {shown} at {v:g} V, the minimum: voltage settled"
            log.debug(why)
            return None, replace(cm, v_settled=True)
        why = f"chain {c.chain}: {shown} at {v:g} V is the best so far: trying {nv:g} V"
        return TunerAction("set_voltage", c.chain, None, None, nv, why), cm
    best_v = cm.best_v if cm.best_v is not None else v
    best_shown = f"{(cm.best_eff or 0) / 1e3:.1f} kH/s/W"
    why = (
        f"chain {c.chain}: {shown} at {v:g} V is worse than {best_shown} at {best_v:g} V: "
        f"back to {best_v:g} V, voltage settled"
    )
    cm = replace(cm, v_settled=True)
    if abs(best_v - v) < 1e-9:
        return None, cm
    return TunerAction("set_voltage", c.chain, None, None, best_v, why), cm


# ---------------------------------------------------------------------------- profiles


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class ChainProfile:
    voltage_v: float
    frequencies_mhz: Mapping[int, float]
    disabled_chips: tuple[int, ...] = ()
    disabled_cores: Mapping[int, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    chains: Mapping[int, ChainProfile]
    saved_at: float = 0.0

    def to_json(self) -> str:
        doc = {
            "version": PROFILE_VERSION,
            "saved_at": self.saved_at,
            "chains": {
                str(n): {
                    "voltage_v": p.voltage_v,
                    "frequencies_mhz": {str(k): v for k, v in sorted(p.frequencies_mhz.items())},
                    "disabled_chips": sorted(p.disabled_chips),
                    "disabled_cores": {
                        str(k): sorted(v) for k, v in sorted(p.disabled_cores.items())
                    },
                }
                for n, p in sorted(self.chains.items())
            },
        }
        return json.dumps(doc, indent=1, sort_keys=True)


def _num(v: object, what: str, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ProfileError(f"{what}: not a number: {v!r}")
    if not lo <= v <= hi:
        raise ProfileError(f"{what}: {v!r} outside {lo:g}..{hi:g}")
    return float(v)


def _idx(k: object, what: str) -> int:
    if isinstance(k, str) and k.isdigit() and len(k) <= 4:
        return int(k)
    if isinstance(k, int) and not isinstance(k, bool) and 0 <= k < 10000:
        return k
    raise ProfileError(f"{what}: not an index: {k!r}")


def parse_profile(data: bytes | str, options: TunerOptions | None = None) -> Profile:
    """A validated Profile, or ProfileError saying what is wrong."""
    o = options or TunerOptions()
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ProfileError(f"not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("version") != PROFILE_VERSION:
        raise ProfileError(f"not a version {PROFILE_VERSION} profile object")
    chains = doc.get("chains")
    if not isinstance(chains, dict):
        raise ProfileError("chains: not an object")
    out: dict[int, ChainProfile] = {}
    for key, ch in chains.items():
        n = _idx(key, "chain")
        w = f"chain {n}"
        if not isinstance(ch, dict):
            raise ProfileError(f"{w}: not an object")
        volts = _num(ch.get("voltage_v"), f"{w} voltage_v", o.voltage_min_v, o.voltage_max_v)
        freqs = ch.get("frequencies_mhz")
        if not isinstance(freqs, dict) or not freqs:
            raise ProfileError(f"{w} frequencies_mhz: not a non-empty object")
        fm = {
            _idx(k, f"{w} chip"): _num(v, f"{w} chip {k} MHz", o.min_mhz, o.max_mhz)
            for k, v in freqs.items()
        }
        dis = ch.get("disabled_chips", [])
        cores = ch.get("disabled_cores", {})
        if not isinstance(dis, list) or not isinstance(cores, dict):
            raise ProfileError(f"{w}: disabled_chips must be a list, disabled_cores an object")
        dc: dict[int, tuple[int, ...]] = {}
        for k, v in cores.items():
            if not isinstance(v, list) or any(x not in bm.CORES for x in v):
                raise ProfileError(f"{w} disabled_cores[{k}]: not a list of core numbers")
            dc[_idx(k, f"{w} chip")] = tuple(v)
        out[n] = ChainProfile(volts, fm, tuple(_idx(x, f"{w} chip") for x in dis), dc)
    saved = doc.get("saved_at", 0.0)
    return Profile(out, float(saved) if isinstance(saved, int | float) else 0.0)


def profile_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / D.TUNER_PROFILE_FILE


def save_profile(state_dir: str | Path, profile: Profile) -> Path:
    """Write atomically: a temporary file in the same directory, fsync, rename, fsync the dir."""
    path = profile_path(state_dir)
    import tempfile  # here: only a tuning agent saves a profile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tuner-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(profile.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return path


def load_profile(
    state_dir: str | Path, options: TunerOptions | None = None
) -> tuple[Profile | None, str | None]:
    """(profile, None), (None, None) when there is none, or (None, why it was ignored)."""
    path = profile_path(state_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"{path}: unreadable: {e}"
    try:
        return parse_profile(data, options), None
    except ProfileError as e:
        return None, f"{path}: ignored: {e}"


def profile_of(chains: Sequence[ChainSample], memory: TunerMemory, now: float) -> Profile:
    out: dict[int, ChainProfile] = {}
    for c in chains:
        dis = tuple(
            s.chip for s in c.chips if (m := memory.chips.get((c.chain, s.chip))) and m.disabled
        )
        cores = {
            s.chip: tuple(sorted(m.disabled_cores))
            for s in c.chips
            if (m := memory.chips.get((c.chain, s.chip))) and m.disabled_cores
        }
        out[c.chain] = ChainProfile(
            c.voltage_v, {s.chip: s.frequency_mhz for s in c.chips}, dis, cores
        )
    return Profile(out, now)


def restore_actions(profile: Profile) -> list[TunerAction]:
    """The actions that put a saved profile back on the hardware."""
    out: list[TunerAction] = []
    for n, p in sorted(profile.chains.items()):
        why = "restoring the saved profile"
        out.append(TunerAction("set_voltage", n, None, None, p.voltage_v, f"chain {n}: {why}"))
        for chip, f in sorted(p.frequencies_mhz.items()):
            out.append(
                TunerAction("set_frequency", n, chip, None, f, f"chain {n} chip {chip}: {why}")
            )
        for chip in p.disabled_chips:
            out.append(
                TunerAction("disable_chip", n, chip, None, None, f"chain {n} chip {chip}: {why}")
            )
        for chip, cores in sorted(p.disabled_cores.items()):
            for core in cores:
                out.append(
                    TunerAction(
                        "disable_core", n, chip, core, None, f"chain {n} chip {chip}: {why}"
                    )
                )
    return out


def memory_from_profile(profile: Profile, options: TunerOptions, now: float) -> TunerMemory:
    """Seed memory so restored chips are watched but do not climb again (ceiling one step up)."""
    chips: dict[tuple[int, int], ChipMemory] = {}
    chains: dict[int, ChainMemory] = {}
    for n, p in profile.chains.items():
        for chip, f in p.frequencies_mhz.items():
            chips[(n, chip)] = ChipMemory(
                t0=now, freq_mhz=f, voltage_v=p.voltage_v, nonces0=0, hw0=0,
                ceiling_mhz=f + options.step_mhz, settled=True,
                disabled=chip in p.disabled_chips,
                disabled_cores=frozenset(p.disabled_cores.get(chip, ())),
            )  # fmt: skip
        chains[n] = ChainMemory(best_v=p.voltage_v, v_settled=True)
    return TunerMemory(chips, chains)


# ---------------------------------------------------------------------------- the loop


class TunerTarget(Protocol):
    """What the integrator wires per chain (chain driver + PIC)."""

    async def set_chip_frequency(self, chip: int, mhz: float) -> None: ...
    async def set_voltage(self, volts: float) -> None: ...
    async def disable_chip(self, chip: int) -> None: ...
    async def disable_core(self, chip: int, core: int) -> None: ...


async def apply_to(targets: Mapping[int, TunerTarget], a: TunerAction) -> None:
    """Apply one action to the chain's target (retune is informational)."""
    t = targets[a.chain]
    if a.kind == "set_frequency" and a.chip is not None and a.value is not None:
        await t.set_chip_frequency(a.chip, a.value)
    elif a.kind == "set_voltage" and a.value is not None:
        await t.set_voltage(a.value)
    elif a.kind == "disable_chip" and a.chip is not None:
        await t.disable_chip(a.chip)
    elif a.kind == "disable_core" and a.chip is not None and a.core is not None:
        await t.disable_core(a.chip, a.core)


@dataclass
class TunerLoop:
    """read() -> [ChainSample]; apply(action) for each action (sync or async). Restores the saved
    profile at start, saves it again whenever the tuned settings change."""

    read: Callable[[], Any]
    apply: Callable[[TunerAction], Any]
    options: TunerOptions = field(default_factory=TunerOptions)
    state_dir: str | Path | None = None
    clock: Callable[[], float] = time.monotonic
    logger: logging.Logger = log
    memory: TunerMemory = field(default_factory=TunerMemory)
    counts: Counter[str] = field(default_factory=Counter)
    last: TunerDecision | None = None
    _saved_json: str | None = None

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        r = fn(*args)
        return await r if inspect.isawaitable(r) else r

    async def restore(self) -> Profile | None:
        if self.state_dir is None:
            return None
        profile, problem = load_profile(self.state_dir, self.options)
        if problem:
            self.counts["profile_ignored"] += 1
            self.logger.warning("tuner: %s", problem)
        if profile is None:
            return None
        for a in restore_actions(profile):
            await self._apply(a)
        self.memory = memory_from_profile(profile, self.options, self.clock())
        self._saved_json = json.dumps(json.loads(profile.to_json())["chains"], sort_keys=True)
        self.logger.info("tuner: restored the saved profile (%d chains)", len(profile.chains))
        return profile

    async def _apply(self, a: TunerAction) -> None:
        self.counts[a.kind] += 1
        level = logging.WARNING if a.kind.startswith("disable") else logging.INFO
        self.logger.log(level, "tuner: %s", a.reason)
        try:
            await self._call(self.apply, a)
        except Exception as e:
            self.counts["apply_failed"] += 1
            self.logger.error("tuner: applying %s failed: %s", a.kind, e)

    async def tick(self) -> TunerDecision | None:
        try:
            chains = list(await self._call(self.read))
        except Exception as e:
            self.counts["read_failed"] += 1
            self.logger.warning("tuner: reading counters failed: %s", e)
            return None
        d = decide(chains, self.options, self.memory, self.clock())
        self.memory, self.last = d.memory, d
        for a in d.actions:
            await self._apply(a)
        if self.state_dir is not None and d.actions:
            self._save(chains, d)
        return d

    def _save(self, chains: Sequence[ChainSample], d: TunerDecision) -> None:
        # the profile as it will be once the actions are applied
        applied = {(a.chain, a.chip): a.value for a in d.actions if a.kind == "set_frequency"}
        volts = {a.chain: a.value for a in d.actions if a.kind == "set_voltage"}
        after = [
            replace(
                c,
                voltage_v=volts.get(c.chain) or c.voltage_v,
                chips=tuple(
                    replace(s, frequency_mhz=applied.get((c.chain, s.chip)) or s.frequency_mhz)
                    for s in c.chips
                ),
            )
            for c in chains
        ]
        profile = profile_of(after, d.memory, time.time())
        key = json.dumps(json.loads(profile.to_json())["chains"], sort_keys=True)
        if key == self._saved_json:
            return
        try:
            save_profile(self.state_dir, profile)  # type: ignore[arg-type]
            self._saved_json = key
            self.counts["profile_saved"] += 1
        except OSError as e:
            self.counts["profile_save_failed"] += 1
            self.logger.error("tuner: saving the profile failed: %s", e)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        await self.restore()
        while stop is None or not stop.is_set():
            await self.tick()
            if stop is None:
                await asyncio.sleep(self.options.interval_s)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.options.interval_s)
