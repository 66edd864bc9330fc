"""One BM1485 chain on a UART: boot, work, nonces, per-chip counters, temperatures, recovery.

The serial port is opened with pyserial and read on the event loop (loop.add_reader on its fd):
one loop, one thread. Frames come from agent.hardware.bm1485 (pure). Interface in the spirit of the
CPU board: set_work(Work) in, on_nonce(Nonce(chain, chip, work_id, nonce, raw_hash)) out, only
after the nonce's scrypt hash was checked against the ticket target, off the loop on the C core's
own threads (agent.hardware.verifier); anything else is counted per chip as a HW error or stale,
never reported.

Boot follows the reference (§1.7): reset hook, count chips with retries, chain inactive,
addressing (addrInterval = 256 / chips), PLL, MISC_CONTROL, temperature-sensor calibration through
the sensor chips' I2C master, core clock enable, ticket mask. While mining: HASHRATE polled every
HASHRATE_POLL_S (a chip missing MISSED_POLLS_LOST polls in a row has dropped off: reported, and
again when it is back), temperatures every TEMP_POLL_S, and a chain silent for SILENCE_S is reset
and booted again. Every problem becomes a ChainEvent(chain, kind, chip, detail) through on_event.

Tuning (reference §1.4, PLL_PARAMETER and CORE_CMD_IN): set_chip_frequency(chip, MHz) writes one
chip's PLL (an addressed write), set_frequency_scale(pct) runs every chip at pct of its own tuned
clock (the thermal throttle), disable_core / disable_chip gate clocks through CORE_CMD_IN. Tuned
clocks, the scale and the gating are kept per chip and written again after every (re)boot. A
clock-gated chip is left out of the expected and measured rates and of HW-error accounting (a
nonce still in flight from it is counted as gated, not as an error)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import os
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import serial

from agent import defaults as D
from agent import scrypt
from agent.hardware import bm1485 as bm
from agent.hardware.cpu import Nonce, Work
from agent.hardware.verifier import NonceVerifier
from agent.mining.targets import difficulty_to_target

if TYPE_CHECKING:
    from agent.control.tuner import ChainSample

log = logging.getLogger(__name__)


class ChainError(RuntimeError):
    """The chain cannot mine (no chips answered, port gone)."""


@dataclass(frozen=True)
class ChainTiming:
    command_gap_s: float = D.BM1485_COMMAND_GAP_S
    inactive_wait_s: float = D.BM1485_INACTIVE_WAIT_S
    count_window_s: float = D.BM1485_COUNT_WINDOW_S
    count_retries: int = D.BM1485_COUNT_RETRIES
    reply_timeout_s: float = D.BM1485_REPLY_TIMEOUT_S
    hashrate_poll_s: float = D.BM1485_HASHRATE_POLL_S
    temp_poll_s: float = D.BM1485_TEMP_POLL_S
    missed_polls_lost: int = D.BM1485_MISSED_POLLS_LOST
    silence_s: float = D.BM1485_SILENCE_S
    reboot_backoff_s: float = D.BM1485_REBOOT_BACKOFF_S
    flush_s: float = 0.05  # quiet line: let the stream decoder decide on what it holds
    burst_read_s: float = D.BM1485_BURST_READ_S
    burst_slack_s: float = D.BM1485_BURST_SLACK_S
    work_timeout_s: float | None = None  # None: the reference's formula from frequency


@dataclass(frozen=True)
class ChainEvent:
    """kind: chips_missing, chip_lost, chip_back, chain_silent, chips_reset, chain_recovered,
    chain_dead, crc_error, hw_error, unknown_work, stale, sensor_error, port_error."""

    chain: int
    kind: str
    chip: int | None
    detail: str


@dataclass
class ChipStats:
    index: int
    address: int
    nonces: int = 0
    hw_errors: int = 0
    stale: int = 0
    last_seen: float | None = None  # monotonic time of the last nonce (good or bad)
    hashrate_hs: float = 0.0  # from the HASHRATE register (value x 256)
    missed_polls: int = 0
    lost: bool = False
    cores: dict[int, int] = field(default_factory=dict)  # core number -> verified nonces
    frequency_mhz: float = 0.0  # the clock its PLL was last set to
    tuned_mhz: float | None = None  # its own clock (set_chip_frequency); None: the chain's
    disabled: bool = False  # every core clock-gated
    disabled_cores: set[int] = field(default_factory=set)
    gated_nonces: int = 0  # nonces that arrived after it was gated (not counted as HW errors)

    @property
    def expected_hashrate_hs(self) -> float:
        """The rate model (§1.1) at its clock, for the cores still on; 0 when gated or lost."""
        if self.disabled or self.lost:
            return 0.0
        live = len(bm.CORES) - len(self.disabled_cores & set(bm.CORES))
        return bm.chip_hashrate_hs(self.frequency_mhz) * live / len(bm.CORES)


@dataclass(frozen=True)
class TempReading:
    local_c: float  # PCB (the sensor's own temperature)
    remote_c: float  # die (the chip's diode)
    at: float


def work_timeout_s(frequency_mhz: float, addr_interval: int) -> float:
    """Reference §1.5: 2**32 / 16 / (256 / interval) / (f x 1e6) x 0.95 x 2500 (19 s at 384/3)."""
    return 2**32 / 16 / (256 / addr_interval) / (frequency_mhz * 1e6) * 0.95 * 2500


class Chain:
    def __init__(
        self,
        port: str,
        chain: int = 0,
        *,
        frequency_mhz: float = D.BM1485_FREQUENCY_MHZ,
        ticket_difficulty: float = D.BM1485_TICKET_DIFFICULTY,
        ticket_mask: int = D.BM1485_TICKET_MASK,
        expected_chips: int = D.CHIPS_PER_CHAIN,
        addr_interval: int | None = None,
        sensor_chips: tuple[int, ...] = D.BM1485_SENSOR_CHIPS,
        on_nonce: Callable[[Nonce], None] | None = None,
        on_exhausted: Callable[[Work], None] | None = None,
        on_event: Callable[[ChainEvent], None] | None = None,
        reset: Callable[[], Awaitable[None] | None] | None = None,
        timing: ChainTiming | None = None,
        baudrate: int = D.BM1485_BAUD,
    ) -> None:
        """on_nonce, on_exhausted and on_event run on the event loop. `reset` pulses the chain's
        reset GPIO (the board supplies it); addr_interval is the board's 256 / largest chain."""
        self.port = port
        self.chain = chain
        self.pll = bm.pll_for(frequency_mhz)
        self.ticket_difficulty = ticket_difficulty
        self.ticket_target = difficulty_to_target(ticket_difficulty)
        self.ticket_mask = ticket_mask
        self.expected_chips = expected_chips
        self.fixed_interval = addr_interval
        self.sensor_chips = sensor_chips
        self.timing = timing or ChainTiming()
        self.baudrate = baudrate
        self._on_nonce = on_nonce
        self._on_exhausted = on_exhausted
        self._on_event = on_event
        self._reset = reset
        # chain state
        self.addr_interval = addr_interval or 1
        self.chips: dict[int, ChipStats] = {}  # chip index -> stats
        self.temps: dict[int, TempReading | None] = {}  # sensor chip index -> last reading
        self.events: deque[ChainEvent] = deque(maxlen=256)
        self.booted = asyncio.Event()
        self.boots = 0
        self.decoder = bm.StreamDecoder()
        self._crc_base = self._skipped_base = 0
        self.nonces = 0  # verified and reported
        self.hw_errors = 0
        self.stale = 0
        self.unknown_work = 0
        self.unknown_chip = 0
        self.gated_nonces = 0
        self.unverified = 0  # dropped because the verifier's queue was full
        self.scale_pct = 100.0  # share of each chip's tuned clock it runs at (thermal throttle)
        self.last_rx = 0.0
        # work
        self._slots: dict[int, Work] = {}  # 7-bit work id -> work (a reused slot overwrites)
        self._live: deque[int] = deque(maxlen=D.BM1485_LIVE_WORKS)
        self._next_slot = 0
        self._current: Work | None = None
        # recent (slot << 32 | nonce) keys: a chip sending one nonce twice is a HW error. Ints,
        # not tuples: 4 chains x the window stay well under a megabyte when full.
        self._seen: deque[int] = deque(maxlen=D.BM1485_DUP_WINDOW)
        self._seen_set: set[int] = set()
        # I/O
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._out = bytearray()
        self._watching_writes = False
        self._reading = False  # the fd is watched for input (not during a burst's slice)
        self._burst_until = 0.0  # loop time until which a poll's replies are still streaming in
        self._resume_handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[tuple[int, int], list[asyncio.Future[bytes]]] = {}
        self._collect: dict[int, tuple[list[bm.RegisterResponse], int, asyncio.Event]] = {}
        self._poll_gen = 0
        self._replies: Counter[int] = Counter()  # chip index -> HASHRATE replies this poll
        self._flush_handle: asyncio.TimerHandle | None = None
        self._work_timer: asyncio.TimerHandle | None = None
        self._work_deadline = 0.0  # loop time at which the current work is used up
        self._verifier: NonceVerifier[tuple[ChipStats, int, int, bytes, Work]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._booting = False

    # ------------------------------------------------------------------ public API

    @property
    def frequency_mhz(self) -> float:
        """Mean clock of the chips that hash (the chain's boot clock before any chip is known)."""
        chips = self.chips.values()
        clocks = [c.frequency_mhz for c in chips if not c.disabled and c.frequency_mhz]
        return sum(clocks) / len(clocks) if clocks else self.pll.frequency_mhz

    @property
    def chip_count(self) -> int:
        return len(self.chips)

    @property
    def hashrate_hs(self) -> float:
        return sum(c.hashrate_hs for c in self.chips.values() if not c.lost and not c.disabled)

    @property
    def expected_hashrate_hs(self) -> float:
        """The rate model over the chips that hash, at their own clocks and live cores."""
        return sum(c.expected_hashrate_hs for c in self.chips.values())

    @property
    def hw_errors_counted(self) -> int:
        """HW errors of the chips that still hash (gated chips are left out)."""
        return sum(c.hw_errors for c in self.chips.values() if not c.disabled)

    # ------------------------------------------------------------------ tuning

    def _stats(self, chip: int) -> ChipStats:
        c = self.chips.get(chip)
        if c is None:
            raise ValueError(f"chain {self.chain}: no chip {chip}")
        return c

    def _pll_of(self, c: ChipStats) -> bm.Pll:
        base = c.tuned_mhz if c.tuned_mhz is not None else self.pll.frequency_mhz
        mhz = max(bm.PLL_MIN_MHZ, min(bm.PLL_MAX_MHZ, base * self.scale_pct / 100.0))
        return bm.pll_for(mhz)

    async def _write_clock(self, c: ChipStats) -> None:
        pll = self._pll_of(c)
        self._write(bm.write_register(bm.REG_PLL_PARAMETER, pll.value, c.address))
        c.frequency_mhz = pll.frequency_mhz
        await asyncio.sleep(self.timing.command_gap_s)  # write pacing (§1.2)

    async def set_chip_frequency(self, chip: int, mhz: float) -> float:
        """Tune one chip's clock (an addressed PLL_PARAMETER write); it runs at the current
        scale of it. Returns the clock its PLL now gives. ValueError: no such chip, or outside
        the PLL's range."""
        c = self._stats(chip)
        if not (math.isfinite(mhz) and bm.PLL_MIN_MHZ <= mhz <= bm.PLL_MAX_MHZ):
            raise ValueError(
                f"frequency must be in {bm.PLL_MIN_MHZ:g}..{bm.PLL_MAX_MHZ:g} MHz, got {mhz!r}"
            )
        c.tuned_mhz = float(mhz)
        await self._write_clock(c)
        return c.frequency_mhz

    async def set_frequency_scale(self, pct: float) -> None:
        """Run every chip at pct % of its own tuned clock (100: as tuned); the thermal throttle.
        Gated chips keep their setting and get it when enabled again."""
        if not (math.isfinite(pct) and 0 < pct <= 100):
            raise ValueError(f"frequency scale must be in (0, 100] %, got {pct!r}")
        if abs(pct - self.scale_pct) < 1e-9:
            return
        self.scale_pct = float(pct)
        for c in sorted(self.chips.values(), key=lambda c: c.index):
            if not c.disabled:
                await self._write_clock(c)

    async def disable_core(self, chip: int, core: int) -> None:
        """Clock-gate one core of one chip (CORE_CMD_IN clock enable, data 'off', addressed)."""
        c = self._stats(chip)
        if core not in bm.CORES:
            raise ValueError(f"core must be one of {bm.CORES}, got {core!r}")
        c.disabled_cores.add(core)
        self._write(bm.write_register(bm.REG_CORE_CMD_IN, bm.core_clock_value(core, False),
                                      c.address))  # fmt: skip
        await asyncio.sleep(self.timing.command_gap_s)

    async def disable_chip(self, chip: int) -> None:
        """Clock-gate every core of one chip (CORE_CMD_IN, all-cores, addressed). The chip is then
        left out of the expected rates and HW accounting."""
        c = self._stats(chip)
        c.disabled = True
        c.hashrate_hs = 0.0
        self._write(bm.write_register(bm.REG_CORE_CMD_IN, bm.chip_clock_value(False), c.address))
        await asyncio.sleep(self.timing.command_gap_s)

    async def enable_chip(self, chip: int) -> None:
        """Undo disable_chip: clocks on again (cores gated one by one stay gated), its clock set."""
        c = self._stats(chip)
        c.disabled = False
        self._write(bm.write_register(bm.REG_CORE_CMD_IN, bm.chip_clock_value(True), c.address))
        for core in sorted(c.disabled_cores):
            self._write(bm.write_register(bm.REG_CORE_CMD_IN, bm.core_clock_value(core, False),
                                          c.address))  # fmt: skip
        await self._write_clock(c)

    async def _restore_tuning(self) -> None:
        """After a boot: every chip's own clock, the scale and the gating, written again."""
        for c in sorted(self.chips.values(), key=lambda c: c.index):
            c.frequency_mhz = self.pll.frequency_mhz
            if c.tuned_mhz is not None or abs(self.scale_pct - 100.0) > 1e-9:
                await self._write_clock(c)
            if c.disabled:
                value = bm.chip_clock_value(False)
                self._write(bm.write_register(bm.REG_CORE_CMD_IN, value, c.address))
            else:
                for core in sorted(c.disabled_cores):
                    value = bm.core_clock_value(core, False)
                    self._write(bm.write_register(bm.REG_CORE_CMD_IN, value, c.address))

    def tuner_sample(
        self, voltage_v: float, *, temp_c: float | None = None, power_w: float | None = None
    ) -> ChainSample:
        """Per-chip cumulative counters for agent.control.tuner.decide (lost chips left out)."""
        from agent.control.tuner import ChainSample, ChipSample

        chips = tuple(
            ChipSample(c.index, c.frequency_mhz, c.nonces, c.hw_errors, dict(c.cores))
            for c in sorted(self.chips.values(), key=lambda c: c.index)
            if not c.lost and c.frequency_mhz > 0
        )
        return ChainSample(self.chain, voltage_v, chips, temp_c, power_w)

    @property
    def temp_c(self) -> float | None:
        """Hottest local (PCB) reading, as the stock fan control uses; None when unknown."""
        vals = [t.local_c for t in self.temps.values() if t is not None]
        return max(vals) if vals else None

    @property
    def crc_errors(self) -> int:
        """CRC5 failures since start, across re-inits (each boot starts a fresh decoder)."""
        return self._crc_base + self.decoder.crc_errors

    @property
    def skipped_bytes(self) -> int:
        return self._skipped_base + self.decoder.skipped_bytes

    async def start(self) -> None:
        """Open the port, boot the chain, start polling; ChainError when no chip answers."""
        if self._tasks:
            raise RuntimeError(f"chain {self.chain} already started")
        self._loop = asyncio.get_running_loop()
        self._verifier = NonceVerifier(self._loop, self._verified,
                                       lazy_s=D.CHAIN_VERIFY_LAZY_S)
        try:
            self._open()
            await self._boot_with_retries(raise_on_fail=True)
        except BaseException:
            self._close()  # the verifier's threads and the port: a failed start keeps neither
            raise
        self._tasks = [
            asyncio.create_task(self._poll_loop(), name=f"chain{self.chain}-poll"),
            asyncio.create_task(self._temp_loop(), name=f"chain{self.chain}-temp"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        # Python 3.11's asyncio.wait_for can swallow a cancellation that lands as its inner
        # future completes (a register reply racing the cancel): such a loop would carry on for
        # ever. Cancel again until every task has ended.
        pending = set(tasks)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.5)
            for t in pending:
                t.cancel()
        for h in (self._flush_handle, self._work_timer):
            if h is not None:
                h.cancel()
        if self._verifier is not None:  # the last nonces are still reported
            left = await self._verifier.drain(D.CHAIN_VERIFY_DRAIN_S)
            if left:
                log.warning("chain %d: %d nonce(s) still being verified at stop: dropped",
                            self.chain, left)  # fmt: skip
        self._close()

    async def wait(self) -> None:
        """Return when the chain stops; raise if one of its tasks failed (for a supervisor)."""
        if self._tasks:
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]

    def set_work(self, work: Work) -> None:
        """Send `work` to every chip now. Clean work retires all older work at once: a nonce of
        older work is then counted stale and never reported."""
        slot = self._next_slot
        self._next_slot = (slot + 1) & 0x7F
        if work.clean:
            self._live.clear()
            # nonces of retired slots are counted stale before the duplicate check: forget them
            self._seen.clear()
            self._seen_set.clear()
        with contextlib.suppress(ValueError):
            self._live.remove(slot)  # the slot is reused: its old work is gone
        self._slots[slot] = work
        self._live.append(slot)
        self._current = work
        self._write(bm.work_frame(slot, work.header76))
        self._arm_work_timer(work)

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.chain,
            "chips": self.chip_count,
            "frequency_mhz": round(self.frequency_mhz, 3),
            "hashrate_hs": self.hashrate_hs,
            "nonces": self.nonces,
            "hw_errors": self.hw_errors,
            "stale": self.stale,
            "crc_errors": self.crc_errors,
            "skipped_bytes": self.skipped_bytes,
            "temp_c": self.temp_c,
            "lost_chips": [c.index for c in self.chips.values() if c.lost],
            "disabled_chips": [c.index for c in self.chips.values() if c.disabled],
            "scale_pct": self.scale_pct,
            "expected_hashrate_hs": self.expected_hashrate_hs,
        }

    # ------------------------------------------------------------------ port

    def _open(self) -> None:
        try:
            self._serial = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=0)
        except (serial.SerialException, OSError) as e:
            raise ChainError(f"chain {self.chain}: cannot open {self.port}: {e}") from e
        self._fd = self._serial.fileno()
        os.set_blocking(self._fd, False)
        assert self._loop is not None
        self._loop.add_reader(self._fd, self._readable)
        self._reading = True
        self.last_rx = time.monotonic()

    def _close(self) -> None:
        if self._verifier is not None:
            self._verifier.close()
            self._verifier = None
        if self._serial is None:
            return
        assert self._loop is not None
        if self._resume_handle is not None:
            self._resume_handle.cancel()
            self._resume_handle = None
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._watching_writes = self._reading = False
        with contextlib.suppress(Exception):
            self._serial.close()
        self._serial = None

    def _write(self, frame: bytes) -> None:
        if self._serial is None:
            return
        pending = bool(self._out)
        self._out += frame
        if not pending:
            self._writable()

    def _writable(self) -> None:
        assert self._loop is not None
        try:
            n = os.write(self._fd, self._out)
            del self._out[:n]
        except BlockingIOError:
            pass
        except OSError as e:
            self._out.clear()
            self._event("port_error", None, f"write to {self.port} failed: {e}")
        # add/remove only on a change: remove_writer on an fd not watched costs a failed
        # selector lookup, and every work frame and poll came through here
        if self._out:
            if not self._watching_writes:
                self._loop.add_writer(self._fd, self._writable)
                self._watching_writes = True
        elif self._watching_writes:
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._fd)
            self._watching_writes = False

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as e:
            data = b""
            self._event("port_error", None, f"read from {self.port} failed: {e}")
        if not data:
            return
        self.last_rx = time.monotonic()
        crc_before = self.decoder.crc_errors
        responses = self.decoder.feed(data)
        self._after_decode(crc_before, responses)
        if self._verifier is not None:  # awake anyway: the results of the last nonces
            self._verifier.collect()
        assert self._loop is not None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        if self.decoder.pending:
            self._flush_handle = self._loop.call_later(self.timing.flush_s, self._flush)
        now = self._loop.time()
        if self._reading and now < self._burst_until:
            # a poll's replies are still coming: let them gather in the kernel's buffer
            self._loop.remove_reader(self._fd)
            self._reading = False
            wait_s = max(self.timing.burst_read_s, self._burst_until - now)
            self._resume_handle = self._loop.call_later(wait_s, self._resume_reading)

    def _expect_burst(self, frames: int) -> None:
        """`frames` replies are about to stream in: read them as a whole (see _readable)."""
        assert self._loop is not None
        line_s = frames * bm.RESPONSE_BYTES * 10 / self.baudrate  # 8N1: 10 bits a byte
        self._burst_until = self._loop.time() + line_s + self.timing.burst_slack_s

    def _resume_reading(self) -> None:
        self._resume_handle = None
        if self._serial is None or self._reading:
            return
        assert self._loop is not None
        self._loop.add_reader(self._fd, self._readable)
        self._reading = True
        self._readable()  # what gathered meanwhile, without waiting for another wake-up

    def _flush(self) -> None:
        self._flush_handle = None
        crc_before = self.decoder.crc_errors
        self._after_decode(crc_before, self.decoder.flush())

    def _after_decode(self, crc_before: int, responses: list[bm.Response]) -> None:
        if self.decoder.crc_errors != crc_before:
            self._event(
                "crc_error",
                None,
                f"CRC5 failed, resynchronising ({self.decoder.skipped_bytes} bytes skipped so far)",
            )
        for r in responses:
            try:
                if isinstance(r, bm.NonceResponse):
                    self._nonce(r)
                else:
                    self._register(r)
            except Exception:  # a bad frame must never stop the reader
                log.exception("chain %d: failed to handle %r", self.chain, r)

    # ------------------------------------------------------------------ events

    def _event(self, kind: str, chip: int | None, detail: str) -> None:
        ev = ChainEvent(self.chain, kind, chip, detail)
        self.events.append(ev)
        where = f"chain {self.chain}" + (f" chip {chip}" if chip is not None else "")
        level = logging.INFO if kind in ("chip_back", "chain_recovered") else logging.WARNING
        log.log(level, "%s: %s: %s", where, kind, detail)
        if self._on_event is not None:
            try:
                self._on_event(ev)
            except Exception:
                log.exception("on_event failed for %r", ev)

    # ------------------------------------------------------------------ register replies

    def _register(self, r: bm.RegisterResponse) -> None:
        if r.reg == bm.REG_HASHRATE:
            chip = self.chips.get(r.chip // self.addr_interval)
            if chip is not None and chip.address == r.chip:
                self._replies[chip.index] += 1
                chip.hashrate_hs = float(int.from_bytes(r.value, "big") << 8)
        coll = self._collect.get(r.reg)
        if coll is not None:
            replies, expect, done = coll
            replies.append(r)
            if expect and len(replies) >= expect:
                done.set()
        waiters = self._waiters.get((r.chip, r.reg))
        if waiters:
            fut = waiters.pop(0)
            if not fut.done():
                fut.set_result(r.value)

    async def _read(self, reg: int, chip: int) -> bytes | None:
        """One addressed register read; None on timeout."""
        assert self._loop is not None
        fut: asyncio.Future[bytes] = self._loop.create_future()
        self._waiters.setdefault((chip, reg), []).append(fut)
        self._write(bm.read_register(reg, chip))
        try:
            return await asyncio.wait_for(fut, self.timing.reply_timeout_s)
        except TimeoutError:
            with contextlib.suppress(ValueError):
                self._waiters[(chip, reg)].remove(fut)
            return None

    async def _broadcast_read(
        self, reg: int, expect: int, window_s: float
    ) -> list[bm.RegisterResponse]:
        """Broadcast a read; collect replies for window_s or until `expect` chips answered."""
        replies: list[bm.RegisterResponse] = []
        done = asyncio.Event()
        self._collect[reg] = (replies, expect, done)
        self._write(bm.read_register(reg))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), window_s)
        del self._collect[reg]
        return replies

    # ------------------------------------------------------------------ boot

    async def _boot_with_retries(self, raise_on_fail: bool) -> bool:
        try:
            self._booting = True
            await self._boot()
            return True
        except ChainError as e:
            if raise_on_fail:
                raise
            self._event("chain_dead", None, str(e))
            return False
        finally:
            self._booting = False

    async def _boot(self) -> None:
        t = self.timing
        self.booted.clear()
        if self._reset is not None:
            res = self._reset()
            if res is not None:
                await res
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.reset_input_buffer()
        self._crc_base += self.decoder.crc_errors
        self._skipped_base += self.decoder.skipped_bytes
        self.decoder = bm.StreamDecoder()
        # Step 6: count chips (every chip answers a broadcast CHIP_ADDR read), with re-checks.
        count = 0
        for attempt in range(t.count_retries + 1):
            replies = await self._broadcast_read(
                bm.REG_CHIP_ADDR, self.expected_chips, t.count_window_s
            )
            count = len(replies)
            if count >= self.expected_chips:
                break
            log.warning(
                "chain %d: %d of %d chips answered (check %d of %d)",
                self.chain,
                count,
                self.expected_chips,
                attempt + 1,
                t.count_retries + 1,
            )
        if count == 0:
            raise ChainError(f"chain {self.chain}: no chip answered on {self.port}")
        # Step 7: addressing.
        self.addr_interval = self.fixed_interval or max(1, 256 // max(count, self.expected_chips))
        self._write(bm.chain_inactive())
        await asyncio.sleep(t.inactive_wait_s)  # pacing the chips need, not synchronisation
        for i in range(256 // self.addr_interval):
            self._write(bm.set_address(i * self.addr_interval))
            await asyncio.sleep(t.command_gap_s)
        replies = await self._broadcast_read(bm.REG_CHIP_ADDR, count, t.count_window_s)
        old = self.chips
        self.chips = {}
        for r in replies:
            if r.chip % self.addr_interval:
                log.warning("chain %d: chip address %#04x is off the grid", self.chain, r.chip)
                continue
            idx = r.chip // self.addr_interval
            prev = old.get(idx)
            self.chips[idx] = prev if prev is not None else ChipStats(idx, r.chip)
            self.chips[idx].lost = False
            self.chips[idx].missed_polls = 0
        if not self.chips:
            raise ChainError(f"chain {self.chain}: no chip took an address")
        missing = [i for i in range(self.expected_chips) if i not in self.chips]
        if missing:
            self._event(
                "chips_missing",
                missing[0],
                f"{len(self.chips)} of {self.expected_chips} chips; missing chip(s) {missing}",
            )
        # Step 8: PLL.
        self._write(bm.write_register(bm.REG_PLL_PARAMETER, self.pll.value))
        await asyncio.sleep(t.command_gap_s)
        # Step 9: MISC_CONTROL, all chips then the sensor chips; read back.
        self._write(bm.write_register(bm.REG_MISC_CONTROL, bm.MISC_CONTROL_ALL))
        sensors = [
            a
            for a in self.sensor_chips
            if a // self.addr_interval in self.chips and a % self.addr_interval == 0
        ]
        for addr in sensors:
            self._write(bm.write_register(bm.REG_MISC_CONTROL, bm.MISC_CONTROL_SENSOR, addr))
        first = min(self.chips.values(), key=lambda c: c.index).address
        got = await self._read(bm.REG_MISC_CONTROL, first)
        if got != bm.MISC_CONTROL_ALL and first not in sensors:
            log.warning("chain %d: MISC_CONTROL reads %s", self.chain, got.hex() if got else None)
        pll = await self._read(bm.REG_PLL_PARAMETER, first)
        if pll != self.pll.value:
            log.warning(
                "chain %d: PLL reads %s, wrote %s",
                self.chain,
                pll.hex() if pll else None,
                self.pll.value.hex(),
            )
        # Step 10: temperature sensors.
        self.temps = {}
        for addr in sensors:
            await self._calibrate(addr)
        # Step 11: core clocks, then ticket mask.
        for core in bm.CORES:
            value = bm.core_cmd_value(core, bm.CORE_CMD_CLOCK_ENABLE)
            self._write(bm.write_register(bm.REG_CORE_CMD_IN, value))
            await asyncio.sleep(t.command_gap_s)
        # Per-chip clocks, the throttle scale and clock gating survive a re-boot.
        await self._restore_tuning()
        mask = bm.ticket_mask_value(self.ticket_mask)
        self._write(bm.write_register(bm.REG_TICKET_MASK, mask))
        # Reading it back also tells that the chips have taken every boot command.
        got = await self._read(bm.REG_TICKET_MASK, first)
        if got != mask:
            log.warning("chain %d: TICKET_MASK reads %s", self.chain, got.hex() if got else None)
        self.boots += 1
        self.last_rx = time.monotonic()
        log.info(
            "chain %d: %d chips, interval %d, %.2f MHz",
            self.chain,
            len(self.chips),
            self.addr_interval,
            self.frequency_mhz,
        )
        self.booted.set()
        if self._current is not None:  # the chips lost their work with the reset
            self.set_work(self._current)

    # ------------------------------------------------------------------ sensors

    async def _iic(self, addr: int, value: bytes) -> bytes | None:
        """One I2C transaction through chip `addr`'s master; the reply value, or None."""
        self._write(bm.write_register(bm.REG_GENERAL_IIC, value, addr))
        for _ in range(5):
            got = await self._read(bm.REG_GENERAL_IIC, addr)
            if got is None:
                return None
            if not got[0] & bm.IIC_BUSY:
                return got
        return None

    async def _sensor_read(self, addr: int, reg: int) -> int | None:
        got = await self._iic(addr, bm.iic_read_value(bm.TMP451_ADDR, reg))
        # Rejected: busy/fail, or the echo of a write (§3.4)
        if got is None or got[0] & (bm.IIC_BUSY | bm.IIC_RW_FAIL) or got[1] & 1 or got[2] != reg:
            return None
        return got[3]

    async def _calibrate(self, addr: int) -> None:
        """§3.4: select the core-2 diode, offset -40, then move the offset by (local - remote)
        until they agree within 2 C (remote 0: +30), at most 10 rounds; then enable auto-read."""
        idx = addr // self.addr_interval
        diode = bm.core_cmd_value(2, bm.CORE_CMD_TEMP_DIODE_SELECT)
        self._write(bm.write_register(bm.REG_CORE_CMD_IN, diode, addr))
        offset = D.BM1485_SENSOR_OFFSET_C
        for _ in range(D.BM1485_CALIBRATION_ROUNDS):
            await self._iic(
                addr, bm.iic_write_value(bm.TMP451_ADDR, bm.TMP451_OFFSET_HIGH, offset & 0xFF)
            )
            local = await self._sensor_read(addr, bm.TMP451_LOCAL)
            remote = await self._sensor_read(addr, bm.TMP451_REMOTE_HIGH)
            if local is None or remote is None:
                self._event("sensor_error", idx, f"sensor behind chip {addr:#04x} not answering")
                self.temps[idx] = None
                return
            if remote == 0:
                offset += 30
            elif abs(local - remote) <= 2:
                break
            else:
                offset += local - remote
            offset = max(-128, min(127, offset))
        self._write(bm.write_register(bm.REG_GENERAL_IIC, bm.iic_auto_read_value(), addr))
        self.temps[idx] = None

    async def read_temperatures(self) -> dict[int, TempReading | None]:
        """Read EXT_TEMP_SENSOR of every sensor chip; 0 or no reply is None (unknown)."""
        for idx in list(self.temps):
            chip = self.chips.get(idx)
            got = await self._read(bm.REG_EXT_TEMP_SENSOR, chip.address) if chip else None
            if got is None or got[1] == 0 or got[3] == 0 or 255 in (got[1], got[3]):
                if self.temps.get(idx) is not None or got is not None:
                    self._event(
                        "sensor_error",
                        idx,
                        f"temperature reading {got.hex() if got else 'missing'}",
                    )
                self.temps[idx] = None
            else:
                self.temps[idx] = TempReading(float(got[1]), float(got[3]), time.monotonic())
        return dict(self.temps)

    # ------------------------------------------------------------------ loops

    async def _poll_loop(self) -> None:
        t = self.timing
        # Chains poll in turn, not together: each poll brings every chip's reply (72 frames)
        # back at once, and four chains' worth in one go kept the event loop from a notify.
        await asyncio.sleep(t.hashrate_poll_s * (self.chain % D.POLL_STAGGER_CHAINS)
                            / D.POLL_STAGGER_CHAINS)  # fmt: skip
        while True:
            await asyncio.sleep(t.hashrate_poll_s)  # the poll period itself
            if time.monotonic() - self.last_rx > t.silence_s:
                await self._recover_silent()
                continue
            echoes = max(self._replies.values(), default=0) if self._poll_gen else 0
            if echoes >= D.BM1485_RESET_ECHOES:
                # Chips that were reset under us (a glitch on the reset line, a brown-out) all
                # answer at address 0: the line is busy, never silent, yet nothing is mining.
                # Late replies to the previous poll make 2 per address at most; a reset, dozens.
                await self._recover(
                    "chips_reset", f"{echoes} chips answered at one address: they lost their "
                    "addresses; resetting and booting again",
                )  # fmt: skip
                continue
            self._check_poll()
            self._replies.clear()
            self._poll_gen += 1
            self._expect_burst(len(self.chips))
            self._write(bm.read_register(bm.REG_HASHRATE))

    def _check_poll(self) -> None:
        if self._poll_gen == 0:
            return
        for chip in self.chips.values():
            if chip.index in self._replies:
                if chip.lost:
                    chip.lost = False
                    self._event("chip_back", chip.index, f"chip {chip.address:#04x} answers again")
                chip.missed_polls = 0
                continue
            chip.missed_polls += 1
            if chip.missed_polls >= self.timing.missed_polls_lost and not chip.lost:
                chip.lost = True
                chip.hashrate_hs = 0.0
                self._event(
                    "chip_lost",
                    chip.index,
                    f"chip {chip.address:#04x} missed {chip.missed_polls} HASHRATE polls",
                )

    async def _recover_silent(self) -> None:
        await self._recover(
            "chain_silent", f"no byte for {self.timing.silence_s:g} s; resetting and booting again"
        )

    async def _recover(self, kind: str, detail: str) -> None:
        self._event(kind, None, detail)
        while True:
            if await self._boot_with_retries(raise_on_fail=False):
                self._poll_gen = 0
                self._replies.clear()
                self._event("chain_recovered", None, f"{self.chip_count} chips after re-init")
                return
            await asyncio.sleep(self.timing.reboot_backoff_s)

    async def _temp_loop(self) -> None:
        while True:
            if not self._booting:
                try:
                    await self.read_temperatures()
                except Exception:
                    log.exception("chain %d: temperature read failed", self.chain)
            await asyncio.sleep(self.timing.temp_poll_s)

    def _arm_work_timer(self, work: Work) -> None:
        # New work comes at every notify: rather than cancel and create a timer each time, one
        # timer stays armed and, when it fires before the deadline, waits for what is left.
        if self._loop is None or self._on_exhausted is None:
            return
        timeout = self.timing.work_timeout_s or work_timeout_s(
            self.frequency_mhz, self.addr_interval
        )
        self._work_deadline = self._loop.time() + timeout
        if self._work_timer is not None and self._work_timer.when() > self._work_deadline:
            self._work_timer.cancel()  # the chips got faster: the work runs out sooner
            self._work_timer = None
        if self._work_timer is None:
            self._work_timer = self._loop.call_at(self._work_deadline, self._work_due)

    def _work_due(self) -> None:
        assert self._loop is not None
        self._work_timer = None
        if self._loop.time() < self._work_deadline:  # newer work was sent since
            self._work_timer = self._loop.call_at(self._work_deadline, self._work_due)
            return
        work = self._current
        if self._on_exhausted is not None and work is not None:
            try:
                self._on_exhausted(work)
            except Exception:
                log.exception("on_exhausted failed")

    # ------------------------------------------------------------------ nonces

    def _hw(self, chip: ChipStats | None, kind: str, detail: str) -> None:
        self.hw_errors += 1
        if chip is not None:
            chip.hw_errors += 1
        self._event(kind, chip.index if chip else None, detail)

    def _nonce(self, r: bm.NonceResponse) -> None:
        idx = r.chip_index(self.addr_interval)
        chip = self.chips.get(idx)
        if chip is None:
            self.unknown_chip += 1
            self._hw(
                None,
                "hw_error",
                f"nonce {r.nonce:#010x} from unknown chip field {r.chip_field:#04x}",
            )
            return
        chip.last_seen = time.monotonic()
        if chip.disabled:  # in flight when it was gated: not its HW accounting
            chip.gated_nonces += 1
            self.gated_nonces += 1
            return
        work = self._slots.get(r.work_id)
        if work is None:
            self.unknown_work += 1
            self._hw(
                chip, "unknown_work", f"nonce {r.nonce:#010x} for work id {r.work_id} never sent"
            )
            return
        if r.work_id not in self._live:
            self._stale(chip, r.work_id, r.nonce)
            return
        key = r.work_id << 32 | r.nonce
        if key in self._seen_set:
            self._hw(chip, "hw_error", f"duplicate nonce {r.nonce:#010x} work id {r.work_id}")
            return
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(key)
        self._seen_set.add(key)
        if self._verifier is None:
            return
        try:
            header80 = work.header76 + r.nonce.to_bytes(4, "little")
            self._verifier.submit(header80, (chip, r.work_id, r.nonce, header80, work), work.target)
        except OverflowError as e:  # the hashing threads are far behind: say so, once a nonce
            self.unverified += 1
            self._event("verify_overflow", chip.index, f"nonce {r.nonce:#010x} dropped: {e}")

    def _stale(self, chip: ChipStats, slot: int, nonce: int) -> None:
        chip.stale += 1
        self.stale += 1
        self._event("stale", chip.index, f"nonce {nonce:#010x} of retired work id {slot}")

    def _verified(self, item: tuple[ChipStats, int, int, bytes, Work], h: bytes) -> None:
        """A nonce's scrypt hash, back from the verifier's thread, on the loop."""
        chip, slot, nonce, header80, work = item
        if not scrypt.hash_meets(h, self.ticket_target):
            if chip.disabled:  # gated while it was being verified
                chip.gated_nonces += 1
                self.gated_nonces += 1
                return
            why = f"nonce {nonce:#010x} work id {slot} does not meet the ticket target"
            self._hw(chip, "hw_error", why)
            return
        if (slot not in self._live or self._slots.get(slot) is not work) and scrypt.hash_meets(
            h, work.target
        ):  # a share retired while it was being verified (a nonce that is no share was live
            self._stale(chip, slot, nonce)  # when it came, and is counted, lazily, as that)
            return
        core = nonce >> 28
        chip.nonces += 1
        chip.cores[core] = chip.cores.get(core, 0) + 1
        self.nonces += 1
        if self._on_nonce is not None:
            try:
                self._on_nonce(Nonce(self.chain, chip.index, work.work_id, nonce, h, header80))
            except Exception:
                log.exception("on_nonce failed")


class ChainTuning:
    """agent.control.tuner.TunerTarget for one chain: clocks and gating through the Chain, the
    core voltage through `set_voltage` (the board's PIC: Pic.set_voltage). Remembers the voltage
    it last set (the PIC's 8-bit code is an implementation detail the tuner need not see)."""

    def __init__(
        self,
        chain: Chain,
        set_voltage: Callable[[float], Awaitable[Any] | Any] | None = None,
        voltage_v: float = D.PIC_VOLTAGE_AT_DEFAULT_V,
    ) -> None:
        self.chain = chain
        self._set_voltage = set_voltage
        self.voltage_v = voltage_v

    async def set_chip_frequency(self, chip: int, mhz: float) -> None:
        await self.chain.set_chip_frequency(chip, mhz)

    async def set_voltage(self, volts: float) -> None:
        if self._set_voltage is None:
            raise RuntimeError(f"chain {self.chain.chain}: no way to set the voltage")
        r = self._set_voltage(volts)
        if inspect.isawaitable(r):
            await r
        self.voltage_v = float(volts)

    async def disable_chip(self, chip: int) -> None:
        await self.chain.disable_chip(chip)

    async def disable_core(self, chip: int, core: int) -> None:
        await self.chain.disable_core(chip, core)

    def sample(self, *, temp_c: float | None = None, power_w: float | None = None) -> ChainSample:
        return self.chain.tuner_sample(self.voltage_v, temp_c=temp_c, power_w=power_w)
