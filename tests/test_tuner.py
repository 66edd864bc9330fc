"""control.tuner: verdict table, voltage search, power target, profiles, loop, closed loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.control import tuner as T
from agent.control.tuner import (
    ChainSample,
    ChipSample,
    TunerLoop,
    TunerOptions,
    decide,
)
from agent.hardware import bm1485 as bm

OPT = TunerOptions(tune_voltage=False)


def chain(*chips, v=10.0, temp=60.0, power=None, n=0):
    return ChainSample(n, v, tuple(chips), temp, power)


def step(samples, memory=None, now=0.0, options=OPT):
    return decide(samples, options, memory, now)


def counters(chip, f, good, hw, cores=None):
    return ChipSample(chip, f, good, hw, cores or {})


def first(d, kind=None):
    return next(a for a in d.actions if kind is None or a.kind == kind)


# ---------------------------------------------------------------------------- statistics


def test_wilson_bounds():
    assert T.wilson_bounds(0, 0, 0.95) == (0.0, 1.0)
    lo, hi = T.wilson_bounds(0, 1000, 0.95)
    assert lo == 0.0 and 0.002 < hi < 0.003
    lo, hi = T.wilson_bounds(100, 1000, 0.95)
    assert 0.08 < lo < 0.1 < hi < 0.12


def test_poisson_upper():
    assert 2.9 < T.poisson_upper(0, 0.95) < 3.2
    assert 100 < T.poisson_upper(100, 0.95) < 120


def test_options():
    o = TunerOptions.from_config({"hw_budget": 0.02, "power_target_w": 700, "nope": 1})
    assert o.hw_budget == 0.02 and o.power_target_w == 700
    for bad in (
        {"min_mhz": 10},
        {"hw_budget": 0},
        {"step_mhz": 0},
        {"voltage_min_v": 12, "voltage_max_v": 11},
        {"power_target_w": -5},
    ):
        with pytest.raises(ValueError):
            TunerOptions(**bad)


# ---------------------------------------------------------------------------- verdict table


def _start(f=384.0, **kw):
    """Memory with the baseline taken at t=0 (counters at zero)."""
    return step([chain(counters(0, f, 0, 0))], **kw).memory


def test_unsure_until_enough_samples():
    m = _start()
    d = step([chain(counters(0, 384, 20, 0))], m, now=60)
    assert d.actions == () and d.verdicts[0].verdict == "unsure"
    assert "20/50 samples" in d.verdicts[0].reason


def test_good_raises_one_step():
    d = step([chain(counters(0, 384, 2000, 1))], _start(), now=60)
    a = first(d)
    assert (a.kind, a.chip, a.value) == ("set_frequency", 0, 396.5)
    assert "within the 1.00% budget" in a.reason and d.verdicts[0].verdict == "good"


def test_bad_lowers_and_sets_the_ceiling_then_settles_below_it():
    d = step([chain(counters(0, 396.5, 900, 100))], _start(396.5), now=60)
    a = first(d)
    assert (
        a.value == 384.0 and "over the 1.00% budget" in a.reason and d.verdicts[0].verdict == "bad"
    )
    assert d.memory.chips[(0, 0)].ceiling_mhz == 396.5
    # at 384: good, but the next step failed before: settled
    d = step([chain(counters(0, 384, 900, 100))], d.memory, now=61)  # new clock: new baseline
    d = step([chain(counters(0, 384, 2900, 101))], d.memory, now=120)
    assert d.actions == () and d.verdicts[0].verdict == "settled"
    assert "failed before" in d.verdicts[0].reason and d.memory.chips[(0, 0)].settled


def test_not_sure_holds_then_steps_down_when_never_shown_within_budget():
    m = _start()
    d = step([chain(counters(0, 384, 495, 5))], m, now=60)  # 1 % exactly: bounds straddle
    assert (
        d.actions == () and d.verdicts[0].verdict == "unsure" and "not sure" in d.verdicts[0].reason
    )
    # 1,000 nonces and still not shown within 1 %: the chip is at its edge, it steps down and
    # that clock becomes its ceiling (a chip is kept only where it is shown within the budget)
    d = step([chain(counters(0, 384, 990, 10))], d.memory, now=120)
    a = first(d)
    assert a.value == 371.5 and "not shown within the 1.00% budget after 1000" in a.reason
    assert d.verdicts[0].verdict == "bad" and d.memory.chips[(0, 0)].ceiling_mhz == 384


def test_a_chip_well_within_budget_after_many_samples_is_not_stepped_down():
    o = TunerOptions(tune_voltage=False, max_mhz=384)
    d = step([chain(counters(0, 384, 0, 0))], options=o)
    d = step([chain(counters(0, 384, 99_700, 300))], d.memory, now=600, options=o)  # 0.3 %
    assert d.actions == () and d.verdicts[0].verdict == "settled"


def test_max_clock_settles():
    o = TunerOptions(tune_voltage=False, max_mhz=390)
    m = step([chain(counters(0, 384, 0, 0))], options=o).memory
    d = step([chain(counters(0, 384, 3000, 0))], m, now=60, options=o)
    assert first(d).value == 390
    d = step([chain(counters(0, 390, 3000, 0))], d.memory, now=61, options=o)
    d = step([chain(counters(0, 390, 6000, 0))], d.memory, now=120, options=o)
    assert d.actions == () and "maximum" in d.verdicts[0].reason


def test_slow_chip_is_lowered():
    o = TunerOptions(tune_voltage=False, ticket_difficulty=1.0)  # ~26 nonces/s at 384 MHz
    m = step([chain(counters(0, 384, 0, 0))], options=o).memory
    d = step([chain(counters(0, 384, 100, 0))], m, now=60, options=o)  # ~1600 expected
    a = first(d)
    assert a.kind == "set_frequency" and a.value < 384 and "surely under 50%" in a.reason
    assert d.verdicts[0].verdict == "slow"


def test_failing_chip_at_minimum_gets_strikes_then_gated():
    o = TunerOptions(tune_voltage=False, min_mhz=100, fail_strikes=2)
    m = step([chain(counters(0, 105, 0, 0))], options=o).memory
    d = step([chain(counters(0, 105, 500, 500))], m, now=60, options=o)
    assert d.actions == () and "strike 1/2" in d.verdicts[0].reason
    d = step([chain(counters(0, 105, 1000, 1000))], d.memory, now=120, options=o)
    a = first(d)
    assert (a.kind, a.chip) == ("disable_chip", 0) and "clock-gating the chip" in a.reason
    d = step([chain(counters(0, 105, 1000, 1000))], d.memory, now=180, options=o)
    assert d.actions == () and d.verdicts[0].verdict == "disabled"


def test_weak_core_is_gated():
    cores = {k: 400 for k in bm.CORES}
    cores[9] = 3
    m = step([chain(counters(0, 384, 0, 0, {}))]).memory
    d = step([chain(counters(0, 384, sum(cores.values()), 0, cores))], m, now=60)
    a = first(d)
    assert (a.kind, a.chip, a.core) == ("disable_core", 0, 9) and "core 9 gave 3" in a.reason
    assert d.memory.chips[(0, 0)].disabled_cores == frozenset({9})


def test_counter_reset_takes_a_new_baseline():
    m = step([chain(counters(0, 384, 5000, 0))]).memory
    d = step([chain(counters(0, 384, 10, 0))], m, now=60)  # the chain rebooted
    assert d.actions == () and d.memory.chips[(0, 0)].nonces0 == 10


def test_disabled_tuner_does_nothing():
    d = step([chain(counters(0, 384, 5000, 0))], options=TunerOptions(enabled=False))
    assert d.actions == () and d.verdicts == ()


def test_retune_when_temperature_shifts():
    o = TunerOptions(tune_voltage=False, max_mhz=384)
    m = step([chain(counters(0, 384, 0, 0), temp=50)], options=o).memory
    d = step([chain(counters(0, 384, 3000, 0), temp=50)], m, now=60, options=o)
    assert d.memory.chains[0].tuned_temp_c == 50
    d = step([chain(counters(0, 384, 6000, 0), temp=65)], d.memory, now=120, options=o)
    a = first(d, "retune")
    assert "moved more than 10" in a.reason and not d.memory.chips[(0, 0)].settled


# ---------------------------------------------------------------------------- voltage, power


def test_voltage_walks_down_while_efficiency_improves_then_returns():
    o = TunerOptions(max_mhz=384)
    m = step([chain(counters(0, 384, 0, 0))], options=o).memory
    d = step([chain(counters(0, 384, 3000, 0))], m, now=60, options=o)
    a = first(d, "set_voltage")
    assert a.value == 9.9 and "best so far" in a.reason
    m = step([chain(counters(0, 384, 3000, 0), v=9.9)], d.memory, now=61, options=o).memory
    d = step([chain(counters(0, 384, 6000, 0), v=9.9)], m, now=120, options=o)
    assert first(d, "set_voltage").value == 9.8
    # worse than the best seen (e.g. HW errors ate the hashrate): back to the best voltage
    c = chain(counters(0, 384, 6000, 600), v=9.8)
    cm = T.ChainMemory(best_v=9.9, best_eff=1e9)
    a, cm = T._voltage(c, cm, d.memory.chips, 2.7, o)
    assert a.value == 9.9 and "back to 9.9 V" in a.reason and cm.v_settled
    a, cm = T._voltage(chain(counters(0, 384, 6000, 600), v=9.9), cm, d.memory.chips, 2.7, o)
    assert a is None and cm.v_settled


def test_voltage_minimum_settles():
    o = TunerOptions(max_mhz=384, voltage_min_v=10.0)
    m = step([chain(counters(0, 384, 0, 0))], options=o).memory
    d = step([chain(counters(0, 384, 3000, 0))], m, now=60, options=o)
    assert not [a for a in d.actions if a.kind == "set_voltage"] and d.memory.chains[0].v_settled


def test_power_target_steps_the_fastest_chips_down():
    o = TunerOptions(tune_voltage=False, power_target_w=5.0)
    chips = [counters(i, f, 0, 0) for i, f in enumerate((400, 500, 450))]  # ~9.8 W modelled
    d = step([chain(*chips)], options=o)
    downs = [a for a in d.actions if a.kind == "set_frequency"]
    assert downs[0].chip == 1 and downs[0].value == 487.5
    assert all("over target 5 W" in a.reason for a in downs)
    # measured power under target: good chips may rise while it stays under
    o2 = TunerOptions(tune_voltage=False, power_target_w=1000.0)
    m = step([chain(counters(0, 384, 0, 0), power=300.0)], options=o2).memory
    d = step([chain(counters(0, 384, 5000, 0), power=300.0)], m, now=60, options=o2)
    assert first(d).value == 396.5
    # over target: raises are dropped
    o3 = TunerOptions(tune_voltage=False, power_target_w=200.0)
    m = step([chain(counters(0, 384, 0, 0), power=300.0)], options=o3).memory
    d = step([chain(counters(0, 384, 5000, 0), power=300.0)], m, now=60, options=o3)
    assert all(a.value < 384 for a in d.actions)


def test_power_target_blocks_a_raise_past_it():
    o = TunerOptions(tune_voltage=False, power_target_w=2.77)
    m = step([chain(counters(0, 384, 0, 0))], options=o).memory  # 2.76 W modelled
    d = step([chain(counters(0, 384, 5000, 0))], m, now=60, options=o)
    assert d.actions == () and "the power target" in d.verdicts[0].reason


# ---------------------------------------------------------------------------- profiles


def _profile():
    return T.Profile(
        {0: T.ChainProfile(9.8, {0: 400.0, 1: 375.0}, (1,), {0: (2, 9)})}, saved_at=123.0
    )


def test_profile_round_trip_and_restore(tmp_path):
    p = _profile()
    path = T.save_profile(tmp_path, p)
    assert path.name == "tuner-profile.json" and not list(tmp_path.glob(".tuner-*"))
    back, problem = T.load_profile(tmp_path)
    assert problem is None and back == p
    kinds = [(a.kind, a.chip, a.core, a.value) for a in T.restore_actions(back)]
    assert kinds == [
        ("set_voltage", None, None, 9.8),
        ("set_frequency", 0, None, 400.0),
        ("set_frequency", 1, None, 375.0),
        ("disable_chip", 1, None, None),
        ("disable_core", 0, 2, None),
        ("disable_core", 0, 9, None),
    ]
    m = T.memory_from_profile(back, TunerOptions(), 0.0)
    assert m.chips[(0, 1)].disabled and m.chips[(0, 0)].ceiling_mhz == 412.5


def test_missing_profile_is_no_problem(tmp_path):
    assert T.load_profile(tmp_path) == (None, None)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{", "not JSON"),
        ("[]", "not a version 1"),
        ('{"version": 1, "chains": 3}', "chains: not an object"),
        ('{"version": 1, "chains": {"x": {}}}', "not an index"),
        ('{"version": 1, "chains": {"0": {"voltage_v": 30}}}', "outside"),
        ('{"version": 1, "chains": {"0": {"voltage_v": 10, "frequencies_mhz": {}}}}', "non-empty"),
        (
            '{"version": 1, "chains": {"0": {"voltage_v": 10, "frequencies_mhz": {"0": "fast"}}}}',
            "not a number",
        ),
        (
            '{"version": 1, "chains": {"0": {"voltage_v": 10, "frequencies_mhz": {"0": 400},'
            ' "disabled_cores": {"0": [7]}}}}',
            "core numbers",
        ),
    ],
)
def test_corrupt_profile_is_reported_and_ignored(tmp_path, text, why):
    (tmp_path / "tuner-profile.json").write_text(text)
    profile, problem = T.load_profile(tmp_path)
    assert profile is None and why in problem and "ignored" in problem


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_parse_profile_never_raises_anything_else(data):
    with contextlib.suppress(T.ProfileError):
        T.parse_profile(data)


def test_loop_restores_saves_and_survives_failures(tmp_path, caplog):
    (tmp_path / "tuner-profile.json").write_text("garbage")
    applied = []
    clock = [0.0]
    state = {"f": 384.0, "good": 0}

    def read():
        if state.get("boom"):
            raise OSError("uart gone")
        return [chain(counters(0, state["f"], state["good"], 0))]

    async def apply(a):
        applied.append(a)
        if a.kind == "set_frequency":
            state["f"] = a.value
        if len(applied) == 2:
            raise OSError("pll write failed")

    loop = TunerLoop(read, apply, TunerOptions(tune_voltage=False), tmp_path, lambda: clock[0])

    async def main():
        assert await loop.restore() is None
        await loop.tick()
        for _ in range(3):
            clock[0] += 60
            state["good"] += 3000
            await loop.tick()
        state["boom"] = True
        assert await loop.tick() is None

    with caplog.at_level(logging.INFO, logger="agent.control.tuner"):
        asyncio.run(main())
    assert loop.counts["profile_ignored"] == 1 and loop.counts["read_failed"] == 1
    assert loop.counts["apply_failed"] == 1 and loop.counts["set_frequency"] >= 2
    saved = json.loads((tmp_path / "tuner-profile.json").read_text())
    assert saved["chains"]["0"]["frequencies_mhz"]["0"] == state["f"]
    assert "within the 1.00% budget" in caplog.text
    # a new loop (after a reboot) restores it
    applied.clear()
    loop2 = TunerLoop(read, apply, TunerOptions(), tmp_path)
    profile = asyncio.run(loop2.restore())
    assert profile is not None and applied[1].value == state["f"]


# ---------------------------------------------------------------------------- closed loop


class SimChips:
    """Chips whose stable clock differs (and falls with voltage); above it the HW-error share
    rises steeply. Counters advance as Poisson draws in simulated time."""

    BASE_HW = 0.001

    def __init__(self, n: int, seed: int, ticket_difficulty: float):
        self.rng = random.Random(seed)
        self.limit10 = [self.rng.uniform(320.0, 470.0) for _ in range(n)]
        self.freq = [384.0] * n
        self.disabled = [False] * n
        self.voltage = 10.0
        self.good = [0] * n
        self.hw = [0] * n
        self.hpn = ticket_difficulty * 65536

    def limit(self, i: int) -> float:
        return self.limit10[i] * (1 + 1.5 * (self.voltage - 10.0) / 10.0)

    def hw_share(self, i: int) -> float:
        over = (self.freq[i] - self.limit(i)) / self.limit(i)
        return min(0.95, self.BASE_HW + (0.0 if over <= 0 else (over * 12) ** 2))

    def _poisson(self, lam: float) -> int:
        if lam < 30:
            k, p, l_ = 0, 1.0, math.exp(-lam)
            while True:
                p *= self.rng.random()
                if p <= l_:
                    return k
                k += 1
        return max(0, round(self.rng.gauss(lam, math.sqrt(lam))))

    def advance(self, dt: float) -> None:
        for i in range(len(self.freq)):
            if self.disabled[i]:
                continue
            lam = dt * bm.chip_hashrate_hs(self.freq[i]) / self.hpn
            q = self.hw_share(i)
            self.good[i] += self._poisson(lam * (1 - q))
            self.hw[i] += self._poisson(lam * q / (1 - q))  # bad nonces on top of good ones

    def sample(self) -> list[ChainSample]:
        chips = tuple(
            ChipSample(i, self.freq[i], self.good[i], self.hw[i]) for i in range(len(self.freq))
        )
        return [ChainSample(0, self.voltage, chips, 60.0, None)]

    def apply(self, a: T.TunerAction) -> None:
        if a.kind == "set_frequency":
            self.freq[a.chip] = a.value
        elif a.kind == "set_voltage":
            self.voltage = a.value
        elif a.kind == "disable_chip":
            self.disabled[a.chip] = True

    def figures(self) -> tuple[float, float, float]:
        """(good hashrate H/s, power W, worst HW share of a live chip)."""
        hs = w = worst = 0.0
        for i in range(len(self.freq)):
            if self.disabled[i]:
                continue
            q = self.hw_share(i)
            hs += bm.chip_hashrate_hs(self.freq[i]) * (1 - q)
            w += T.chip_power_w(self.freq[i], self.voltage)
            worst = max(worst, q)
        return hs, w, worst


def test_closed_loop_tuner_beats_the_fixed_default():
    ticket = 2.5  # ~11 nonces/s per chip at 384 MHz: simulated minutes, not hours
    sim = SimChips(72, seed=7, ticket_difficulty=ticket)
    hs0, w0, worst0 = sim.figures()
    loop = TunerLoop(sim.sample, sim.apply, TunerOptions(ticket_difficulty=ticket), clock=lambda: t)
    t = 0.0

    async def main():
        nonlocal t
        for _ in range(400):
            await loop.tick()
            sim.advance(60.0)
            t += 60.0

    asyncio.run(main())
    hs1, w1, worst1 = sim.figures()
    e0, e1 = hs0 / w0, hs1 / w1
    print(
        f"\ndefault 384 MHz @ 10 V: {hs0 / 1e6:.1f} MH/s good, {w0:.0f} W, "
        f"{e0 / 1e3:.1f} kH/s/W, worst chip HW {worst0:.1%}"
        f"\ntuned (@ {sim.voltage:g} V, {min(sim.freq):g}..{max(sim.freq):g} MHz): "
        f"{hs1 / 1e6:.1f} MH/s good, {w1:.0f} W, {e1 / 1e3:.1f} kH/s/W "
        f"(+{(e1 / e0 - 1):.1%}), worst chip HW {worst1:.2%}, gated {sum(sim.disabled)}"
        f"\nactions: {dict(loop.counts)}"
    )
    assert e1 > e0
    assert worst1 <= TunerOptions().hw_budget
