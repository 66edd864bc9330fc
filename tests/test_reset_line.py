"""The chains' ASIC reset GPIO, wired to the emulated chips (agent.emulator.hashboard).

The driver writes the line through its sysfs value file (agent.hardware.board: Board.reset_chain
pulses it, hold_reset holds it low); the emulated chips follow that file: held low they answer
nothing and lose their state, a pulse puts them back to power-on state. The chain driver here is
the real one (agent.hardware.chain.Chain) with the real board code, on an EmulatedL3Plus.

Synchronisation is by events (the driver's on_nonce / on_event, the emulator's reset-line
listener) with timeouts, never sleeps."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from conftest import until_changed

from agent import scrypt
from agent.emulator.board import EmulatedL3Plus
from agent.emulator.hashboard import EmulatedChain
from agent.hardware.board import Board
from agent.hardware.chain import Chain, ChainEvent, ChainTiming
from agent.hardware.cpu import Nonce, Work
from agent.mining.targets import difficulty_to_target

EASY = 1 / 1024
CHIPS = 72
FAST = ChainTiming(
    command_gap_s=0.001,
    count_window_s=0.5,
    count_retries=1,
    reply_timeout_s=0.3,
    hashrate_poll_s=0.15,
    temp_poll_s=0.5,
    missed_polls_lost=6,  # ~1 s: a loaded test machine delays the emulator's replies
    silence_s=1.0,
    reboot_backoff_s=0.2,
)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 90))


class Rig:
    """One emulated L3+ chain (reset line wired) driven by Board + Chain; records what the driver
    reports and every reset the emulated chips took from the line."""

    def __init__(self, root: Path, *, hung: bool = False) -> None:
        self.hung = hung  # the chain is hung (go_silent) when the driver first boots it
        self.emu = EmulatedL3Plus(root, chains=1, chips=CHIPS, ticket_difficulty=EASY,
                                  rate_scale=10.0)  # fmt: skip
        self.chips = self.emu.chips.chains[0]
        self.chips.on_line = self._line
        # (what, chips with an address, PLL MHz of chip 0, nonces emitted) as each reset happened
        self.lines: list[tuple[str, int, float, int]] = []
        self.nonces: list[Nonce] = []
        self.events: list[ChainEvent] = []
        self.works: dict[int, Work] = {}
        self.stuck_low = False  # the reset hook holds the line low instead of pulsing it
        self.changed = asyncio.Event()
        self._next = 1

    # emulator thread, chip lock held
    def _line(self, what: str) -> None:
        addressed = sum(self.chips.chip_address(p) is not None for p in range(CHIPS))
        row = (what, addressed, self.chips.frequency_mhz(0), self.chips.stats.nonces_out)
        self.lines.append(row)
        self.loop.call_soon_threadsafe(self.changed.set)

    async def _reset(self) -> None:
        if self.stuck_low:
            self.board.hold_reset(0)
        else:
            await self.board.reset_chain(0)

    def _nonce(self, n: Nonce) -> None:
        self.nonces.append(n)
        self.changed.set()

    def _event(self, e: ChainEvent) -> None:
        self.events.append(e)
        self.changed.set()

    def kinds(self, kind: str) -> list[ChainEvent]:
        return [e for e in self.events if e.kind == kind]

    def addressed(self) -> int:
        return sum(self.chips.chip_address(p) is not None for p in range(CHIPS))

    def work(self) -> Work:
        w = Work(self._next, os.urandom(76), difficulty_to_target(1), clean=True)
        self._next += 1
        self.works[w.work_id] = w
        self.chain.set_work(w)
        return w

    async def until(self, cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        await until_changed(self.changed, cond, timeout, what)

    async def mining(self, more: int = 5) -> None:
        """`more` verified nonces from now, each from the chip the emulator says found it."""
        seen = len(self.nonces)
        await self.until(lambda: len(self.nonces) >= seen + more, f"{more} nonces")
        for n in self.nonces[seen:]:
            work = self.works[n.work_id]
            h = scrypt.pow_hash(work.header76 + n.nonce.to_bytes(4, "little"))
            assert h == n.raw_hash and scrypt.hash_meets(h, difficulty_to_target(EASY))
            assert self.chips.position_of((n.nonce >> 20) & 0xFF) == n.chip

    async def __aenter__(self) -> Rig:
        self.loop = asyncio.get_running_loop()
        await self.emu.start()
        self.board = Board.open(self.emu.profile, emulator=self.emu.peripherals)
        if self.hung:
            # Board.open re-writes the idle level (1), which the chips may take for a pulse
            # they missed: follow the line from here, so that only the boot's pulse can help.
            self.chips.attach_reset_line(self.emu.peripherals.sysfs.reset_path(0))
            self.chips.go_silent()
        await self.board.power_on(0)
        self.chain = Chain(self.emu.paths[0], 0, ticket_difficulty=EASY, on_nonce=self._nonce,
                           on_event=self._event, reset=self._reset, timing=FAST)  # fmt: skip
        await self.chain.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.chain.stop()
        await self.board.close()
        await self.emu.stop()


def test_boot_pulse_revives_a_chain_hung_before_the_agent_started(tmp_path: Path) -> None:
    async def main() -> None:
        async with Rig(tmp_path, hung=True) as rig:
            assert rig.lines, "the boot's reset pulse never reached the chips"
            assert rig.chain.chip_count == CHIPS and rig.addressed() == CHIPS
            assert rig.chain.boots == 1 and not rig.kinds("chips_missing")
            assert not rig.chips.in_reset
            rig.work()
            await rig.mining()
            assert not rig.kinds("chip_lost")

    run(main())


def test_silent_chain_is_revived_by_the_drivers_reset_pulse(tmp_path: Path) -> None:
    """No emulator-side wake: only the pulse the driver's recovery writes revives the chain,
    and that pulse takes every chip's address, clock and work with it."""

    async def main() -> None:
        async with Rig(tmp_path) as rig:
            rig.work()
            await rig.mining(3)
            for cycle in range(3):  # again and again: each recovery as clean as the first
                assert rig.addressed() == CHIPS
                before = len(rig.lines)
                rig.chips.go_silent()  # hung: only a reset helps
                await rig.until(lambda c=cycle: len(rig.kinds("chain_recovered")) > c,
                                "the driver's recovery")  # fmt: skip
                assert len(rig.kinds("chain_silent")) == cycle + 1
                resets = rig.lines[before:]
                assert resets, "the recovery's reset pulse never reached the chips"
                assert all(addressed == 0 and mhz == 0.0 for _, addressed, mhz, _ in resets)
                assert rig.chain.chip_count == CHIPS and rig.addressed() == CHIPS
                await rig.mining()  # the re-boot re-sent the work
                assert rig.chain.snapshot()["lost_chips"] == []  # lost while silent, back now
            assert not rig.kinds("chain_dead")

    run(main())


def test_line_held_low_keeps_the_chain_silent(tmp_path: Path) -> None:
    async def main() -> None:
        async with Rig(tmp_path) as rig:
            rig.work()
            await rig.mining(3)
            before = len(rig.lines)
            rig.stuck_low = True
            rig.board.hold_reset(0)  # and the driver's re-boots cannot release it
            await rig.until(lambda: rig.kinds("chain_silent"), "the silence noticed")
            await rig.until(lambda: rig.kinds("chain_dead"), "a re-boot under the held line")
            assert "no chip answered" in rig.kinds("chain_dead")[0].detail
            assert rig.chips.in_reset and rig.emu.peripherals.sysfs.reset_asserted(0)
            assert [row[0] for row in rig.lines[before:]] == ["held"]  # low all along
            _, addressed, _, emitted = rig.lines[before]
            assert addressed == 0
            assert rig.chips.stats.nonces_out == emitted  # not one nonce while held
            assert rig.chips.stats.held_bytes > 0  # the driver's polls and boot reads, dropped
            found = len(rig.nonces)
            held_rows = len(rig.lines)
            rig.stuck_low = False  # the next re-boot pulses the line: released
            await rig.until(lambda: rig.kinds("chain_recovered"), "the recovery")
            # the boot's reset is two pulses: the first releases the line; the second is seen
            # as a pulse, as held then released, or not at all, as the emulator samples it
            after = [row[0] for row in rig.lines[held_rows:]]
            assert after and after[0] == "released" and after[-1] in ("released", "pulse")
            assert not rig.chips.in_reset
            assert len(rig.nonces) == found
            assert rig.chain.chip_count == CHIPS and rig.addressed() == CHIPS
            await rig.mining()

    run(main())


def test_pulse_during_mining_drops_addresses_and_the_driver_recovers(tmp_path: Path) -> None:
    async def main() -> None:
        async with Rig(tmp_path) as rig:
            rig.work()
            await rig.mining(3)
            before = len(rig.lines)
            await rig.board.reset_chain(0)  # a pulse the chain driver did not ask for
            await rig.until(lambda: len(rig.lines) > before, "the chips to take the pulse")
            assert all(addressed == 0 for _, addressed, _, _ in rig.lines[before:])
            await rig.until(lambda: rig.addressed() == CHIPS, "the driver to re-address", 6.0)
            await rig.mining()

    run(main())


# ------------------------------------------------------------------ the line, sample by sample


class Line:
    """A reset-line value file, written the way the driver's gpio.Gpio writes it, with its
    mtime set by hand: a coarse timestamp clock made exact."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tick_ns = 1_000_000_000_000_000_000
        self.write(1)

    def write(self, level: int, *, same_tick: bool = False) -> None:
        with open(self.path, "w") as f:
            f.write(str(level))
        if not same_tick:
            self.tick_ns += 4_000_000
        os.utime(self.path, ns=(self.tick_ns, self.tick_ns))


def test_line_samples_pulses_holds_and_writes_under_way(tmp_path: Path) -> None:
    """_check_line on its own (no thread): the decisions the thread makes before each byte."""
    chips = EmulatedChain(4, ticket_difficulty=EASY)
    try:
        line = Line(tmp_path / "value")
        seen: list[str] = []
        chips.on_line = seen.append
        chips.attach_reset_line(line.path)
        assert not chips.in_reset and seen == []  # a high line at attach is no reset
        with chips._lock:
            chips._command(bytes([0x40, 0x05, 0x03, 0, 0]))  # set address 3 (CRC not checked)
        assert chips.chip_address(0) == 3

        def check() -> bool:
            with chips._lock:
                return chips._check_line()

        assert check() and seen == []  # nothing written: nothing happens
        line.write(0)
        line.write(1)  # a whole pulse between two samples
        assert check() and seen == ["pulse"] and chips.chip_address(0) is None
        chips.go_silent()
        line.write(0)
        assert check() and chips.in_reset and seen[-1] == "held" and not chips._silent
        line.write(1)
        line.write(0)  # released and held again between two samples: still in reset
        assert check() and chips.in_reset and seen == ["pulse", "held"]
        line.write(1)
        assert check() and not chips.in_reset and seen[-1] == "released"
        assert chips.stats.line_holds == 1 and chips.stats.line_pulses == 2
        line.path.write_text("")  # the writer has truncated the file, not yet written
        assert not check()
        chips._line_unsettled = time.monotonic() - 1.0  # unreadable for far longer than a write
        assert check() and seen[-1] == "released"  # a broken file: the last level read holds
        line.write(1, same_tick=True)  # a rewrite of 1 the clock cannot tell: no change
        assert check() and seen[-1] == "released"
        chips.vanish(1)
        line.write(0)
        line.write(1)
        assert check() and seen[-1] == "pulse"
        assert chips.live_chips() == 3  # a reset does not bring a dead chip back
    finally:
        chips.stop()


def test_a_reset_does_not_bring_power_back(tmp_path: Path) -> None:
    """DC-DC off: the recovery's pulses reach the chips, yet nothing answers until the power is
    back (a reset cures a hung chain, not a missing supply)."""

    async def main() -> None:
        async with Rig(tmp_path) as rig:
            rig.work()
            await rig.mining(3)
            await rig.board.pics[0].set_dc_dc(False)  # the board ties power to the chips
            await rig.until(lambda: rig.kinds("chain_dead"), "a re-boot without power to fail")
            before = len(rig.lines)
            await rig.until(lambda: len(rig.kinds("chain_dead")) >= 2, "another failed re-boot")
            assert len(rig.lines) > before, "the re-boot's pulse never reached the chips"
            assert not rig.kinds("chain_recovered")
            await rig.board.power_on(0)
            await rig.until(lambda: rig.kinds("chain_recovered"), "the recovery with power")
            assert rig.chain.chip_count == CHIPS
            await rig.mining()

    run(main())
