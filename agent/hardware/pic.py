"""The L3+ hash-board PIC (firmware 0x03) over an smbus2.SMBus-shaped bus.

Framing (reference §3.3): single-byte writes of 55, AA, the command, then its arguments; a reply
is read one byte at a time. There is no length, checksum or acknowledgement, so the PIC's silence
is invisible to the stock driver. Ours notices: a bus error (NACK), a reply of all 0xFF (nobody
driving the bus) or a wrong firmware version counts as a failure, and a PIC whose health check
fails PIC_DEAD_AFTER_FAILURES times in a row is reported as not answering, naming its chain.

Frame building and the voltage conversion are pure; Pic is the thin async shell around them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agent import defaults as D

log = logging.getLogger(__name__)

SYNC = (0x55, 0xAA)


@dataclass(frozen=True)
class PicCommand:
    code: int
    name: str
    args: int  # bytes written after the command byte
    reply: int  # bytes read back


_TABLE = (
    PicCommand(0x01, "set flash pointer", 2, 0),
    PicCommand(0x02, "write cache", 16, 0),
    PicCommand(0x03, "read flash", 0, 16),
    PicCommand(0x04, "erase flash", 0, 0),
    PicCommand(0x05, "commit cache", 0, 0),
    PicCommand(0x06, "jump to app", 0, 0),
    PicCommand(0x07, "reset", 0, 0),
    PicCommand(0x08, "get flash pointer", 0, 2),
    PicCommand(0x10, "set voltage", 1, 0),
    PicCommand(0x11, "set voltage time", 6, 0),
    PicCommand(0x12, "set hash-board id", 12, 0),
    PicCommand(0x13, "read hash-board id", 0, 12),
    PicCommand(0x14, "write host MAC and time", 12, 0),
    PicCommand(0x15, "enable DC-DC", 1, 0),
    PicCommand(0x16, "heartbeat", 0, 0),
    PicCommand(0x17, "software version", 0, 1),
    PicCommand(0x18, "get voltage", 0, 1),
    PicCommand(0x19, "read voltage time", 0, 6),
    PicCommand(0x20, "select MAC", 1, 0),
    PicCommand(0x21, "read MAC", 0, 16),
    PicCommand(0x22, "write temperature offsets", 8, 0),
    PicCommand(0x23, "read temperature offsets", 0, 8),
)
COMMANDS: dict[int, PicCommand] = {c.code: c for c in _TABLE}
SET_FLASH_POINTER, READ_FLASH, JUMP_TO_APP, RESET, GET_FLASH_POINTER = 0x01, 0x03, 0x06, 0x07, 0x08
SET_VOLTAGE, READ_VOLTAGE_TIME, READ_BOARD_ID = 0x10, 0x19, 0x13
ENABLE_DC_DC, HEARTBEAT, VERSION, GET_VOLTAGE = 0x15, 0x16, 0x17, 0x18
WRITE_TEMP_OFFSETS, READ_TEMP_OFFSETS = 0x22, 0x23
SELECT_MAC, READ_MAC = 0x20, 0x21
# Replies that can never be 0xFF (a version, a voltage code <= 0xFE): 0xFF there means the bus
# floats high because no PIC drives it. Flash reads legitimately return 0xFF (erased).
NEVER_FF = frozenset({VERSION, GET_VOLTAGE})


class PicError(Exception):
    """A PIC command that failed; names the chain, the PIC address and the command."""

    def __init__(self, chain: int, address: int, command: str, why: str) -> None:
        self.chain, self.address, self.command, self.why = chain, address, command, why
        super().__init__(f"chain {chain} PIC 0x{address:02x}: {command}: {why}")


class PicNotAnswering(PicError):
    """The PIC does not answer on the bus (NACK, timeout or a floating 0xFF reply)."""


# ---------------------------------------------------------------------------- pure parts


def frame(code: int, args: Sequence[int] = ()) -> bytes:
    """The bytes written for one command: 55 AA code args... (one single-byte write each)."""
    cmd = COMMANDS.get(code)
    if cmd is None:
        raise ValueError(f"unknown PIC command 0x{code:02x}")
    if len(args) != cmd.args:
        raise ValueError(f"PIC {cmd.name} takes {cmd.args} argument bytes, got {len(args)}")
    if any(not 0 <= a <= 0xFF for a in args):
        raise ValueError(f"PIC {cmd.name}: arguments must be bytes, got {list(args)!r}")
    return bytes((*SYNC, code, *args))


def voltage_from_code(code: int) -> float:
    """Approximate board voltage for a PIC voltage code. [3P PICTOOL] 0x80 is about 10 V and a
    larger code means a lower voltage, about ±1 V over the range: V = 10 + (0x80 - code) / 128.
    An estimate for display and the thermal model, not a measurement."""
    if not 0 <= code <= D.PIC_VOLTAGE_CODE_MAX:
        top = D.PIC_VOLTAGE_CODE_MAX
        raise ValueError(f"PIC voltage code must be 0x00..0x{top:02X}, got {code!r}")
    step = D.PIC_VOLTAGE_SPAN_V / 128
    return D.PIC_VOLTAGE_AT_DEFAULT_V + (D.PIC_VOLTAGE_CODE_DEFAULT - code) * step


def code_from_voltage(volts: float) -> int:
    """The nearest PIC voltage code for `volts` (inverse of voltage_from_code); out of range
    raises rather than clamping, so a typo never sets an extreme voltage."""
    lo, hi = voltage_from_code(D.PIC_VOLTAGE_CODE_MAX), voltage_from_code(0)
    if not lo <= volts <= hi:
        raise ValueError(f"PIC voltage must be in {lo:.3f}..{hi:.3f} V, got {volts!r}")
    step = D.PIC_VOLTAGE_SPAN_V / 128
    return round(D.PIC_VOLTAGE_CODE_DEFAULT - (volts - D.PIC_VOLTAGE_AT_DEFAULT_V) / step)


# ---------------------------------------------------------------------------- the driver


@dataclass
class PicHealth:
    alive: bool = True
    failures: int = 0  # failed commands, all time
    consecutive_failures: int = 0  # failed health checks in a row
    last_error: str | None = None
    heartbeats: int = 0


class Pic:
    """One hash board's PIC. Every command holds a per-PIC lock so a heartbeat never lands in the
    middle of another command's bytes."""

    def __init__(
        self,
        bus: Any,
        address: int,
        chain: int,
        *,
        step_delay_s: float = D.PIC_STEP_DELAY_S,
        timeout_s: float = D.PIC_TIMEOUT_S,
        retries: int = D.PIC_RETRIES,
        expected_version: int = D.PIC_FIRMWARE_VERSION,
        dead_after: int = D.PIC_DEAD_AFTER_FAILURES,
    ) -> None:
        self.bus = bus
        self.address = address
        self.chain = chain
        self.step_delay_s = step_delay_s
        self.timeout_s = timeout_s
        self.retries = max(1, retries)
        self.expected_version = expected_version
        self.dead_after = dead_after
        self.health = PicHealth()
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Pic(chain={self.chain}, address=0x{self.address:02x})"

    def _error(self, cmd: PicCommand, why: str, cls: type[PicError] = PicError) -> PicError:
        return cls(self.chain, self.address, cmd.name, why)

    async def _pause(self) -> None:
        # The PIC has no flow control: hosts pause between bytes. 0 still yields to the loop.
        await asyncio.sleep(self.step_delay_s)

    async def _transfer(self, data: bytes, reply: int) -> bytes:
        for b in data:
            self.bus.write_byte(self.address, b)
            await self._pause()
        out = bytearray()
        for _ in range(reply):
            out.append(self.bus.read_byte(self.address) & 0xFF)
            if len(out) < reply:
                await self._pause()
        return bytes(out)

    async def command(self, code: int, args: Sequence[int] = ()) -> bytes:
        """Send one command and return its reply bytes; retries, then raises PicError
        (PicNotAnswering when the bus says nobody is there)."""
        cmd = COMMANDS[code]
        data = frame(code, args)
        last = "no attempt"
        for attempt in range(1, self.retries + 1):
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that lands as the transfer completes, and the heartbeat task would never stop.
                async with self._lock, asyncio.timeout(self.timeout_s):
                    reply = await self._transfer(data, cmd.reply)
            except TimeoutError:
                last = f"no completion within {self.timeout_s:g} s"
            except OSError as e:
                last = f"bus error: {e.strerror or e}"
            else:
                if code in NEVER_FF and all(b == 0xFF for b in reply):
                    last = "reply is all 0xFF (nothing drives the bus)"
                else:
                    return reply
            self.health.failures += 1
            log.debug("chain %d PIC 0x%02x %s attempt %d: %s",
                      self.chain, self.address, cmd.name, attempt, last)  # fmt: skip
        self.health.last_error = last
        raise self._error(cmd, f"{last} (after {self.retries} attempts)", PicNotAnswering)

    # --- named commands

    async def reset(self) -> None:
        await self.command(RESET)

    async def jump_to_app(self) -> None:
        await self.command(JUMP_TO_APP)

    async def set_dc_dc(self, on: bool) -> None:
        await self.command(ENABLE_DC_DC, (1 if on else 0,))

    async def heartbeat(self) -> None:
        await self.command(HEARTBEAT)
        self.health.heartbeats += 1

    async def version(self) -> int:
        return (await self.command(VERSION))[0]

    async def set_voltage_code(self, code: int) -> None:
        voltage_from_code(code)  # validates
        await self.command(SET_VOLTAGE, (code,))

    async def voltage_code(self) -> int:
        return (await self.command(GET_VOLTAGE))[0]

    async def set_voltage(self, volts: float) -> int:
        code = code_from_voltage(volts)
        await self.set_voltage_code(code)
        return code

    async def voltage(self) -> float:
        code = await self.voltage_code()
        if code > D.PIC_VOLTAGE_CODE_MAX:
            raise self._error(COMMANDS[GET_VOLTAGE], f"voltage code 0x{code:02x} out of range")
        return voltage_from_code(code)

    async def board_id(self) -> bytes:
        return await self.command(READ_BOARD_ID)

    async def voltage_set_time(self) -> bytes:
        return await self.command(READ_VOLTAGE_TIME)

    async def temperature_offsets(self) -> bytes:
        return await self.command(READ_TEMP_OFFSETS)

    async def set_temperature_offsets(self, offsets: Sequence[int]) -> None:
        await self.command(WRITE_TEMP_OFFSETS, offsets)

    async def select_mac(self, which: int) -> None:
        await self.command(SELECT_MAC, (which,))

    async def read_mac(self) -> bytes:
        return await self.command(READ_MAC)

    async def flash_pointer(self) -> int:
        hi, lo = await self.command(GET_FLASH_POINTER)
        return (hi << 8) | lo

    async def set_flash_pointer(self, address: int) -> None:
        if not 0 <= address <= 0xFFFF:
            raise ValueError(f"PIC flash address must be 0..0xFFFF, got {address!r}")
        await self.command(SET_FLASH_POINTER, (address >> 8, address & 0xFF))

    async def read_flash(self) -> bytes:
        """16 bytes from the flash pointer (firmware writes are deliberately not offered)."""
        return await self.command(READ_FLASH)

    # --- health

    async def check_version(self) -> None:
        version = await self.version()
        if version != self.expected_version:
            cmd = COMMANDS[VERSION]
            want = self.expected_version
            raise self._error(cmd, f"firmware 0x{version:02x}, expected 0x{want:02x}")

    async def beat(self) -> str | None:
        """Heartbeat plus a version read (so a PIC that stops answering is seen): never raises.
        Returns None when healthy, else the problem (naming chain and PIC)."""
        try:
            await self.heartbeat()
            await self.check_version()
        except PicError as e:
            h = self.health
            h.consecutive_failures += 1
            h.last_error = str(e)
            if h.consecutive_failures >= self.dead_after and h.alive:
                h.alive = False
                log.error("chain %d PIC 0x%02x not answering: %s", self.chain, self.address, e.why)
            if h.alive:
                return str(e)
            return f"chain {self.chain} PIC 0x{self.address:02x} not answering: {e.why}"
        if not self.health.alive:
            log.warning("chain %d PIC 0x%02x answers again", self.chain, self.address)
        self.health.alive = True
        self.health.consecutive_failures = 0
        return None

    async def power_on(self, reset_wait_s: float = D.PIC_RESET_WAIT_S) -> None:
        """Boot steps 2-3 for this board: reset, jump to the app, check the version, DC-DC on.
        The waits are the PIC's own start-up times from the stock driver."""
        await self.reset()
        await asyncio.sleep(reset_wait_s)
        await self.jump_to_app()
        await asyncio.sleep(reset_wait_s)
        await self.check_version()
        await self.set_dc_dc(True)


async def heartbeat_loop(
    pics: Sequence[Pic],
    interval_s: float = D.PIC_HEARTBEAT_S,
    on_problem: Callable[[Pic, str], None] | None = None,
) -> None:
    """Beat every PIC each interval until cancelled; problems go to on_problem (never raises)."""
    while True:
        for pic in pics:
            problem = await pic.beat()
            if problem is not None and on_problem is not None:
                try:
                    on_problem(pic, problem)
                except Exception:  # a broken callback must not stop the heartbeats
                    log.exception("heartbeat problem callback failed")
        await asyncio.sleep(interval_s)
