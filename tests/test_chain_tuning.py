"""Chain tuning API (per-chip clocks, frequency scale, clock gating) against the emulated BM1485
chain over a real pty; the emulator's per-chip stability model seen through the driver's counters.

Synchronisation is by events (on_nonce / on_event wake the waiter) with timeouts; the HASHRATE
register, which raises no event, is polled against a deadline."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from conftest import until_changed
from test_chain import FAST as CHAIN_FAST
from test_chain import run

from agent.emulator.hashboard import EmulatedChain, StabilityModel
from agent.hardware import bm1485 as bm
from agent.hardware.chain import Chain, ChainEvent, ChainTuning
from agent.hardware.cpu import Nonce, Work
from agent.mining.targets import difficulty_to_target

EASY = 2**-14  # 4 hashes per nonce: many nonces for little CPU
CHIPS = 8
FAST = replace(CHAIN_FAST, work_timeout_s=3600.0)  # the tuner's runs outlast a work


class Rig:
    def __init__(self, rate_scale: float = 300.0, **emu: Any) -> None:
        self.emu = EmulatedChain(
            CHIPS, 0, ticket_difficulty=EASY, rate_scale=rate_scale, max_hash_rate_hs=20000, **emu
        )
        self.nonces: list[Nonce] = []
        self.events: list[ChainEvent] = []
        self.changed = asyncio.Event()
        self.chain = Chain(
            self.emu.path, 0, ticket_difficulty=EASY, expected_chips=CHIPS,
            on_nonce=self._nonce, on_event=self._event, reset=self.emu.reset, timing=FAST,
        )  # fmt: skip

    def _nonce(self, n: Nonce) -> None:
        self.nonces.append(n)
        self.changed.set()

    def _event(self, e: ChainEvent) -> None:
        self.events.append(e)
        self.changed.set()

    def work(self) -> None:
        self.chain.set_work(Work(1, os.urandom(76), difficulty_to_target(1), clean=True))

    async def until(self, cond: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
        await until_changed(self.changed, cond, timeout, what or str(cond))

    def from_chip(self, chip: int) -> int:
        return sum(1 for n in self.nonces if n.chip == chip)

    async def __aenter__(self) -> Rig:
        self.emu.start()
        await self.chain.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.chain.stop()
        self.emu.stop()


def test_per_chip_frequency_is_honoured_and_survives_a_reboot() -> None:
    async def main() -> None:
        async with Rig() as rig:
            chain, emu = rig.chain, rig.emu
            assert chain.chip_count == CHIPS
            assert all(c.frequency_mhz == pytest.approx(384.375) for c in chain.chips.values())
            got = await chain.set_chip_frequency(2, 450.0)
            assert got == pytest.approx(bm.pll_for(450).frequency_mhz)
            await chain._read(bm.REG_PLL_PARAMETER, chain.chips[2].address)  # the write landed
            assert emu.frequency_mhz(2) == pytest.approx(got)
            for pos in (0, 1, 3, 7):
                assert emu.frequency_mhz(pos) == pytest.approx(384.375)  # addressed, not broadcast
            assert chain.chips[2].frequency_mhz == pytest.approx(got)
            assert chain.expected_hashrate_hs == pytest.approx(
                bm.chip_hashrate_hs(got) + 7 * bm.chip_hashrate_hs(384.375)
            )
            # the HASHRATE register follows the chip's own clock
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while not chain.chips[2].hashrate_hs > chain.chips[0].hashrate_hs * 1.1:
                assert loop.time() < deadline, "chip 2's HASHRATE never showed its higher clock"
                await asyncio.sleep(0.05)  # the poll loop answers no event: poll against a deadline
            with pytest.raises(ValueError):
                await chain.set_chip_frequency(99, 400.0)
            with pytest.raises(ValueError):
                await chain.set_chip_frequency(0, 5000.0)
            # a silent chain is reset and booted again: the tuned clock is written again
            emu.go_silent()
            await rig.until(
                lambda: any(e.kind == "chain_recovered" for e in rig.events), what="recovery"
            )
            await chain._read(bm.REG_PLL_PARAMETER, chain.chips[2].address)
            assert emu.frequency_mhz(2) == pytest.approx(got)
            assert emu.frequency_mhz(0) == pytest.approx(384.375)

    run(main())


def test_frequency_scale_applies_to_each_chips_tuned_clock() -> None:
    async def main() -> None:
        async with Rig() as rig:
            chain, emu = rig.chain, rig.emu
            await chain.set_chip_frequency(5, 500.0)
            await chain.set_frequency_scale(50.0)
            await chain._read(bm.REG_PLL_PARAMETER, chain.chips[CHIPS - 1].address)
            assert chain.scale_pct == 50.0
            assert emu.frequency_mhz(5) == pytest.approx(bm.pll_for(250.0).frequency_mhz)
            assert emu.frequency_mhz(0) == pytest.approx(bm.pll_for(384.375 / 2).frequency_mhz)
            assert chain.frequency_mhz < 260
            # a chip tuned while throttled runs at the scale of its new clock
            await chain.set_chip_frequency(1, 400.0)
            await chain._read(bm.REG_PLL_PARAMETER, chain.chips[1].address)
            assert emu.frequency_mhz(1) == pytest.approx(bm.pll_for(200.0).frequency_mhz)
            await chain.set_frequency_scale(100.0)
            await chain._read(bm.REG_PLL_PARAMETER, chain.chips[CHIPS - 1].address)
            assert emu.frequency_mhz(5) == pytest.approx(bm.pll_for(500.0).frequency_mhz)
            assert emu.frequency_mhz(1) == pytest.approx(bm.pll_for(400.0).frequency_mhz)
            assert emu.frequency_mhz(0) == pytest.approx(384.375)
            for bad in (0.0, -5.0, 120.0, float("nan")):
                with pytest.raises(ValueError):
                    await chain.set_frequency_scale(bad)

    run(main())


def test_gating_stops_a_cores_and_a_chips_nonces() -> None:
    async def main() -> None:
        async with Rig() as rig:
            chain, emu = rig.chain, rig.emu
            rig.work()
            await rig.until(lambda: chain.chips[1].cores.get(5, 0) >= 2, what="chip 1 core 5")
            await chain.disable_core(1, 5)
            await chain.disable_chip(3)
            await chain._read(bm.REG_PLL_PARAMETER, chain.chips[3].address)  # commands landed
            assert 5 not in emu.cores_enabled(1) and len(emu.cores_enabled(1)) == 11
            assert emu.cores_enabled(3) == frozenset()
            assert chain.chips[1].disabled_cores == {5}
            assert chain.chips[3].disabled
            # let nonces already on the wire arrive, then count
            start = rig.from_chip(1)
            await rig.until(lambda: rig.from_chip(1) >= start + 20, what="chip 1 after gating")
            core5, chip3 = chain.chips[1].cores.get(5, 0), rig.from_chip(3)
            start = rig.from_chip(1)
            await rig.until(lambda: rig.from_chip(1) >= start + 80, what="more nonces of chip 1")
            assert chain.chips[1].cores.get(5, 0) == core5, "a gated core still finds nonces"
            assert rig.from_chip(3) == chip3, "a gated chip still finds nonces"
            assert chain.chip_count == CHIPS and chain.hw_errors == 0
            # the gated chip is out of the expected rate, the gated core's share too
            f = 384.375
            assert chain.expected_hashrate_hs == pytest.approx(
                bm.chip_hashrate_hs(f) * (6 + 11 / 12)
            )
            assert chain.snapshot()["disabled_chips"] == [3]
            with pytest.raises(ValueError):
                await chain.disable_core(1, 6)  # not a core number
            # the emulator's power follows the gating: 6 full chips + 11/12 + a gated one
            v2 = 1.0
            want = (0.0068 * f * (6 + 11 / 12) + 0.15 * CHIPS) * v2
            assert emu.power_w() == pytest.approx(want)

    run(main())


def test_a_chip_past_its_stable_clock_makes_hw_errors_on_its_own_counter() -> None:
    """Stable clocks per chip: chip 6 (300 MHz) fails at 384 MHz, the others do not; the
    ChainTuning target turns it down and its errors stop; voltage moves the stable clocks."""

    async def main() -> None:
        stable = [500.0] * CHIPS
        stable[6] = 300.0
        model = StabilityModel(base_error=0.0)
        async with Rig(stability=model, stable_mhz=stable, seed=7) as rig:
            chain, emu = rig.chain, rig.emu
            assert emu.error_rate(6) > 0.99 and emu.error_rate(0) == 0.0
            rig.work()
            await rig.until(lambda: chain.chips[6].hw_errors >= 10, what="chip 6's HW errors")
            assert all(chain.chips[i].hw_errors == 0 for i in range(CHIPS) if i != 6)
            assert chain.chips[6].nonces <= 2  # nearly everything it sends is bad
            volts: list[float] = []
            target = ChainTuning(chain, volts.append)
            await target.set_chip_frequency(6, 287.5)
            await chain._read(bm.REG_PLL_PARAMETER, chain.chips[6].address)
            assert emu.error_rate(6) == 0.0
            good = chain.chips[6].nonces
            await rig.until(lambda: chain.chips[6].nonces >= good + 10, what="chip 6 good nonces")
            hw, good = chain.chips[6].hw_errors, chain.chips[6].nonces  # the wire is clear now
            await rig.until(lambda: chain.chips[6].nonces >= good + 40, what="chip 6 good nonces")
            assert chain.chips[6].hw_errors == hw
            sample = target.sample(power_w=12.0)
            assert sample.voltage_v == 10.0 and sample.power_w == 12.0
            assert [s.chip for s in sample.chips] == list(range(CHIPS))
            assert sample.chips[6].frequency_mhz == pytest.approx(287.5)
            await target.set_voltage(9.0)
            assert volts == [9.0] and target.sample().voltage_v == 9.0
            emu.set_voltage(9.0)  # the board ties the PIC's voltage to the chips
            assert emu.stable_mhz(6) == pytest.approx(270.0)
            assert emu.error_rate(6) > 0.9

    run(main())
