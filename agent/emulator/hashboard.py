"""Emulated BM1485 chains behind real pseudo-terminals, written from the reference, not our driver.

shared/reference/chips-bm1485.md §1 is the only source: this module re-derives the frame handling
(its own CRC5 and CRC16, its own parsers and response builders) so that the driver in
agent.hardware is tested against an independent implementation.

Each EmulatedChain owns a pty (os.openpty, raw mode) and one thread that reads host frames from the
master side, answers like a daisy chain of N chips, and hashes. The hash rate is a model: a chip at
f MHz "does" f x 12 x 0.95 / 2500 MH/s and a real chip reports the nonces meeting its ticket mask
(difficulty 256 for 0xFF), about 0.1 per second. The emulator reports the same number of nonces but
finds them with real scrypt (agent.scrypt.scan) at an easy ticket difficulty (default 1/1024), so it
computes only rate x ticket_difficulty / 256 hashes per second: about 6.7 H/s per chip, 2,000 H/s
for a 4 x 72 board. Every nonce meets the easy ticket, scaled by the mask the host wrote.

Faults (thread-safe methods): vanish(chip)/restore(chip), corrupt(n) (next n frames with a flipped
bit), lose_bytes(n) (next n frames lose a byte), noise(n) (n random bytes on the line),
bad_nonces(n) (next n nonces do not meet the ticket), unknown_work_nonces(n) (next n nonces carry a
work id never sent), stale_nonces(n) (next n nonces carry the previous work id), go_silent()
(a hung chain: nothing answers until a reset or wake()).

Reset line (attach_reset_line(path): the chain's sysfs GPIO value file, which the driver writes):
while it reads 0 the chips are held in reset (they take no byte, answer nothing, hash nothing) and
a pulse (0 then 1) returns them to power-on state: no address, default registers, PLL off, cores
gated, no work. The thread samples the line before it handles any byte it received and on every
tick, so a pulse written before the driver's next UART bytes is applied before those bytes (no race
with the driver's boot). What a reset cures, as on real silicon (reference §1.7 step 4 resets the
chips at every boot; the driver's silent-chain recovery is a re-boot): a silent (hung) chain, yes;
a vanished chip (dead or cut off) and a chain without power (set_powered), no.
Thermal hook: temps(chain, chip_position) -> (local_c, remote_c) or one float for both.

Per chip: its own PLL (addressed PLL writes are honoured), CORE_CMD_IN clock gating per core or for
all cores (a gated core hashes nothing, so emits nothing; data 0 enables, 1 gates, as
agent.hardware.bm1485 documents), and, with a StabilityModel, its own stable clock drawn from a
seeded normal distribution: at or below it a chip's nonces are bad with `base_error` probability,
above it the bad share rises steeply (1 - exp(-excess / width_mhz)); the stable clock follows the
core voltage (set_voltage, the PIC's). power_w() is the chain's power from each chip's clock, live
cores and the voltage (the same calibration as agent.emulator.thermal)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import select
import threading
import time
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent import scrypt
from agent.emulator.thermal import DYNAMIC_W_PER_MHZ, STATIC_W, V_NOMINAL
from agent.mining.targets import difficulty_to_target

log = logging.getLogger(__name__)

Temps = Callable[[int, int], "tuple[float, float] | float"]

DEFAULT_CHIPS = 72
DEFAULT_TICKET_DIFFICULTY = 1 / 1024
DEFAULT_SENSOR_POSITIONS = (4, 67)  # chips 0x0C and 0xC9 once addressed 3 apart (§3.4)
DEFAULT_TEMP_C = 45.0
DIODE_BIAS_C = 40.0  # raw diode reading above die temperature; the stock offset 0xD8 cancels it
TICK_S = 0.01
# The chips answer at 115200 baud, 8N1 (reference §1.2): 11,520 bytes a second leave the chain,
# so 72 replies to a HASHRATE poll take 44 ms on the line, not one write. The emulator paces its
# output to that rate (x rate_scale: accelerated chips have an accelerated line). LINE_BURST_BYTES
# is what may go out at once after a quiet line (a UART FIFO's worth).
LINE_BAUD = 115200
LINE_BURST_BYTES = 32
CHUNK = 16  # nonces hashed per scan call: small, so work spreads evenly over chips and cores
LINE_SETTLE_S = 0.05  # a reset-line write takes microseconds; longer unreadable is a broken file
MAX_HASH_RATE_HS = 5000.0  # per chain: a 4-chain board stays under one core even when sped up
CORE_NUMBERS = (0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13)
RATE_PER_MHZ_CORE = 0.95 / 2500 * 1e6  # H/s per MHz per core (§1.1: f x 12 x 0.95 / 2500 MH/s)


@dataclass(frozen=True)
class StabilityModel:
    """Each chip's stable clock ~ Normal(mean_mhz, sd_mhz) at V_NOMINAL, clipped to min..max_mhz,
    scaled by (1 + volt_gain x (V - V_NOMINAL)). Bad-nonce share: base_error at or below it,
    base_error + (1 - base_error) x (1 - exp(-(f - limit) / width_mhz)) above it."""

    mean_mhz: float = 420.0
    sd_mhz: float = 30.0
    min_mhz: float = 250.0
    max_mhz: float = 650.0
    base_error: float = 0.0005
    width_mhz: float = 4.0
    volt_gain: float = 0.1  # share of the stable clock per volt

    def draw(self, rng: random.Random) -> float:
        return max(self.min_mhz, min(self.max_mhz, rng.gauss(self.mean_mhz, self.sd_mhz)))

    def limit_mhz(self, stable_mhz: float, voltage_v: float) -> float:
        return stable_mhz * max(0.1, 1.0 + self.volt_gain * (voltage_v - V_NOMINAL))

    def error_rate(self, freq_mhz: float, stable_mhz: float, voltage_v: float) -> float:
        excess = freq_mhz - self.limit_mhz(stable_mhz, voltage_v)
        if excess <= 0:
            return self.base_error
        return self.base_error + (1 - self.base_error) * -math.expm1(-excess / self.width_mhz)


# ---------------------------------------------------------------------------- own CRCs


def _crc5(data: bytes, nbits: int) -> int:
    # Shift register form of x^5 + x^2 + 1 with init 11111, MSB first (§1.3).
    reg = [1, 1, 1, 1, 1]
    for i in range(nbits):
        din = ((data[i // 8] << (i % 8)) & 0x80) >> 7
        fb = reg[4] ^ din
        reg = [fb, reg[0], reg[1] ^ fb, reg[2], reg[3]]
    return reg[4] << 4 | reg[3] << 3 | reg[2] << 2 | reg[1] << 1 | reg[0]


def _crc16_ccitt_false(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = (crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


# ---------------------------------------------------------------------------- chips


@dataclass
class _Sensor:
    """A TMP451-class sensor at 0x4C behind a chip's I2C master."""

    regs: dict[int, int] = field(default_factory=dict)


@dataclass
class _Chip:
    position: int
    address: int = 0
    addressed: bool = False
    vanished: bool = False
    pll: bytes = b"\0\0\0\0"
    ticket_mask: int = 0
    misc: bytes = b"\0\0\0\0"
    iic: bytes = b"\0\0\0\0"
    auto_read: bool = False
    cores_enabled: set[int] = field(default_factory=set)
    regs: dict[int, bytes] = field(default_factory=dict)
    sensor: _Sensor | None = None
    counters: dict[int, int] = field(default_factory=dict)  # core -> next 20-bit counter
    stable_mhz: float = math.inf  # its own stable clock at V_NOMINAL (no limit by default)
    budget: float = 0.0  # hashes owed (the hashing model)
    rr: int = 0  # round robin over its enabled cores

    @property
    def frequency_mhz(self) -> float:
        fb, ref, post = self.pll[1], self.pll[2], self.pll[3]
        p1, p2 = post >> 4, post & 0xF
        if not (fb and ref and p1 and p2):
            return 0.0
        return 25.0 * fb / (ref * p1 * p2)

    @property
    def effective_mhz(self) -> float:
        """Clock x share of cores whose clock is on (what power and hash rate follow)."""
        return self.frequency_mhz * len(self.cores_enabled) / len(CORE_NUMBERS)

    @property
    def hashrate_hs(self) -> float:
        return self.frequency_mhz * len(self.cores_enabled) * RATE_PER_MHZ_CORE


@dataclass
class EmulatorStats:
    frames_in: int = 0
    bad_crc_in: int = 0  # host frames ignored for a bad CRC
    junk_in: int = 0  # bytes that started no frame
    works_in: int = 0
    frames_out: int = 0
    nonces_out: int = 0
    hashes: int = 0
    bad_out: int = 0  # nonces made bad by the stability model
    chip_nonces: dict[int, int] = field(default_factory=dict)  # position -> nonces out
    chip_bad: dict[int, int] = field(default_factory=dict)  # position -> bad ones among them
    line_holds: int = 0  # reset line seen low (chips held in reset)
    line_pulses: int = 0  # resets by the line: released after a hold, or a whole pulse unseen
    held_bytes: int = 0  # bytes the host sent while the chips were held in reset (dropped)


class EmulatedChain:
    def __init__(
        self,
        chips: int = DEFAULT_CHIPS,
        chain: int = 0,
        *,
        ticket_difficulty: float = DEFAULT_TICKET_DIFFICULTY,
        temps: Temps | None = None,
        sensor_positions: tuple[int, ...] = DEFAULT_SENSOR_POSITIONS,
        rate_scale: float = 1.0,
        max_hash_rate_hs: float = MAX_HASH_RATE_HS,
        seed: int | None = None,
        stability: StabilityModel | None = None,
        stable_mhz: Sequence[float] | None = None,
        voltage_v: float = V_NOMINAL,
        line_baud: int | None = LINE_BAUD,
    ) -> None:
        """stability: per-chip stable clocks drawn from it (seeded by `seed` and the chain
        number), or given one per chip in stable_mhz; neither: every chip is stable.
        line_baud: the output is paced to it (x rate_scale); None: written as fast as read."""
        if not 1 <= chips <= 256:
            raise ValueError(f"chips must be in 1..256, got {chips}")
        self.chain = chain
        self.ticket_difficulty = ticket_difficulty
        self.temps = temps
        self.rate_scale = rate_scale
        self.max_hash_rate_hs = max_hash_rate_hs
        self._line_bps = None if line_baud is None else line_baud / 10 * max(1.0, rate_scale)
        self.stats = EmulatorStats()
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._chips = [_Chip(i) for i in range(chips)]
        for p in sensor_positions:
            if p < chips:
                self._chips[p].sensor = _Sensor()
        self.stability = stability
        if stable_mhz is not None:
            if len(stable_mhz) != chips:
                raise ValueError(f"stable_mhz needs {chips} values, got {len(stable_mhz)}")
            if self.stability is None:
                self.stability = StabilityModel()
            for c, f in zip(self._chips, stable_mhz, strict=True):
                c.stable_mhz = float(f)
        elif stability is not None:
            draw = random.Random(None if seed is None else f"stable/{seed}/{chain}")
            for c in self._chips:
                c.stable_mhz = stability.draw(draw)
        self.voltage_v = voltage_v
        # Chip time: wall time x rate_scale, less the work this thread could not keep up with
        # (a starved emulator loses hashes; its chips then "ran" for less time). Accelerated
        # tests judge rates against this clock, not the wall clock.
        self.model_time_s = 0.0
        self._err_rng = random.Random(None if seed is None else f"errors/{seed}/{chain}")
        self._work: dict[int, bytes] = {}  # work id -> header80 (nonce zero); latest per id
        self._current: tuple[int, bytes] | None = None
        self._silent = False  # the go_silent fault: a hung chain, cured by a reset
        self._unpowered = False  # no power (DC-DC off, board unplugged): a reset does not help
        # The reset line: its file, what the thread last read from it ((inode, mtime_ns), text),
        # whether it holds the chips in reset, and a listener (tests) told of each reset it causes.
        self.reset_line: str | None = None
        self._line_seen: tuple[tuple[int, int], bytes] | None = None
        self._held = False
        self._line_unsettled: float | None = None  # since when the line cannot be read
        self._line_broken = False
        self.on_line: Callable[[str], None] | None = None
        self._corrupt = self._lose = self._bad = self._unknown = self._stale = self._repeat = 0
        self._previous: int | None = None  # work id before the current one
        self._inbuf = bytearray()
        self._outbuf = bytearray()
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline: bytes pass as they are
        tty.setraw(self.master)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> EmulatedChain:
        self._thread = threading.Thread(
            target=self._main, name=f"emu-chain-{self.chain}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(5)
        for fd in (self.master, self._slave, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> EmulatedChain:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self, *, drop_output: bool = True) -> None:
        """What a reset pulse does: every chip back to power-on state, host bytes not yet taken
        dropped; clears a silent chain. Vanished chips stay vanished and power stays as it is.
        drop_output: also drop frames the chips sent that the host has not read yet (a direct
        call from the driver's reset hook, which flushes its input next). The reset line keeps
        them: they left the chips before the reset, and the emulator counted them as sent."""
        with self._lock:
            for c in self._chips:
                sensor, vanished, stable = c.sensor, c.vanished, c.stable_mhz
                c.__init__(c.position)  # type: ignore[misc]
                c.sensor, c.vanished, c.stable_mhz = sensor, vanished, stable
            self._work.clear()
            self._current = self._previous = None
            self._silent = False
            self._inbuf.clear()
            if drop_output:
                self._outbuf.clear()

    # ------------------------------------------------------------------ faults

    def vanish(self, position: int) -> None:
        with self._lock:
            self._chips[position].vanished = True

    def restore(self, position: int) -> None:
        with self._lock:
            self._chips[position].vanished = False

    def corrupt(self, frames: int = 1) -> None:
        with self._lock:
            self._corrupt += frames

    def lose_bytes(self, frames: int = 1) -> None:
        with self._lock:
            self._lose += frames

    def noise(self, nbytes: int) -> None:
        with self._lock:
            self._outbuf += bytes(self._rng.randrange(256) for _ in range(nbytes))

    def bad_nonces(self, count: int = 1) -> None:
        with self._lock:
            self._bad += count

    def unknown_work_nonces(self, count: int = 1) -> None:
        with self._lock:
            self._unknown += count

    def stale_nonces(self, count: int = 1) -> None:
        """The next `count` nonces carry the previous work's id (a chip finishing old work)."""
        with self._lock:
            self._stale += count

    def repeat_nonces(self, count: int = 1) -> None:
        """The next `count` nonces are each sent twice, frame for frame."""
        with self._lock:
            self._repeat += count

    def go_silent(self) -> None:
        """The chain hangs: nothing answers and nothing is hashed until a reset (the driver's
        recovery pulses the reset line) or wake()."""
        with self._lock:
            self._silent = True

    def wake(self) -> None:
        """Ends go_silent from the emulator's side, without a reset (the chips keep their state)."""
        with self._lock:
            self._silent = False

    def set_powered(self, on: bool) -> None:
        """The chips' supply (the board's DC-DC and presence): without it nothing answers, and a
        reset changes nothing; the chips keep their state across it (a simplification)."""
        with self._lock:
            self._unpowered = not on

    # ------------------------------------------------------------------ reset line

    def attach_reset_line(self, path: str | os.PathLike[str]) -> None:
        """Follow the chain's reset GPIO through its sysfs value file. Its level now is the
        starting point (a low line holds the chips in reset; a high one changes nothing)."""
        with self._lock:
            self.reset_line = os.fspath(path)
            self._line_seen = None
            self._held = False
            self._check_line()

    @property
    def in_reset(self) -> bool:
        """The reset line holds the chips in reset (as the thread last read it)."""
        return self._held

    def _read_line(self) -> tuple[tuple[int, int], bytes] | None:
        """((inode, mtime_ns), "0" or "1") of the line file, or None while a write is under way
        (the file changes between two stats, or is empty after the writer's truncation)."""
        assert self.reset_line is not None
        for _ in range(3):
            try:
                a = os.stat(self.reset_line)
                with open(self.reset_line, "rb") as f:
                    text = f.read(8).strip()
                b = os.stat(self.reset_line)
            except OSError:
                return None
            key = (b.st_ino, b.st_mtime_ns)
            if (a.st_ino, a.st_mtime_ns, a.st_size) == (*key, b.st_size) and text in (b"0", b"1"):
                return key, text
        return None

    def _check_line(self) -> bool:
        """Apply the reset line (with the lock held); False when it cannot be read yet. Nothing
        received may be handled, or sent, until this returns True.

        A file written since the last read that reads 1 again had a whole pulse in between
        (0 then 1 faster than two reads). Timestamps can be coarse (a kernel tick), so the text
        is compared too, and the emulated profile's reset_pulse_s is at least one tick: each
        write of a pulse then shows as a change. A rewrite of 1 without a 0 looks the same and
        counts as a pulse: Board.open does that once, before its boot's own pulse (harmless).
        A file unreadable for longer than any write takes (LINE_SETTLE_S) is broken, not being
        written: the chips then keep the last level read."""
        if self.reset_line is None:
            return True
        seen = self._read_line()
        if seen is None:
            now = time.monotonic()
            if self._line_unsettled is None:
                self._line_unsettled = now
            if now - self._line_unsettled < LINE_SETTLE_S:
                return False
            if not self._line_broken:
                self._line_broken = True
                log.warning("chain %d: reset line %s unreadable", self.chain, self.reset_line)
            return True
        self._line_unsettled, self._line_broken = None, False
        changed = self._line_seen is not None and seen != self._line_seen
        self._line_seen = seen
        if seen[1] == b"0":
            # Low: in reset. Low again after a write (released and held again between two reads)
            # is the same thing: the chips never ran in between.
            if not self._held:
                self._held = True
                self.stats.line_holds += 1
                self.reset(drop_output=False)
                self._notify_line("held")
            return True
        if self._held:
            self._held = False
            self.stats.line_pulses += 1
            self._notify_line("released")
        elif changed:
            self.stats.line_pulses += 1
            self.reset(drop_output=False)
            self._notify_line("pulse")
        return True

    def _notify_line(self, what: str) -> None:
        if self.on_line is not None:
            try:
                self.on_line(what)
            except Exception:  # a listener's bug must not stop the chips
                log.exception("chain %d: reset-line listener failed", self.chain)

    # ------------------------------------------------------------------ introspection

    def live_chips(self) -> int:
        """Chips that have not vanished: what draws power and makes heat."""
        with self._lock:
            return sum(not c.vanished for c in self._chips)

    def chip_address(self, position: int) -> int | None:
        c = self._chips[position]
        return c.address if c.addressed else None

    def frequency_mhz(self, position: int = 0) -> float:
        return self._chips[position].frequency_mhz

    def set_voltage(self, volts: float) -> None:
        """The core voltage (the PIC's DC-DC output): moves every chip's stable clock."""
        with self._lock:
            self.voltage_v = float(volts)

    def stable_mhz(self, position: int) -> float:
        """The chip's stable clock at the current voltage (inf without a stability model)."""
        c = self._chips[position]
        if self.stability is None:
            return math.inf
        return self.stability.limit_mhz(c.stable_mhz, self.voltage_v)

    def error_rate(self, position: int) -> float:
        """The share of this chip's nonces that are bad at its clock and the voltage now."""
        c = self._chips[position]
        if self.stability is None:
            return 0.0
        return self.stability.error_rate(c.frequency_mhz, c.stable_mhz, self.voltage_v)

    def cores_enabled(self, position: int) -> frozenset[int]:
        return frozenset(self._chips[position].cores_enabled)

    def effective_mhz(self) -> float:
        """Mean over live chips of clock x share of cores on: chips x this drives the power
        model exactly (power is linear in the clock); 0 without live chips."""
        with self._lock:
            live = [c for c in self._chips if not c.vanished]
            return sum(c.effective_mhz for c in live) / len(live) if live else 0.0

    def power_w(self, voltage_v: float | None = None) -> float:
        """The chips' power: per live chip (dynamic x clock x cores on + static) x (V/Vnom)^2."""
        v = self.voltage_v if voltage_v is None else voltage_v
        with self._lock:
            live = [c for c in self._chips if not c.vanished]
            return sum(
                (DYNAMIC_W_PER_MHZ * c.effective_mhz + STATIC_W) * (v / V_NOMINAL) ** 2
                for c in live
            )

    def ticket_mask(self, position: int = 0) -> int:
        return self._chips[position].ticket_mask

    def position_of(self, address: int) -> int | None:
        for c in self._chips:
            if c.addressed and c.address == address:
                return c.position
        return None

    # ------------------------------------------------------------------ the thread

    def _main(self) -> None:
        last = time.monotonic()
        rx = bytearray()  # received, not yet handed to the chips (the line is being written)
        credit = float(LINE_BURST_BYTES)  # bytes the line may carry now (paced output)
        line_t = last
        while not self._stop.is_set():
            timeout = TICK_S
            want_w: list[int] = []
            if self._outbuf:
                if self._line_bps is None or credit >= min(len(self._outbuf), 7):
                    want_w = [self.master]
                else:  # wake when the line has room for the next frame
                    timeout = min(TICK_S, (min(len(self._outbuf), 7) - credit) / self._line_bps)
            try:
                r, _w, _ = select.select([self.master, self._wake_r], want_w, [], timeout)
            except (OSError, ValueError):
                return
            if self._line_bps is not None:
                t = time.monotonic()
                credit = min(float(LINE_BURST_BYTES), credit + (t - line_t) * self._line_bps)
                line_t = t
            if self.master in r:
                try:
                    rx += os.read(self.master, 4096)
                except BlockingIOError:
                    pass
                except OSError:
                    pass  # no slave open right now (EIO): nothing to read
            with self._lock:
                # The reset line first: a pulse the driver wrote before these bytes resets the
                # chips before they see them.
                settled = self._check_line()
                if settled and rx:
                    if self._held or self._unpowered:
                        self.stats.held_bytes += len(rx) if self._held else 0
                    else:
                        self._inbuf += rx
                        self._parse()
                    rx.clear()
                if settled and self._outbuf:
                    room = len(self._outbuf) if self._line_bps is None else int(credit)
                    try:
                        n = os.write(self.master, self._outbuf[:room]) if room else 0
                        del self._outbuf[:n]
                        credit -= n
                    except (BlockingIOError, OSError):
                        pass
            if not settled:
                time.sleep(0.001)  # a GPIO write under way: decide once it is complete
                continue
            now = time.monotonic()
            self._hash(now - last)
            last = now

    # ------------------------------------------------------------------ host frames

    def _parse(self) -> None:
        buf = self._inbuf
        while buf:
            kind = buf[0] & 0xE0
            if kind == 0x40:
                if len(buf) < 2:
                    return
                n = buf[1]
                if n not in (4, 8):
                    del buf[:1]
                    self.stats.junk_in += 1
                    continue
                if len(buf) < n + 1:
                    return
                frame = bytes(buf[: n + 1])
                if frame[n] != _crc5(frame, n * 8):
                    self.stats.bad_crc_in += 1
                    del buf[:1]
                    continue
                del buf[: n + 1]
                self.stats.frames_in += 1
                self._command(frame)
            elif buf[0] in (0x20, 0x21):
                if len(buf) < 2:
                    return
                n = buf[1]
                if n != (84 if buf[0] & 1 else 80):
                    del buf[:1]
                    self.stats.junk_in += 1
                    continue
                if len(buf) < n + 2:
                    return
                frame = bytes(buf[: n + 2])
                if int.from_bytes(frame[n:], "big") != _crc16_ccitt_false(frame[:n]):
                    self.stats.bad_crc_in += 1
                    del buf[:1]
                    continue
                del buf[: n + 2]
                self.stats.frames_in += 1
                self._work_frame(frame)
            else:
                del buf[:1]
                self.stats.junk_in += 1

    def _targets(self, frame: bytes) -> list[_Chip]:
        live = [c for c in self._chips if not c.vanished]
        if frame[0] & 0x10:
            return live
        return [c for c in live if c.address == frame[2]]

    def _command(self, frame: bytes) -> None:
        cmd = frame[0] & 0x0F
        if cmd == 3:  # chain inactive: every chip forgets its address and waits for one
            for c in self._chips:
                c.addressed = False
        elif cmd == 0:  # set address: the first chip in chain order still without one takes it
            for c in self._chips:
                if not c.addressed and not c.vanished:
                    c.address, c.addressed = frame[2], True
                    break
        elif cmd == 2:
            for c in self._targets(frame):
                self._reply_register(c, frame[3])
        elif cmd == 1:
            for c in self._targets(frame):
                self._write(c, frame[3], frame[4:8])

    def _write(self, c: _Chip, reg: int, v: bytes) -> None:
        c.regs[reg] = v
        if reg == 0x08:
            c.pll = v
        elif reg == 0x14:
            c.ticket_mask = int.from_bytes(v, "big")
        elif reg == 0x18:
            c.misc = v
        elif reg == 0x3C:
            if v[2] == 0:  # clock enable: data 0 turns the clock on, 1 gates it off
                cores = CORE_NUMBERS if v[0] & 0x80 else (v[1] & 0x0F,)
                for core in cores:
                    if core not in CORE_NUMBERS:
                        continue
                    if v[3] & 1:
                        c.cores_enabled.discard(core)
                    else:
                        c.cores_enabled.add(core)
        elif reg == 0x1C:
            self._iic(c, v)

    def _iic(self, c: _Chip, v: bytes) -> None:
        device, is_write, sreg, data = v[1] >> 1, v[1] & 1, v[2], v[3]
        if c.sensor is None or device != 0x4C:
            c.iic = bytes([v[0] | 0x40, v[1], v[2], 0])  # rw_fail: nobody answered
            return
        if v[0] & 0x02:
            c.auto_read = True
            c.iic = bytes([v[0], v[1], v[2], 0])
            return
        if is_write:
            c.sensor.regs[sreg] = data
            c.iic = bytes([0x01, v[1], sreg, data])  # the echo of the write
        else:
            c.iic = bytes([0x01, v[1], sreg, self._sensor_read(c, sreg)])

    def _temps(self, c: _Chip) -> tuple[float, float]:
        if self.temps is None:
            return DEFAULT_TEMP_C, DEFAULT_TEMP_C
        t = self.temps(self.chain, c.position)
        if isinstance(t, tuple):
            return float(t[0]), float(t[1])
        return float(t), float(t)

    def _sensor_read(self, c: _Chip, sreg: int) -> int:
        assert c.sensor is not None
        local, remote = self._temps(c)
        if sreg == 0x00:
            return max(0, min(255, round(local)))
        if sreg == 0x01:
            off = c.sensor.regs.get(0x11, 0)
            off = off - 256 if off >= 128 else off
            return max(0, min(255, round(remote + DIODE_BIAS_C + off)))
        return c.sensor.regs.get(sreg, 0)

    def _reply_register(self, c: _Chip, reg: int) -> None:
        if reg == 0x00:
            value = b"\x14\x85\x00\x00"
        elif reg == 0x04:
            rate = c.hashrate_hs * self.rate_scale
            value = min(0xFFFFFFFF, int(rate) >> 8).to_bytes(4, "big")
        elif reg == 0x08:
            value = c.pll
        elif reg == 0x14:
            value = c.ticket_mask.to_bytes(4, "big")
        elif reg == 0x18:
            value = c.misc
        elif reg == 0x1C:
            value = c.iic
        elif reg == 0x44:
            if c.sensor is not None and c.auto_read:
                value = bytes([0, self._sensor_read(c, 0), 0, self._sensor_read(c, 1)])
            else:
                value = b"\0\0\0\0"
        else:
            value = c.regs.get(reg, b"\0\0\0\0")
        head = value + bytes([c.address, reg, 0])
        self._emit(head[:6] + bytes([_crc5(head, 51)]))

    def _work_frame(self, frame: bytes) -> None:
        self.stats.works_in += 1
        data = frame[8:-2] if frame[0] & 1 else frame[4:-2]
        # data = header words 18..0; put them back in header order, nonce word last
        header76 = b"".join(data[4 * i : 4 * i + 4] for i in range(18, -1, -1))
        wid = frame[2] & 0x7F
        if self._current is not None and self._current[0] != wid:
            self._previous = self._current[0]
        self._work[wid] = header76 + b"\0\0\0\0"
        self._current = (wid, self._work[wid])
        for c in self._chips:
            c.counters.clear()

    # ------------------------------------------------------------------ chip frames out

    def _emit(self, frame: bytes) -> None:
        if self._silent or self._held or self._unpowered:
            return
        out = bytearray(frame)
        if self._corrupt:
            self._corrupt -= 1
            out[self._rng.randrange(len(out))] ^= 1 << self._rng.randrange(8)
        if self._lose:
            self._lose -= 1
            del out[self._rng.randrange(len(out))]
        self._outbuf += out
        self.stats.frames_out += 1

    def _nonce_frame(self, nonce: int, wid: int) -> bytes:
        head = nonce.to_bytes(4, "big") + bytes([0, wid & 0x7F, 0x80])
        return head[:6] + bytes([0x80 | _crc5(head, 51)])

    # ------------------------------------------------------------------ hashing model

    def _hash(self, dt: float) -> None:
        with self._lock:
            hashing = [c for c in self._chips if c.addressed and not c.vanished and c.hashrate_hs]
            idle = self._silent or self._held or self._unpowered
            if idle or self._current is None or not hashing:
                # Each chip starts at its own point of a chunk: with equal clocks, chips that all
                # started from 0 would finish their chunks together, and nonces would come in
                # bursts one chunk-time apart (a real chain's nonces come one by one).
                for c in self._chips:
                    c.budget = self._rng.random() * CHUNK
                self.model_time_s += dt * self.rate_scale
                return
            # each chip computes in proportion to its own clock and cores (shared cap)
            want = [c.hashrate_hs * self.rate_scale * self.ticket_difficulty / 256 for c in hashing]
            total = sum(want)
            k = min(1.0, self.max_hash_rate_hs / total) if total > 0 else 0.0
            per_chip = []
            demanded = lost = 0.0
            for c, w in zip(hashing, want, strict=True):
                r = w * k
                owed = c.budget + r * dt
                c.budget = min(owed, r + CHUNK)
                demanded += r * dt
                lost += owed - c.budget
                out: list[tuple[int, int, int, float]] = []
                per_chip.append(out)
                if c.budget < CHUNK:
                    continue
                cores = [x for x in CORE_NUMBERS if x in c.cores_enabled]
                p_bad = self.error_rate(c.position)
                while c.budget >= CHUNK:
                    c.budget -= CHUNK
                    core = cores[c.rr % len(cores)]  # a gated core gets no turn
                    c.rr += 1
                    counter = c.counters.get(core, 0)
                    if counter + CHUNK > 1 << 20:
                        continue  # this core has scanned its range of this work: it idles
                    c.counters[core] = counter + CHUNK
                    start = core << 28 | c.address << 20 | counter
                    out.append((c.position, start, c.ticket_mask, p_bad))
            kept = 1.0 - lost / demanded if demanded > 0 else 1.0
            self.model_time_s += dt * self.rate_scale * k * max(0.0, kept)
            # interleave: chips in turn
            jobs = [j for group in _zip_longest(per_chip) for j in group]
            wid, header = self._current
        for position, start, mask, p_bad in jobs:
            difficulty = self.ticket_difficulty * (mask + 1) / 256
            target = difficulty_to_target(difficulty)
            found = scrypt.scan(header, start, CHUNK, target)
            with self._lock:
                self.stats.hashes += CHUNK
                gone = self._current is None or self._current[0] != wid
                if gone or self._silent or self._unpowered:
                    return  # new work, a reset or lost power while hashing: nothing to report
                for nonce, _ in found:
                    self._report(nonce, wid, position, p_bad)

    def _bad_nonce(self, nonce: int, wid: int) -> int:
        # Same chip and core bits, but a counter whose hash misses the ticket (a broken core).
        header = self._work[wid][:76]
        target = difficulty_to_target(self.ticket_difficulty)
        for bit in range(20):
            bad = nonce ^ (1 << bit)
            h = scrypt.pow_hash(header + bad.to_bytes(4, "little"))
            if not scrypt.hash_meets(h, target):
                return bad
        return nonce ^ 1

    def _report(self, nonce: int, wid: int, position: int = -1, p_bad: float = 0.0) -> None:
        # One fault per nonce, so each injected fault shows up as exactly one counted event.
        st = self.stats
        st.chip_nonces[position] = st.chip_nonces.get(position, 0) + 1
        if p_bad > 0 and self._err_rng.random() < p_bad:  # past its stable clock
            st.bad_out += 1
            st.chip_bad[position] = st.chip_bad.get(position, 0) + 1
            nonce = self._bad_nonce(nonce, wid)
        elif self._bad:
            self._bad -= 1
            nonce = self._bad_nonce(nonce, wid)
        elif self._stale and self._previous is not None:
            self._stale -= 1
            wid = self._previous
        elif self._unknown:
            self._unknown -= 1
            wid = (max(self._work, default=0) + 64) & 0x7F
            while wid in self._work:
                wid = (wid + 1) & 0x7F
        frame = self._nonce_frame(nonce, wid)
        self.stats.nonces_out += 1
        self._emit(frame)
        if self._repeat:  # the same result sent again (a chip's return path glitching)
            self._repeat -= 1
            self.stats.nonces_out += 1
            self._emit(frame)


def _zip_longest(groups: list[list[tuple[int, int, int, float]]]) -> list[list[Any]]:
    n = max((len(g) for g in groups), default=0)
    return [[g[i] for g in groups if i < len(g)] for i in range(n)]


class EmulatedBoard:
    """A whole L3+ class board: `chains` EmulatedChains, one pty each."""

    def __init__(self, chains: int = 4, chips: int = DEFAULT_CHIPS, **kwargs: object) -> None:
        self.chains = [EmulatedChain(chips, i, **kwargs) for i in range(chains)]  # type: ignore[arg-type]

    @property
    def paths(self) -> list[str]:
        return [c.path for c in self.chains]

    def start(self) -> EmulatedBoard:
        for c in self.chains:
            c.start()
        return self

    def stop(self) -> None:
        for c in self.chains:
            c.stop()
