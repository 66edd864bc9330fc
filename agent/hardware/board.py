"""A board's peripherals, built from its profile: the I2C bus, PICs, sensors, fans, GPIO lines,
LEDs; board presence and the ASIC reset lines; the PIC heartbeat and LED tasks.

Board.open(profile) opens smbus2.SMBus on a real controller, or takes the emulator's SMBus-shaped
object when profile.i2c_bus == "emulated", or the link to an emulator in another process
("unix:PATH", agent/hardware/linkbus.py). The chains (agent/hardware/chain.py) are made through
build_chains(factory): the factory is called once per present chain with (chain index, UART path,
board) and returns whatever object drives that chain, so this module does not depend on it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent import defaults as D
from agent.hardware import gpio as G
from agent.hardware.fans import FanReading, Fans
from agent.hardware.leds import Led, status_patterns
from agent.hardware.pic import Pic, PicError, heartbeat_loop
from agent.hardware.profile import Profile
from agent.hardware.sensors import Reading, Tmp75

log = logging.getLogger(__name__)

ChainFactory = Callable[[int, str, "Board"], Any]


class BoardError(Exception):
    """The board cannot be opened or a board-level action failed; names the device."""


def open_bus(profile: Profile, emulator: Any = None) -> Any:
    """The controller's I2C bus: smbus2.SMBus(n or path), or the emulator's bus object."""
    if profile.i2c_bus == "emulated":
        if emulator is None:
            raise BoardError('i2c_bus = "emulated" needs the emulator (agent.emulator.peripherals)')
        return emulator.bus
    if isinstance(profile.i2c_bus, str) and profile.i2c_bus.startswith("unix:"):
        from agent.hardware.linkbus import LinkBus  # an emulator in its own process

        return LinkBus(profile.i2c_bus)
    try:
        import smbus2
    except ImportError as e:  # pragma: no cover - smbus2 is a dependency
        raise BoardError(f"I2C bus {profile.i2c_bus}: smbus2 is not installed ({e})") from None
    try:
        return smbus2.SMBus(profile.i2c_bus)
    except OSError as e:
        raise BoardError(f"I2C bus {profile.i2c_bus}: cannot open: {e.strerror or e}") from None


@dataclass
class Board:
    profile: Profile
    bus: Any
    pics: list[Pic]
    tmp75s: list[Tmp75]
    fans: Fans
    present_lines: list[G.Gpio]
    reset_lines: list[G.Gpio]
    red: Led
    green: Led
    beeper: G.Gpio | None
    chains: list[Any] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)  # device -> latest problem
    problem_count: int = 0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    # --- construction

    @classmethod
    def open(cls, profile: Profile, *, emulator: Any = None) -> Board:
        """Open the bus and every line, set the fans to boot duty (100 %). Raises BoardError
        naming the first device that cannot be set up."""
        p = profile
        bus = open_bus(p, emulator)
        try:
            pics = [
                Pic(bus, p.pic_addresses[i], i, step_delay_s=p.pic_step_delay_s,
                    expected_version=p.pic_firmware_version)
                for i in range(p.chains)
            ]  # fmt: skip
            tmp75s = [Tmp75(bus, a) for a in p.tmp75_addresses]
            gd = p.gpio_dir
            present = [
                G.input_(p.board_present_gpios[i], gd, f"chain {i} present")
                for i in range(p.chains)
            ]
            # Reset lines idle high: exporting them as "high" never glitches the chips into reset.
            reset = [G.output(p.reset_gpios[i], gd, f"chain {i} reset", 1) for i in range(p.chains)]
            red_line = G.output(p.led_red_gpio, gd, "red LED", 0)
            green_line = G.output(p.led_green_gpio, gd, "green LED", 0)
            beeper = G.output(p.beeper_gpio, gd, "beeper", 0)
            for i, n in enumerate(p.tach_gpios):
                G.input_(n, gd, f"fan {i} tach", edge=p.tach_edge)
            fans = Fans(
                p.pwm_dir, p.interrupts_path, period_ns=p.pwm_period_ns, max_rpm=p.fan_max_rpm,
                period_file=p.pwm_period_file, duty_file=p.pwm_duty_file,
                enable_file=p.pwm_enable_file, inverted=p.pwm_inverted, irq_match=p.tach_irq_match,
                pulses_per_rev=p.fan_pulses_per_rev, rpm_cap=p.fan_rpm_cap,
            )  # fmt: skip
            fans.open(D.FAN_BOOT_DUTY_PCT)  # boot step 1: fans 100 % before anything is known
        except OSError as e:
            with contextlib.suppress(Exception):
                bus.close()
            raise BoardError(f"board {p.name}: {e}") from None
        board = cls(
            profile=p, bus=bus, pics=pics, tmp75s=tmp75s, fans=fans, present_lines=present,
            reset_lines=reset, red=Led("red", red_line.write), green=Led("green", green_line.write),
            beeper=beeper,
        )  # fmt: skip
        for t in tmp75s:
            try:
                t.configure()
            except OSError as e:
                board.report(t.name, str(e))
        return board

    def build_chains(self, factory: ChainFactory) -> list[Any]:
        """The hook for agent/hardware/chain.py: factory(index, uart, board) for every present
        chain that has a UART; absent chains get None so indexes stay chain numbers."""
        if self.profile.uarts and len(self.profile.uarts) < self.profile.chains:
            raise BoardError(f"board {self.profile.name}: fewer UARTs than chains")
        present = self.present()
        self.chains = [
            factory(i, self.profile.uarts[i], self) if present[i] and self.profile.uarts else None
            for i in range(self.profile.chains)
        ]
        return self.chains

    # --- problems

    def report(self, device: str, problem: str) -> None:
        """Record a problem (counted, logged once per change); problems never raise."""
        self.problem_count += 1
        if self.problems.get(device) != problem:
            log.warning("%s", problem)  # problems name their device
        self.problems[device] = problem

    def clear(self, device: str) -> None:
        if self.problems.pop(device, None) is not None:
            log.info("%s: ok again", device)  # fmt: skip

    # --- presence, reset, power

    def present(self) -> list[bool]:
        """Board-present lines ('1' = plugged). An unreadable line counts as absent, reported."""
        out = []
        for i, line in enumerate(self.present_lines):
            try:
                out.append(line.read() == 1)
            except G.GpioError as e:
                self.report(f"chain {i} present", str(e))
                out.append(False)
        return out

    async def reset_chain(self, chain: int) -> None:
        """ASIC reset: line low for reset_pulse_s then high, twice, then wait (boot step 4)."""
        line = self.reset_lines[chain]
        pulse = self.profile.reset_pulse_s
        for _ in range(D.ASIC_RESET_PULSES):
            line.write(0)
            await asyncio.sleep(pulse)
            line.write(1)
            await asyncio.sleep(pulse)

    def hold_reset(self, chain: int, held: bool = True) -> None:
        """Keep the chips in reset (cuts idle draw further while powered down)."""
        self.reset_lines[chain].write(0 if held else 1)

    async def power_on(self, chain: int) -> None:
        """PIC reset, jump to app, version check, DC-DC on, settle (boot steps 2-3)."""
        pic = self.pics[chain]
        await pic.power_on(self.profile.pic_reset_wait_s)
        await asyncio.sleep(self.profile.pic_dcdc_settle_s)

    async def power_off(self, chain: int, reason: str) -> bool:
        """DC-DC off and chips held in reset; True when the PIC took the command."""
        log.warning("chain %d: power off: %s", chain, reason)
        ok = True
        try:
            await self.pics[chain].set_dc_dc(False)
        except PicError as e:
            self.report(f"chain {chain} PIC", str(e))
            ok = False
        with contextlib.suppress(G.GpioError):
            self.hold_reset(chain)
        return ok

    async def power_off_all(self, reason: str) -> bool:
        results = [await self.power_off(i, reason) for i in range(self.profile.chains)]
        return all(results)

    # --- sensors and fans

    def read_sensors(self) -> list[Reading]:
        out = []
        for t in self.tmp75s:
            r = t.read()
            if r.ok:
                self.clear(t.name)
            else:
                self.report(t.name, r.problem or "implausible reading")
            out.append(r)
        return out

    def fan_status(self) -> list[dict[str, Any]]:
        """The latest fan readings in the shape State.set_fans takes."""
        duty = self.fans.duty_pct or 0.0
        if not self.fans.readings:
            return [{"rpm": None, "duty_pct": duty} for _ in range(self.fans.count)]
        return [{"rpm": r.rpm, "duty_pct": r.duty_pct} for r in self.fans.readings]

    async def _fan_loop(self, interval_s: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.sample_fans(loop.time())
            await asyncio.sleep(interval_s)

    def sample_fans(self, now: float) -> list[FanReading]:
        readings = self.fans.sample(now)
        for r in readings:
            if r.problem:
                self.report(f"fan {r.index}", r.problem)
            else:
                self.clear(f"fan {r.index}")
        return readings

    # --- LEDs and tasks

    def show(self, status: str) -> None:
        """LEDs for a board status: healthy, fault, stopped, locate, booting."""
        red, green = status_patterns(status)
        self.red.set(red)
        self.green.set(green)

    def _pic_problem(self, pic: Pic, problem: str) -> None:
        self.report(f"chain {pic.chain} PIC", problem)

    def start(
        self, heartbeat_s: float = D.PIC_HEARTBEAT_S, fan_sample_s: float = D.FAN_SAMPLE_S
    ) -> None:
        """Start the PIC heartbeats (present chains only), fan sampling and the LED tasks."""
        present = self.present()
        pics = [p for p in self.pics if present[p.chain]]
        self._tasks = [
            asyncio.create_task(
                heartbeat_loop(pics, heartbeat_s, self._pic_problem), name="pic-heartbeat"
            ),
            asyncio.create_task(self._fan_loop(fan_sample_s), name="fan-sampler"),
            self.red.start(),
            self.green.start(),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            # asyncio.wait never raises the tasks' CancelledError, and lets ours through.
            await asyncio.wait(self._tasks)
        self._tasks = []

    async def close(self) -> None:
        await self.stop()
        with contextlib.suppress(Exception):
            self.bus.close()
