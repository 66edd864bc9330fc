"""Emulated board peripherals: PICs and temperature sensors behind an smbus2.SMBus-shaped object,
fans, GPIOs and LEDs as a real folder of sysfs-like files, all tied to the thermal model.

Written from reference/chips-bm1485.md §3, not from our drivers, so the tests of the drivers
against it mean something. Everything moves in simulated time: advance(dt_s) steps the PIC
heartbeat watchdogs, the fans' PWM -> RPM inertia and tach edge counters, and the thermal model.

Fault injection: a sensor reading forced to 0 or 255 (or any raw value), a dead fan, a PIC that
stops answering ("nack": the bus reports a remote I/O error; "silent": reads float at 0xFF and
writes are ignored), a board unplugged."""

from __future__ import annotations

import errno
import math
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.emulator.thermal import V_NOMINAL, ThermalModel

# --------------------------------------------------------------------------- I2C devices


def _nack(address: int, why: str = "no acknowledgement") -> OSError:
    # What the kernel's i2c-dev returns for an address nobody answers (omap: EREMOTEIO).
    return OSError(errno.EREMOTEIO, f"Remote I/O error at 0x{address:02x}: {why}")


class I2cDevice:
    """Base: a device answers the SMBus transactions it implements; the rest are errors."""

    address: int

    def write_byte(self, value: int) -> None:
        raise _nack(self.address, "write_byte not supported")

    def read_byte(self) -> int:
        raise _nack(self.address, "read_byte not supported")

    def write_byte_data(self, register: int, value: int) -> None:
        raise _nack(self.address, "write_byte_data not supported")

    def read_byte_data(self, register: int) -> int:
        raise _nack(self.address, "read_byte_data not supported")

    def read_i2c_block_data(self, register: int, length: int) -> list[int]:
        raise _nack(self.address, "read_i2c_block_data not supported")

    def write_i2c_block_data(self, register: int, data: Sequence[int]) -> None:
        raise _nack(self.address, "write_i2c_block_data not supported")


# Command code -> (argument bytes, reply bytes), PIC firmware 0x03 (reference §3.3).
PIC_COMMANDS: dict[int, tuple[int, int]] = {
    0x01: (2, 0), 0x02: (16, 0), 0x03: (0, 16), 0x04: (0, 0), 0x05: (0, 0), 0x06: (0, 0),
    0x07: (0, 0), 0x08: (0, 2), 0x10: (1, 0), 0x11: (6, 0), 0x12: (12, 0), 0x13: (0, 12),
    0x14: (12, 0), 0x15: (1, 0), 0x16: (0, 0), 0x17: (0, 1), 0x18: (0, 1), 0x19: (0, 6),
    0x20: (1, 0), 0x21: (0, 16), 0x22: (8, 0), 0x23: (0, 8),
}  # fmt: skip
LOADER_COMMANDS = frozenset({0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x17})


@dataclass
class EmulatedPic(I2cDevice):
    """A hash-board PIC: 55 AA cmd args... byte by byte, replies read byte by byte.

    watchdog_s: the reference does not say what a PIC does when heartbeats stop; cutting DC-DC
    is the plausible guess [I], so it is opt-in (None = heartbeats are not watched)."""

    address: int
    chain: int
    clock: Callable[[], float]
    firmware: int = 0x03
    watchdog_s: float | None = None
    dc_dc_on: bool = False
    voltage_code: int = 0x80
    in_loader: bool = False
    board_id: bytes = b"EMU-L3P-0000"
    temp_offsets: bytes = bytes(8)
    voltage_time: bytes = bytes(6)
    mac: bytes = bytes(16)
    flash: bytearray = field(default_factory=lambda: bytearray(b"\xff" * 0x1000))
    flash_pointer: int = 0x0300
    fault: str | None = None  # None | "nack" | "silent"
    last_heartbeat: float | None = None
    watchdog_tripped: bool = False
    frames: list[bytes] = field(default_factory=list)  # every complete command received
    heartbeats: int = 0
    _buf: bytearray = field(default_factory=bytearray)
    _reply: deque[int] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.board_id = self.board_id[:-1] + bytes([0x30 + self.chain])

    def write_byte(self, value: int) -> None:
        if self.fault == "nack":
            raise _nack(self.address, "PIC not answering")
        if self.fault == "silent":
            return
        self._feed(value & 0xFF)

    def read_byte(self) -> int:
        if self.fault == "nack":
            raise _nack(self.address, "PIC not answering")
        if self.fault == "silent" or not self._reply:
            return 0xFF
        return self._reply.popleft()

    def _feed(self, b: int) -> None:
        buf = self._buf
        buf.append(b)
        # Resynchronise on 55 AA: a byte that cannot continue a frame starts the search again.
        if len(buf) == 1 and b != 0x55:
            buf.clear()
        elif len(buf) == 2 and b != 0xAA:
            buf[:] = b"\x55" if b == 0x55 else b""
        elif len(buf) == 3 and b not in PIC_COMMANDS:
            buf.clear()
        if len(buf) >= 3:
            nargs, _ = PIC_COMMANDS[buf[2]]
            if len(buf) == 3 + nargs:
                frame = bytes(buf)
                buf.clear()
                self.frames.append(frame)
                self._execute(frame[2], frame[3:])

    def _execute(self, cmd: int, args: bytes) -> None:
        self._reply.clear()
        if self.in_loader and cmd not in LOADER_COMMANDS:
            return  # the loader only knows flash, jump, reset and version
        reply = b""
        if cmd == 0x07:
            self.in_loader, self.dc_dc_on = True, False
        elif cmd == 0x06:
            self.in_loader = False
        elif cmd == 0x15:
            self.dc_dc_on = args[0] == 1
            if self.dc_dc_on:
                self.watchdog_tripped = False
                self.last_heartbeat = self.clock()
        elif cmd == 0x16:
            self.last_heartbeat = self.clock()
            self.heartbeats += 1
        elif cmd == 0x17:
            reply = bytes([self.firmware])
        elif cmd == 0x10:
            if args[0] <= 0xFE:
                self.voltage_code = args[0]
        elif cmd == 0x18:
            reply = bytes([self.voltage_code])
        elif cmd == 0x11:
            self.voltage_time = bytes(args)
        elif cmd == 0x19:
            reply = self.voltage_time
        elif cmd == 0x12:
            self.board_id = bytes(args)
        elif cmd == 0x13:
            reply = self.board_id
        elif cmd == 0x22:
            self.temp_offsets = bytes(args)
        elif cmd == 0x23:
            reply = self.temp_offsets
        elif cmd == 0x01:
            self.flash_pointer = (args[0] << 8) | args[1]
        elif cmd == 0x08:
            reply = self.flash_pointer.to_bytes(2, "big")
        elif cmd == 0x03:
            p = self.flash_pointer % len(self.flash)
            reply = bytes(self.flash[p : p + 16]).ljust(16, b"\xff")
            self.flash_pointer += 16
        elif cmd == 0x21:
            reply = self.mac
        # 0x02/0x04/0x05 (flash writes), 0x14, 0x20: accepted and ignored by the emulator.
        self._reply.extend(reply)

    @property
    def voltage_v(self) -> float:
        """Board voltage for the thermal model: 0x80 ≈ 10 V, larger = lower, ±1 V over the range."""
        return V_NOMINAL + (0x80 - self.voltage_code) / 128.0

    def tick(self, now: float) -> None:
        if self.watchdog_s is None or not self.dc_dc_on or self.last_heartbeat is None:
            return
        if now - self.last_heartbeat > self.watchdog_s:
            self.dc_dc_on = False
            self.watchdog_tripped = True


@dataclass
class EmulatedTmp75(I2cDevice):
    """TMP75/LM75: pointer register, 9-12 bit left-justified two's complement temperature."""

    address: int
    temp: Callable[[], float]
    config: int = 0x00  # power-up: 9-bit
    forced_raw: int | None = None  # fault injection: the 16-bit word every read returns
    pointer: int = 0
    t_low: int = 0x4B00  # 75 °C
    t_high: int = 0x5000  # 80 °C

    @property
    def bits(self) -> int:
        return 9 + ((self.config >> 5) & 0x3)

    def _word(self) -> int:
        if self.forced_raw is not None:
            return self.forced_raw & 0xFFFF
        step = 1 << (16 - self.bits)  # in 1/256 °C
        word = math.floor(self.temp() * 256.0 / step) * step
        return max(-0x8000, min(0x7FFF // step * step, word)) & 0xFFFF

    def _register(self, reg: int) -> int:
        if reg == 0:
            return self._word()
        if reg == 1:
            return self.config << 8  # an 8-bit register; a 2-byte read repeats nothing useful
        if reg == 2:
            return self.t_low
        if reg == 3:
            return self.t_high
        raise _nack(self.address, f"no register {reg}")

    def write_byte_data(self, register: int, value: int) -> None:
        self.pointer = register & 0x3
        if register == 1:
            self.config = value & 0xFF
        elif register not in (0, 2, 3):
            raise _nack(self.address, f"no register {register}")

    def read_i2c_block_data(self, register: int, length: int) -> list[int]:
        self.pointer = register & 0x3
        word = self._register(register)
        data = [word >> 8, word & 0xFF] if register != 1 else [self.config]
        return (data * length)[:length]

    def read_byte_data(self, register: int) -> int:
        return self.read_i2c_block_data(register, 1)[0]

    def write_byte(self, value: int) -> None:
        self.pointer = value & 0x3

    def read_byte(self) -> int:
        return self.read_i2c_block_data(self.pointer, 1)[0]


@dataclass
class EmulatedTmp451(I2cDevice):
    """TMP451-class remote-diode sensor (behind the chips' I2C master on the L3+)."""

    local: Callable[[], float]
    remote: Callable[[], float]
    address: int = 0x4C
    diode_bias_c: float = 40.0  # raw diode error; the stock calibration starts at offset -40 [I]
    offset_high: int = 0
    offset_low: int = 0
    config: int = 0
    forced_high: int | None = None  # fault injection: what every temperature read returns

    def _offset_c(self) -> float:
        high = self.offset_high - 256 if self.offset_high & 0x80 else self.offset_high
        return high + (self.offset_low >> 4) / 16.0

    @staticmethod
    def _encode(temp_c: float) -> tuple[int, int]:
        sixteenths = max(-128 * 16, min(127 * 16 + 15, math.floor(temp_c * 16)))
        whole, frac = divmod(sixteenths, 16)
        return whole & 0xFF, frac << 4

    def remote_c(self) -> float:
        return self.remote() + self.diode_bias_c + self._offset_c()

    def read_byte_data(self, register: int) -> int:
        if register in (0x00, 0x01) and self.forced_high is not None:
            return self.forced_high
        if register == 0x00:
            return self._encode(self.local())[0]
        if register == 0x01:
            return self._encode(self.remote_c())[0]
        if register == 0x10:
            return 0 if self.forced_high is not None else self._encode(self.remote_c())[1]
        if register == 0x02:
            return 0x00  # status: not busy, no open diode
        if register == 0x03:
            return self.config
        if register == 0x11:
            return self.offset_high
        if register == 0x12:
            return self.offset_low
        raise _nack(self.address, f"no register 0x{register:02x}")

    def write_byte_data(self, register: int, value: int) -> None:
        if register == 0x11:
            self.offset_high = value & 0xFF
        elif register == 0x12:
            self.offset_low = value & 0xF0
        elif register in (0x03, 0x09):  # config (read 0x03, write 0x09 on the TMP451)
            self.config = value & 0xFF
        else:
            raise _nack(self.address, f"register 0x{register:02x} is not writable")

    def read_i2c_block_data(self, register: int, length: int) -> list[int]:
        return [self.read_byte_data(register + i) for i in range(length)]


class EmulatedBus:
    """smbus2.SMBus-shaped: the same method names and signatures, answered by devices."""

    def __init__(self, devices: Sequence[I2cDevice] = (), name: str = "emulated") -> None:
        self.name = name
        self.devices: dict[int, I2cDevice] = {d.address: d for d in devices}
        self.transactions = 0
        self.closed = False

    def add(self, device: I2cDevice) -> None:
        self.devices[device.address] = device

    def _dev(self, i2c_addr: int) -> I2cDevice:
        if self.closed:
            raise OSError(errno.EBADF, f"{self.name}: bus is closed")
        self.transactions += 1
        dev = self.devices.get(i2c_addr)
        if dev is None:
            raise _nack(i2c_addr)
        return dev

    def write_byte(self, i2c_addr: int, value: int, force: bool | None = None) -> None:
        self._dev(i2c_addr).write_byte(value)

    def read_byte(self, i2c_addr: int, force: bool | None = None) -> int:
        return self._dev(i2c_addr).read_byte()

    def write_byte_data(
        self, i2c_addr: int, register: int, value: int, force: bool | None = None
    ) -> None:
        self._dev(i2c_addr).write_byte_data(register, value)

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        return self._dev(i2c_addr).read_byte_data(register)

    def read_i2c_block_data(
        self, i2c_addr: int, register: int, length: int, force: bool | None = None
    ) -> list[int]:
        if not 0 <= length <= 32:
            raise ValueError(f"Desired block length over 32 bytes: {length}")
        return self._dev(i2c_addr).read_i2c_block_data(register, length)

    def write_i2c_block_data(
        self, i2c_addr: int, register: int, data: Sequence[int], force: bool | None = None
    ) -> None:
        self._dev(i2c_addr).write_i2c_block_data(register, data)

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> EmulatedBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- sysfs folder


def _atomic_write(path: Path, text: str) -> None:
    # The emulator's own updates (tach counts, inputs) replace files whole, so a driver never
    # reads half of one.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass
class EmulatedFan:
    max_rpm: int
    tau_s: float = 1.5  # spin-up/down time constant
    rpm: float = 0.0
    edges: float = 0.0  # tach falling edges so far (2 per revolution)
    dead: bool = False

    def step(self, duty_pct: float, dt_s: float, pulses_per_rev: int) -> None:
        target = 0.0 if self.dead else self.max_rpm * max(0.0, min(100.0, duty_pct)) / 100.0
        # Edges over the interval from the average speed, then the exact first-order update.
        before = self.rpm
        self.rpm = target + (self.rpm - target) * math.exp(-dt_s / self.tau_s)
        self.edges += (before + self.rpm) / 2 / 60.0 * pulses_per_rev * dt_s


class EmulatedSysfs:
    """A folder laid out like the L3+'s /sys and /proc parts the drivers use."""

    def __init__(self, root: str | Path, profile: Any, present: Sequence[bool] | None = None):
        self.root = Path(root)
        self.p = profile
        self.gpio_dir = Path(profile.gpio_dir)
        self.pwm_dir = Path(profile.pwm_dir)
        self.interrupts = Path(profile.interrupts_path)
        self.fans = [EmulatedFan(m) for m in profile.fan_max_rpm]
        self.gpio_dir.mkdir(parents=True, exist_ok=True)
        for leaf in ("export", "unexport"):
            (self.gpio_dir / leaf).write_text("")
        numbers = {
            *profile.board_present_gpios, *profile.reset_gpios, *profile.tach_gpios,
            profile.led_red_gpio, profile.led_green_gpio, profile.beeper_gpio,
        }  # fmt: skip
        for n in numbers:
            d = self.gpio_dir / f"gpio{n}"
            d.mkdir(exist_ok=True)
            (d / "direction").write_text("in\n")
            (d / "value").write_text("0\n")
            (d / "edge").write_text("none\n")
        for n in profile.reset_gpios:
            (self.gpio_dir / f"gpio{n}" / "value").write_text("1\n")
        self.set_present(present if present is not None else [True] * profile.chains)
        self.pwm_dir.mkdir(parents=True, exist_ok=True)
        (self.pwm_dir / profile.pwm_period_file).write_text(f"{profile.pwm_period_ns}\n")
        (self.pwm_dir / profile.pwm_duty_file).write_text(f"{profile.pwm_period_ns // 2}\n")
        if profile.pwm_enable_file:
            (self.pwm_dir / profile.pwm_enable_file).write_text("0\n")
        self.interrupts.parent.mkdir(parents=True, exist_ok=True)
        self._write_interrupts()

    def set_present(self, present: Sequence[bool]) -> None:
        for i, n in enumerate(self.p.board_present_gpios):
            on = i < len(present) and present[i]
            _atomic_write(self.gpio_dir / f"gpio{n}" / "value", "1\n" if on else "0\n")

    def gpio_value(self, n: int) -> int:
        return int((self.gpio_dir / f"gpio{n}" / "value").read_text().strip() or 0)

    def led(self, which: str) -> bool:
        n = self.p.led_red_gpio if which == "red" else self.p.led_green_gpio
        return self.gpio_value(n) == 1

    def reset_path(self, chain: int) -> Path:
        """The value file of the chain's ASIC reset line: the chip emulator follows it
        (EmulatedChain.attach_reset_line)."""
        return self.gpio_dir / f"gpio{self.p.reset_gpios[chain]}" / "value"

    def reset_asserted(self, chain: int) -> bool:
        """The chain's ASIC reset line is low: the emulated chips on it are held in reset."""
        return self.gpio_value(self.p.reset_gpios[chain]) == 0

    def duty_pct(self) -> float:
        """The PWM duty the driver last wrote (garbage in the file reads as full speed, safe)."""
        try:
            period = int((self.pwm_dir / self.p.pwm_period_file).read_text().strip())
            ns = int((self.pwm_dir / self.p.pwm_duty_file).read_text().strip())
        except (OSError, ValueError):
            return 100.0
        if period <= 0:
            return 100.0
        on = period - ns if self.p.pwm_inverted else ns
        return max(0.0, min(100.0, 100.0 * on / period))

    def _write_interrupts(self) -> None:
        lines = ["           CPU0", " 16:     104212      INTC  68 Level     gp_timer"]
        for i, (fan, n) in enumerate(zip(self.fans, self.p.tach_gpios, strict=True)):
            lines.append(f"{160 + i:>3}:  {int(fan.edges):>9}      GPIO  {n} Edge  gpiolib")
        lines.append(" 70:      31337      INTC  70 Level     44e0b000.i2c")
        _atomic_write(self.interrupts, "\n".join(lines) + "\n")

    def step(self, dt_s: float) -> None:
        duty = self.duty_pct()
        for fan in self.fans:
            fan.step(duty, dt_s, self.p.fan_pulses_per_rev)
        self._write_interrupts()

    def airflow_pct(self) -> float:
        """Airflow as a share of the fans' combined top speed (what cools the boards)."""
        total = sum(f.max_rpm for f in self.fans)
        return 0.0 if total == 0 else 100.0 * sum(f.rpm for f in self.fans) / total


# --------------------------------------------------------------------------- the whole board


class SimClock:
    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class EmulatedPeripherals:
    """Every peripheral of an emulated L3+ class board, on one simulated clock.

    bus: the controller's I2C bus (PICs, plus the TMP75s the profile lists);
    chip_bus(chain, sensor): the I2C bus behind a sensor chip's I2C master (a TMP451 at 0x4C);
    sysfs: the folder (fans, GPIOs, LEDs); thermal: the model (chip_temp_c(chain) for the chips)."""

    def __init__(
        self,
        profile: Any,
        root: str | Path,
        *,
        ambient_c: float = 25.0,
        present: Sequence[bool] | None = None,
        pic_watchdog_s: float | None = None,
    ) -> None:
        self.profile = profile
        self.clock = SimClock()
        n = profile.chains
        self.thermal = ThermalModel(n, ambient_c)
        self.sysfs = EmulatedSysfs(root, profile, present)
        self.pics = [
            EmulatedPic(profile.pic_addresses[i], i, self.clock, watchdog_s=pic_watchdog_s)
            for i in range(n)
        ]
        self.tmp75s = [
            EmulatedTmp75(a, lambda: self.thermal.ambient_c + 8.0) for a in profile.tmp75_addresses
        ]
        self.bus = EmulatedBus([*self.pics, *self.tmp75s], name="i2c-0 (emulated)")
        self.chip_sensors = [
            [
                EmulatedTmp451(
                    local=lambda c=c, k=k: self.thermal.board_temp_c(c) + 2.0 * k,
                    remote=lambda c=c: self.thermal.chip_temp_c(c),
                    address=profile.chip_sensor_address,
                )
                for k in range(len(profile.sensor_chip_addresses))
            ]
            for c in range(n)
        ]
        self._chip_buses = [
            [EmulatedBus([s], name=f"chain {c} sensor {k}") for k, s in enumerate(sensors)]
            for c, sensors in enumerate(self.chip_sensors)
        ]
        self._sync_thermal()

    def chip_bus(self, chain: int, sensor: int = 0) -> EmulatedBus:
        return self._chip_buses[chain][sensor]

    # --- inputs from the chip emulator

    def set_chain_clock(self, chain: int, freq_mhz: float, chips: int) -> None:
        """The chip emulator reports each chain's PLL frequency and live chip count."""
        self.thermal.set_chain(chain, freq_mhz=float(freq_mhz), chips=int(chips))

    def chain_powered(self, chain: int) -> bool:
        """DC-DC on (the PIC) and the board plugged: the chips have power."""
        present = self.sysfs.gpio_value(self.profile.board_present_gpios[chain]) == 1
        return present and self.pics[chain].dc_dc_on

    def chip_temp_c(self, chain: int) -> float:
        return self.thermal.chip_temp_c(chain)

    # --- time

    def _sync_thermal(self) -> None:
        for i, pic in enumerate(self.pics):
            self.thermal.set_chain(i, powered=self.chain_powered(i), voltage_v=pic.voltage_v)
        self.thermal.fan_pct = self.sysfs.airflow_pct()

    def advance(self, dt_s: float, max_step_s: float = 0.5) -> None:
        """Move simulated time forward by dt_s, in steps no longer than max_step_s."""
        if not (math.isfinite(dt_s) and dt_s >= 0):
            raise ValueError(f"dt_s must be a finite number >= 0, got {dt_s!r}")
        remaining = dt_s
        while remaining > 1e-12:
            h = min(max_step_s, remaining)
            self.clock.now += h
            for pic in self.pics:
                pic.tick(self.clock.now)
            self.sysfs.step(h)
            self._sync_thermal()
            self.thermal.advance(h)
            remaining -= h

    async def run(self, tick_s: float = 0.1, speed: float = 1.0) -> None:
        """Follow the event loop's clock (x speed) until cancelled: for `doge-agent emulate`."""
        import asyncio

        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(tick_s)
            now = loop.time()
            self.advance((now - last) * speed)
            last = now

    # --- fault injection

    def force_chip_sensor(self, chain: int, raw_high: int | None, sensor: int = 0) -> None:
        """Every temperature read of that TMP451 returns raw_high (0, 255...); None restores."""
        self.chip_sensors[chain][sensor].forced_high = raw_high

    def force_tmp75(self, raw_word: int | None, index: int = 0) -> None:
        self.tmp75s[index].forced_raw = raw_word

    def kill_fan(self, index: int, dead: bool = True) -> None:
        self.sysfs.fans[index].dead = dead

    def fail_pic(self, chain: int, mode: str | None = "nack") -> None:
        """mode "nack": the bus reports remote I/O errors; "silent": reads 0xFF, writes ignored;
        None: answers again."""
        if mode not in (None, "nack", "silent"):
            raise ValueError(f"PIC fault mode must be None, 'nack' or 'silent', got {mode!r}")
        self.pics[chain].fault = mode

    def unplug(self, chain: int, plugged: bool = False) -> None:
        present = [
            self.sysfs.gpio_value(n) == 1
            for n in self.profile.board_present_gpios[: self.profile.chains]
        ]
        present[chain] = plugged
        self.sysfs.set_present(present)
