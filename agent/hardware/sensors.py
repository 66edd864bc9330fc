"""Temperature sensors: a controller-side TMP75/LM75, and pure decoders shared with the chip driver.

Decoding is pure (TMP75 words, TMP451 register bytes, the BM1485 EXT_TEMP_SENSOR register) and
every reading carries a plausibility verdict: 0, 255, all-ones and out-of-range values are flagged
and their temperature is None, never a number. The thermal loop treats None as "unknown" and runs
the fans at 100 % (DESIGN rule 6; the stock driver does the same for a reading of 0)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from agent import defaults as D

TMP75_REG_TEMP = 0x00
TMP75_REG_CONFIG = 0x01
TMP75_REG_TLOW = 0x02
TMP75_REG_THIGH = 0x03

TMP451_REG_LOCAL = 0x00
TMP451_REG_REMOTE_HIGH = 0x01
TMP451_REG_STATUS = 0x02
TMP451_REG_CONFIG = 0x03
TMP451_REG_REMOTE_LOW = 0x10
TMP451_REG_OFFSET_HIGH = 0x11
TMP451_REG_OFFSET_LOW = 0x12


@dataclass(frozen=True)
class Reading:
    """One sensor reading. temp_c is None unless the raw value is plausible."""

    source: str  # names the device, e.g. "tmp75@0x48" or "chain 2 chip 0x0c remote"
    raw: int
    temp_c: float | None
    problem: str | None = None  # why the reading is not trusted

    @property
    def ok(self) -> bool:
        return self.temp_c is not None


def judge(source: str, raw: int, temp_c: float, *, sentinels: tuple[int, ...] = ()) -> Reading:
    """A Reading with temp_c kept only if the raw value is no sentinel and the value is in range."""
    if raw in sentinels:
        return Reading(source, raw, None, f"{source}: raw 0x{raw:x} is a no-reading sentinel")
    if not D.SENSOR_MIN_PLAUSIBLE_C <= temp_c <= D.SENSOR_MAX_PLAUSIBLE_C:
        why = (
            f"{source}: {temp_c:g} °C is outside "
            f"{D.SENSOR_MIN_PLAUSIBLE_C:g}..{D.SENSOR_MAX_PLAUSIBLE_C:g} °C"
        )
        return Reading(source, raw, None, why)
    return Reading(source, raw, temp_c)


# ---------------------------------------------------------------------------- pure decoders


def tmp75_decode(msb: int, lsb: int) -> float:
    """TMP75/LM75 temperature register: 16 bits MSB first, left-justified two's complement,
    1/256 °C per LSB of the word (unused low bits read 0 at 9-12 bit resolution)."""
    for name, b in (("msb", msb), ("lsb", lsb)):
        if not 0 <= b <= 0xFF:
            raise ValueError(f"tmp75 {name} must be a byte, got {b!r}")
    word = (msb << 8) | lsb
    if word & 0x8000:
        word -= 0x10000
    return word / 256.0


def tmp75_encode(temp_c: float, bits: int = 12) -> tuple[int, int]:
    """(msb, lsb) a TMP75 at `bits` resolution returns for temp_c (the emulator's side)."""
    if not 9 <= bits <= 12:
        raise ValueError(f"tmp75 resolution must be 9..12 bits, got {bits}")
    step = 1 << (16 - bits)  # in 1/256 °C
    word = int(temp_c * 256.0) // step * step  # the ADC truncates toward -inf
    word = max(-0x8000, min(0x7FFF // step * step, word)) & 0xFFFF
    return word >> 8, word & 0xFF


def tmp75_config(bits: int) -> int:
    """Configuration register value selecting 9..12-bit resolution (R1:R0 = bits 6:5)."""
    if not 9 <= bits <= 12:
        raise ValueError(f"tmp75 resolution must be 9..12 bits, got {bits}")
    return (bits - 9) << 5


def tmp75_reading(source: str, msb: int, lsb: int) -> Reading:
    # 0x0000 (exactly 0 °C) is what a sensor that never converted returns, and what the stock
    # driver treats as "no reading"; 0xFFFF is a floating bus. Neither is trusted.
    return judge(source, (msb << 8) | lsb, tmp75_decode(msb, lsb), sentinels=(0x0000, 0xFFFF))


def tmp451_decode(high: int, low: int = 0, *, extended: bool = False) -> float:
    """TMP451-class temperature: high byte in °C (two's complement in the standard range,
    offset by 64 in the extended range), low byte bits 7..4 = sixteenths of a degree."""
    for name, b in (("high", high), ("low", low)):
        if not 0 <= b <= 0xFF:
            raise ValueError(f"tmp451 {name} byte must be 0..255, got {b!r}")
    whole = high - 64 if extended else (high - 256 if high & 0x80 else high)
    return whole + (low >> 4) / 16.0


def tmp451_encode(temp_c: float, *, extended: bool = False) -> tuple[int, int]:
    """(high, low) bytes for temp_c, clamped to what the format holds (the emulator's side)."""
    sixteenths = math.floor(temp_c * 16)  # the ADC truncates toward -inf
    lo_limit, hi_limit = (-64 * 16, 191 * 16 + 15) if extended else (-128 * 16, 127 * 16 + 15)
    sixteenths = max(lo_limit, min(hi_limit, sixteenths))
    whole, frac = divmod(sixteenths, 16)
    high = (whole + 64) if extended else (whole & 0xFF)
    return high, frac << 4


def tmp451_reading(source: str, high: int, low: int = 0, *, extended: bool = False) -> Reading:
    # 0 and 255 in the high byte are the readings the stock firmwares emit for a lost sensor.
    return judge(source, high, tmp451_decode(high, low, extended=extended), sentinels=(0, 0xFF))


def ext_temp_sensor_decode(value: int, source: str = "chip") -> tuple[Reading, Reading]:
    """BM1485 EXT_TEMP_SENSOR (register 0x44) as read, big-endian: b1 = local (PCB) °C,
    b3 = remote (die) °C, both unsigned. Returns (local, remote) readings, 0/255 flagged."""
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"EXT_TEMP_SENSOR value must be 32-bit, got {value!r}")
    b = value.to_bytes(4, "big")
    local = judge(f"{source} local", b[1], float(b[1]), sentinels=(0, 0xFF))
    remote = judge(f"{source} remote", b[3], float(b[3]), sentinels=(0, 0xFF))
    return local, remote


# ---------------------------------------------------------------------------- TMP75 driver


class Tmp75:
    """A TMP75/LM75 on the controller's I2C bus. read() never raises: a bus error or an
    implausible value gives a Reading with temp_c None and the problem named."""

    def __init__(self, bus: Any, address: int, name: str | None = None) -> None:
        self.bus = bus
        self.address = address
        self.name = name or f"tmp75@0x{address:02x}"
        self.errors = 0  # bus errors and implausible readings
        self.last: Reading | None = None

    def configure(self, bits: int = D.TMP75_RESOLUTION_BITS) -> None:
        """Select the resolution (power-up is 9-bit, 0.5 °C). Raises OSError naming the device."""
        try:
            self.bus.write_byte_data(self.address, TMP75_REG_CONFIG, tmp75_config(bits))
        except OSError as e:
            self.errors += 1
            raise OSError(e.errno, f"{self.name}: configure: {e.strerror or e}") from None

    def read(self) -> Reading:
        try:
            data = self.bus.read_i2c_block_data(self.address, TMP75_REG_TEMP, 2)
            if len(data) != 2:
                raise OSError(0, f"short read of {len(data)} bytes")
            reading = tmp75_reading(self.name, data[0], data[1])
        except OSError as e:
            reading = Reading(self.name, -1, None, f"{self.name}: read failed: {e.strerror or e}")
        if not reading.ok:
            self.errors += 1
        self.last = reading
        return reading
