"""The emulator's thermal and power model: directions, steady state, bounds (simulated time)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.emulator import thermal as T
from agent.emulator.peripherals import EmulatedPeripherals
from agent.hardware import profile as PR

L3 = T.ChainInputs(freq_mhz=384, chips=72, voltage_v=10.0, powered=True)


def settle(inputs: T.Inputs, seconds: float = 3600.0) -> T.State:
    state = T.initial(len(inputs.chains), inputs.ambient_c)
    for _ in range(int(seconds)):
        state = T.step(state, inputs, 1.0)
    return state


def test_calibration_is_l3plus_like() -> None:
    s = settle(T.Inputs((L3,) * 4, fan_pct=60, ambient_c=25))
    assert 190 <= s.chain_w[0] <= 210  # about 200 W per chain at 384 MHz
    assert 750 <= s.wall_w <= 950
    assert 40 <= s.board_c[0] <= 50 and s.chip_c[0] > s.board_c[0]


def test_more_fan_is_cooler() -> None:
    temps = [settle(T.Inputs((L3,), fan_pct=f)).chip_c[0] for f in (0, 30, 60, 100)]
    assert temps == sorted(temps, reverse=True) and temps[0] - temps[-1] > 30


def test_more_frequency_and_voltage_is_hotter_and_hungrier() -> None:
    def at(freq: float, volts: float) -> T.State:
        chain = T.ChainInputs(freq_mhz=freq, chips=72, voltage_v=volts, powered=True)
        return settle(T.Inputs((chain,), fan_pct=60))

    low, mid, high = at(300, 10.0), at(384, 10.0), at(450, 10.0)
    assert low.chip_c[0] < mid.chip_c[0] < high.chip_c[0]
    assert low.chain_w[0] < mid.chain_w[0] < high.chain_w[0]
    under, over = at(384, 9.5), at(384, 10.5)
    assert under.chip_c[0] < mid.chip_c[0] < over.chip_c[0]
    assert under.wall_w < mid.wall_w < over.wall_w


def test_steady_state_is_reached_and_matches() -> None:
    inputs = T.Inputs((L3, T.ChainInputs()), fan_pct=70, ambient_c=30)
    s = settle(inputs, 1200)
    boards, chips, watts = T.steady_state(inputs)
    assert s.board_c == pytest.approx(boards, abs=1e-3)
    assert s.chip_c == pytest.approx(chips, abs=1e-3)
    assert s.chain_w == watts and s.chain_w[1] == 0.0
    assert s.board_c[1] == pytest.approx(30.0)  # DC-DC off: at ambient
    nxt = T.step(s, inputs, 1.0)
    assert max(abs(a - b) for a, b in zip(nxt.chip_c, s.chip_c, strict=True)) < 1e-4


def test_one_big_step_equals_many_small_ones_in_the_limit() -> None:
    inputs = T.Inputs((L3,), fan_pct=50)
    big = T.step(T.initial(1), inputs, 100.0)
    small = T.initial(1)
    for _ in range(1000):
        small = T.step(small, inputs, 0.1)
    assert big.board_c[0] == pytest.approx(small.board_c[0], abs=1e-6)
    assert big.chip_c[0] == pytest.approx(small.chip_c[0], abs=0.5)
    assert small.t_s == pytest.approx(100.0)


def test_bad_inputs_are_named() -> None:
    s = T.initial(1)
    with pytest.raises(ValueError, match=r"fan_pct must be 0\.\.100"):
        T.step(s, T.Inputs((L3,), fan_pct=101), 1)
    with pytest.raises(ValueError, match="chain 0: freq_mhz"):
        T.step(s, T.Inputs((T.ChainInputs(freq_mhz=-1),)), 1)
    with pytest.raises(ValueError, match="dt_s must be"):
        T.step(s, T.Inputs((L3,)), math.nan)
    with pytest.raises(ValueError, match="inputs for 2 chains, state has 1"):
        T.step(s, T.Inputs((L3, L3)), 1)


chain_inputs = st.builds(
    T.ChainInputs,
    freq_mhz=st.floats(0, T.MAX_FREQ_MHZ),
    chips=st.integers(0, 256),
    voltage_v=st.floats(0, T.MAX_VOLTAGE_V),
    powered=st.booleans(),
)
inputs_st = st.builds(
    T.Inputs,
    chains=st.tuples(chain_inputs, chain_inputs),
    fan_pct=st.floats(0, 100),
    ambient_c=st.floats(*T.AMBIENT_RANGE_C),
)


@given(st.lists(st.tuples(inputs_st, st.floats(0, 1e6)), min_size=1, max_size=20))
def test_temperatures_stay_finite_and_bounded(steps: list[tuple[T.Inputs, float]]) -> None:
    state = T.initial(2, 25.0)
    lo, hi_board, hi_chip = 25.0, 25.0, 25.0
    for inputs, dt in steps:
        boards, chips, _ = T.steady_state(inputs)
        lo = min(lo, inputs.ambient_c)
        # Boards stay within their targets; a die within any board it has seen plus its rise.
        rises = [c - b for c, b in zip(chips, boards, strict=True)]
        hi_board = max(hi_board, *boards)
        hi_chip = max(hi_chip, hi_board + max(rises))
        state = T.step(state, inputs, dt)
        for t in state.board_c:
            assert math.isfinite(t) and lo - 1e-6 <= t <= hi_board + 1e-6
        for t in state.chip_c:
            assert math.isfinite(t) and lo - 1e-6 <= t <= hi_chip + 1e-6
        assert math.isfinite(state.wall_w) and state.wall_w > 0


def test_emulated_board_heats_with_clock_and_cools_with_fans(tmp_path: Path) -> None:
    p = PR.load("emulated", overrides={"sysfs_root": str(tmp_path)})
    emu = EmulatedPeripherals(p, tmp_path)
    for pic in emu.pics:  # DC-DC on, as the driver would leave it
        pic.dc_dc_on = True
    for c in range(4):
        emu.set_chain_clock(c, 384, 72)
    duty = Path(p.pwm_dir) / "duty_ns"
    duty.write_text("100000\n")
    emu.advance(1200)
    cool = emu.chip_temp_c(0)
    assert cool > emu.thermal.board_temp_c(0) > 25.0 and emu.thermal.wall_w > 700
    emu.kill_fan(0)
    emu.kill_fan(1)
    emu.advance(1200)
    assert emu.chip_temp_c(0) > cool + 20  # no airflow: far hotter
    emu.pics[0].dc_dc_on = False
    emu.advance(1200)
    assert emu.chip_temp_c(0) < 26.0  # chain 0 unpowered: back to ambient
