"""Thermal and power model of an L3+ class board, stepped in simulated time.

step(state, inputs, dt_s) -> state is pure. Per chain, power follows the usual CMOS shape:
P = chips x (dynamic_w_per_mhz x f x (V / V_nominal)^2 + static_w x (V / V_nominal)^2), zero with
the DC-DC off. Heat leaves through a board-to-air resistance that falls with airflow (fan duty),
so the board's PCB temperature relaxes toward ambient + P x R(airflow), and each chip's die sits
above its board by its own power x R_junction. Both relax with first-order time constants using
the exact exponential update, so any dt (however large) lands between the old temperature and the
steady state: temperatures stay finite and bounded for every input in range.

Calibration (ours, [I]): 384 MHz at 10 V is about 200 W per 72-chip chain (L3+ ≈ 800 W at the
wall), and at 25 °C ambient the boards settle near 45 °C with fans at 60 %, near 85 °C with no
airflow at all."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

V_NOMINAL = 10.0  # PIC code 0x80
DYNAMIC_W_PER_MHZ = 0.0068  # per chip at V_NOMINAL
STATIC_W = 0.15  # per chip at V_NOMINAL (leakage, clock tree)
R_BOARD_MIN_K_PER_W = 0.05  # board to air, chain of 72 chips, with infinite airflow
R_BOARD_FREE_K_PER_W = 0.25  # extra resistance with no airflow at all
AIRFLOW_GAIN = 6.0  # how fast more fan lowers the board resistance
R_JUNCTION_K_PER_W = 3.0  # die above its board, per watt of that chip
TAU_BOARD_S = 60.0
TAU_CHIP_S = 5.0
FAN_MAX_W = 30.0  # two fans at full duty; power goes with the cube of speed
CONTROLLER_W = 8.0
PSU_EFFICIENCY = 0.93

MAX_FREQ_MHZ = 1000.0
MAX_VOLTAGE_V = 12.0
AMBIENT_RANGE_C = (-40.0, 60.0)


@dataclass(frozen=True)
class ChainInputs:
    freq_mhz: float = 0.0
    chips: int = 0
    voltage_v: float = V_NOMINAL
    powered: bool = False  # the PIC's DC-DC


@dataclass(frozen=True)
class Inputs:
    chains: tuple[ChainInputs, ...]
    fan_pct: float = 100.0  # effective airflow, 0..100 (from the fans' actual speed)
    ambient_c: float = 25.0


@dataclass(frozen=True)
class State:
    board_c: tuple[float, ...]  # PCB (sensor "local") per chain
    chip_c: tuple[float, ...]  # hottest die (sensor "remote") per chain
    chain_w: tuple[float, ...] = field(default=())
    wall_w: float = 0.0
    t_s: float = 0.0


def initial(chains: int, ambient_c: float = 25.0) -> State:
    return State(
        board_c=(ambient_c,) * chains, chip_c=(ambient_c,) * chains, chain_w=(0.0,) * chains
    )


def _check(inputs: Inputs, n: int) -> None:
    if len(inputs.chains) != n:
        raise ValueError(f"thermal inputs for {len(inputs.chains)} chains, state has {n}")
    if not 0.0 <= inputs.fan_pct <= 100.0:
        raise ValueError(f"fan_pct must be 0..100, got {inputs.fan_pct!r}")
    lo, hi = AMBIENT_RANGE_C
    if not lo <= inputs.ambient_c <= hi:
        raise ValueError(f"ambient_c must be {lo:g}..{hi:g} °C, got {inputs.ambient_c!r}")
    for i, c in enumerate(inputs.chains):
        if not 0.0 <= c.freq_mhz <= MAX_FREQ_MHZ:
            raise ValueError(f"chain {i}: freq_mhz must be 0..{MAX_FREQ_MHZ:g}, got {c.freq_mhz!r}")
        if not 0.0 <= c.voltage_v <= MAX_VOLTAGE_V:
            raise ValueError(
                f"chain {i}: voltage_v must be 0..{MAX_VOLTAGE_V:g}, got {c.voltage_v!r}"
            )
        if not 0 <= c.chips <= 256:
            raise ValueError(f"chain {i}: chips must be 0..256, got {c.chips!r}")


def chip_power_w(c: ChainInputs) -> float:
    """One chip's power; zero without DC-DC (or without chips)."""
    if not c.powered or c.chips == 0:
        return 0.0
    v2 = (c.voltage_v / V_NOMINAL) ** 2
    return (DYNAMIC_W_PER_MHZ * c.freq_mhz + STATIC_W) * v2


def board_resistance(fan_pct: float) -> float:
    airflow = fan_pct / 100.0
    return R_BOARD_MIN_K_PER_W + R_BOARD_FREE_K_PER_W / (1.0 + AIRFLOW_GAIN * airflow)


def steady_state(inputs: Inputs) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """(board °C, chip °C, chain W) the system settles at for constant inputs."""
    r = board_resistance(inputs.fan_pct)
    boards, chips, watts = [], [], []
    for c in inputs.chains:
        per_chip = chip_power_w(c)
        w = per_chip * c.chips
        board = inputs.ambient_c + w * r
        boards.append(board)
        chips.append(board + per_chip * R_JUNCTION_K_PER_W)
        watts.append(w)
    return tuple(boards), tuple(chips), tuple(watts)


def _relax(now: float, target: float, dt_s: float, tau_s: float) -> float:
    return target + (now - target) * math.exp(-dt_s / tau_s)


def step(state: State, inputs: Inputs, dt_s: float) -> State:
    """The state dt_s seconds later under constant inputs."""
    if not (math.isfinite(dt_s) and dt_s >= 0):
        raise ValueError(f"dt_s must be a finite number >= 0, got {dt_s!r}")
    n = len(state.board_c)
    _check(inputs, n)
    boards_ss, _, watts = steady_state(inputs)
    boards, chips = [], []
    for i, c in enumerate(inputs.chains):
        board = _relax(state.board_c[i], boards_ss[i], dt_s, TAU_BOARD_S)
        # The die follows its (moving) board plus its own rise, faster.
        chip_target = board + chip_power_w(c) * R_JUNCTION_K_PER_W
        chips.append(_relax(state.chip_c[i], chip_target, dt_s, TAU_CHIP_S))
        boards.append(board)
    fans_w = FAN_MAX_W * (inputs.fan_pct / 100.0) ** 3
    wall = (sum(watts) + fans_w + CONTROLLER_W) / PSU_EFFICIENCY
    return replace(
        state, board_c=tuple(boards), chip_c=tuple(chips), chain_w=watts, wall_w=wall,
        t_s=state.t_s + dt_s,
    )  # fmt: skip


class ThermalModel:
    """Mutable holder around the pure step, for the emulators: set inputs, advance, read."""

    def __init__(self, chains: int, ambient_c: float = 25.0) -> None:
        self.state = initial(chains, ambient_c)
        self.chains = [ChainInputs() for _ in range(chains)]
        self.fan_pct = 100.0
        self.ambient_c = ambient_c

    def set_chain(self, chain: int, **changes: float | int | bool) -> None:
        self.chains[chain] = replace(self.chains[chain], **changes)

    def inputs(self) -> Inputs:
        return Inputs(tuple(self.chains), self.fan_pct, self.ambient_c)

    def advance(self, dt_s: float) -> State:
        self.state = step(self.state, self.inputs(), dt_s)
        return self.state

    def chip_temp_c(self, chain: int) -> float:
        return self.state.chip_c[chain]

    def board_temp_c(self, chain: int) -> float:
        return self.state.board_c[chain]

    @property
    def wall_w(self) -> float:
        return self.state.wall_w
