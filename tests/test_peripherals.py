"""Board peripherals: PIC, sensors, fans, GPIO, LEDs and board.py, against the emulator.

The drivers run the same code as on the board: an smbus2.SMBus-shaped bus (the emulator's) and
a real folder of sysfs-like files. Byte-level expectations come from reference/chips-bm1485.md §3.
Simulated time for the emulator; events with timeouts for the asyncio tasks, never sleeps."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from agent import defaults as D
from agent.config import loads
from agent.emulator.peripherals import EmulatedBus, EmulatedPeripherals, EmulatedPic
from agent.hardware import fans as F
from agent.hardware import gpio as G
from agent.hardware import leds as L
from agent.hardware import pic as P
from agent.hardware import profile as PR
from agent.hardware import sensors as S
from agent.hardware.board import Board, BoardError


def run(coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def profile(tmp_path: Path) -> PR.Profile:
    return PR.load("emulated", overrides={"sysfs_root": str(tmp_path)})


@pytest.fixture
def emu(profile: PR.Profile, tmp_path: Path) -> EmulatedPeripherals:
    return EmulatedPeripherals(profile, tmp_path, pic_watchdog_s=30.0)


@pytest.fixture
def board(profile: PR.Profile, emu: EmulatedPeripherals) -> Board:
    return Board.open(profile, emulator=emu)


class RecordingBus:
    """Records every SMBus call; replies from a queue."""

    def __init__(self, replies: list[int] | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.replies = list(replies or [])

    def write_byte(self, addr: int, value: int, force: bool | None = None) -> None:
        self.calls.append(("write_byte", addr, value))

    def read_byte(self, addr: int, force: bool | None = None) -> int:
        self.calls.append(("read_byte", addr))
        return self.replies.pop(0)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------- profiles


def test_l3plus_profile_has_the_reference_paths() -> None:
    p = PR.load("l3plus")
    assert p.uarts == ("/dev/ttyO1", "/dev/ttyO2", "/dev/ttyO4", "/dev/ttyO5")
    assert p.i2c_bus == "/dev/i2c-0"
    assert p.pic_addresses == (0x50, 0x51, 0x52, 0x53)
    assert p.board_present_gpios == (51, 48, 47, 44)
    assert p.reset_gpios == (5, 4, 27, 22)
    assert (p.led_red_gpio, p.led_green_gpio, p.beeper_gpio) == (45, 23, 20)
    assert p.tach_gpios == (112, 110) and p.tach_edge == "falling"
    assert p.pwm_dir == "/sys/class/pwm/pwm1" and p.pwm_period_ns == 100000
    assert p.chip_sensor_address == 0x4C and p.sensor_chip_addresses == (0x0C, 0xC9)
    assert p.chains == 4 and p.chips_per_chain == 72 and p.uart_baud == 115200


def test_profile_overrides_from_board_config_and_sysfs_root(tmp_path: Path) -> None:
    cfg = loads(
        f'[board]\nkind = "l3plus"\nuarts = ["/dev/a", "/dev/b"]\nchains = 2\n'
        f'sysfs_root = "{tmp_path}"\ni2c_bus = 1\n'
    )
    p = PR.load("l3plus", cfg.board, overrides={"pwm_inverted": True})
    assert p.uarts == ("/dev/a", "/dev/b") and p.chains == 2 and p.i2c_bus == 1
    assert p.gpio_dir == str(tmp_path / "sys/class/gpio")
    assert p.interrupts_path == str(tmp_path / "proc/interrupts")
    assert p.pwm_inverted is True


def test_profile_errors_name_every_bad_key() -> None:
    with pytest.raises(PR.ProfileError) as e:
        PR.load("l3plus", overrides={"bogus": 1, "pwm_period_ns": "fast"})
    text = str(e.value)
    assert "bogus: unknown profile key" in text and "pwm_period_ns: must be an integer" in text
    with pytest.raises(PR.ProfileError, match="pic_addresses: 2 entries for 4 chains"):
        PR.load("l3plus", overrides={"pic_addresses": [0x50, 0x51]})
    with pytest.raises(PR.ProfileError, match="cannot read"):
        PR.load("no-such-board")


# ---------------------------------------------------------------------------- PIC: pure parts

FRAMES = [
    (P.RESET, (), "55aa07"),
    (P.JUMP_TO_APP, (), "55aa06"),
    (P.ENABLE_DC_DC, (1,), "55aa1501"),
    (P.ENABLE_DC_DC, (0,), "55aa1500"),
    (P.HEARTBEAT, (), "55aa16"),
    (P.VERSION, (), "55aa17"),
    (P.SET_VOLTAGE, (0x80,), "55aa1080"),
    (P.GET_VOLTAGE, (), "55aa18"),
    (P.READ_BOARD_ID, (), "55aa13"),
    (P.SET_FLASH_POINTER, (0x0F, 0xA0), "55aa010fa0"),
    (P.READ_TEMP_OFFSETS, (), "55aa23"),
]


@pytest.mark.parametrize(("code", "args", "hexbytes"), FRAMES)
def test_pic_frames_byte_for_byte(code: int, args: tuple[int, ...], hexbytes: str) -> None:
    assert P.frame(code, args).hex() == hexbytes


def test_pic_frame_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown PIC command 0x99"):
        P.frame(0x99)
    with pytest.raises(ValueError, match="enable DC-DC takes 1 argument"):
        P.frame(P.ENABLE_DC_DC)
    with pytest.raises(ValueError, match="must be bytes"):
        P.frame(P.SET_VOLTAGE, (256,))


def test_pic_voltage_conversion() -> None:
    # 0x80 ≈ 10 V, larger code = lower voltage, about ±1 V over 0x00..0xFE.
    assert P.voltage_from_code(0x80) == 10.0
    assert P.voltage_from_code(0x00) == 11.0
    assert P.voltage_from_code(0xFE) == pytest.approx(9.015625)
    assert P.voltage_from_code(0xC0) == 9.5
    assert P.code_from_voltage(10.5) == 0x40
    for code in range(0xFF):
        assert P.code_from_voltage(P.voltage_from_code(code)) == code
    with pytest.raises(ValueError, match="voltage code"):
        P.voltage_from_code(0xFF)
    with pytest.raises(ValueError, match="PIC voltage must be in"):
        P.code_from_voltage(12.0)


def test_pic_driver_writes_single_bytes_and_reads_replies_one_by_one() -> None:
    bus = RecordingBus(replies=[0x03])
    pic = P.Pic(bus, 0x52, chain=2, step_delay_s=0)
    assert run(pic.version()) == 3
    assert bus.calls == [
        ("write_byte", 0x52, 0x55), ("write_byte", 0x52, 0xAA), ("write_byte", 0x52, 0x17),
        ("read_byte", 0x52),
    ]  # fmt: skip
    bus.calls.clear()
    run(pic.set_dc_dc(True))
    assert [c[2] for c in bus.calls] == [0x55, 0xAA, 0x15, 0x01]


# ---------------------------------------------------------------------------- PIC: on the emulator


def test_pic_power_on_and_commands(board: Board, emu: EmulatedPeripherals) -> None:
    async def go() -> None:
        pic = board.pics[1]
        await board.power_on(1)
        assert emu.pics[1].frames[-4:] == [
            bytes.fromhex("55aa07"), bytes.fromhex("55aa06"), bytes.fromhex("55aa17"),
            bytes.fromhex("55aa1501"),
        ]  # fmt: skip
        assert emu.pics[1].dc_dc_on and not emu.pics[0].dc_dc_on
        assert await pic.set_voltage(9.5) == 0xC0
        assert emu.pics[1].voltage_code == 0xC0
        assert await pic.voltage() == 9.5
        assert await pic.board_id() == b"EMU-L3P-0001"
        await pic.set_temperature_offsets(bytes(range(8)))
        assert await pic.temperature_offsets() == bytes(range(8))
        await pic.set_flash_pointer(0x0FA0)
        assert await pic.flash_pointer() == 0x0FA0
        assert len(await pic.read_flash()) == 16
        await pic.select_mac(0)
        assert len(await pic.read_mac()) == 16
        await pic.set_dc_dc(False)
        assert not emu.pics[1].dc_dc_on

    run(go())


def test_pic_in_loader_ignores_dc_dc_until_jump(board: Board, emu: EmulatedPeripherals) -> None:
    async def go() -> None:
        await board.pics[0].reset()
        await board.pics[0].set_dc_dc(True)
        assert not emu.pics[0].dc_dc_on  # the loader does not know 0x15
        await board.pics[0].jump_to_app()
        await board.pics[0].set_dc_dc(True)
        assert emu.pics[0].dc_dc_on

    run(go())


def test_pic_heartbeat_keeps_dc_dc_on_and_missing_heartbeats_cut_it(
    board: Board, emu: EmulatedPeripherals
) -> None:
    async def go() -> None:
        await board.power_on(0)
        for _ in range(6):  # 60 s with a heartbeat every 10 s
            emu.advance(D.PIC_HEARTBEAT_S)
            assert await board.pics[0].beat() is None
        assert emu.pics[0].dc_dc_on and emu.pics[0].heartbeats == 6
        emu.advance(31.0)  # the emulator's watchdog is 30 s
        assert not emu.pics[0].dc_dc_on and emu.pics[0].watchdog_tripped
        assert not emu.chain_powered(0)

    run(go())


def test_heartbeat_loop_beats_every_pic(board: Board, emu: EmulatedPeripherals) -> None:
    async def go() -> None:
        seen = asyncio.Event()
        original = board.pics[3].heartbeat

        async def spy() -> None:
            await original()
            if board.pics[3].health.heartbeats >= 2:
                seen.set()

        board.pics[3].heartbeat = spy  # type: ignore[method-assign]
        task = asyncio.create_task(P.heartbeat_loop(board.pics, interval_s=0.0))
        await asyncio.wait_for(seen.wait(), 5)
        task.cancel()
        assert all(p.heartbeats >= 2 for p in emu.pics)

    run(go())


@pytest.mark.parametrize("mode", ["nack", "silent"])
def test_pic_that_stops_answering_is_detected_and_named(
    board: Board, emu: EmulatedPeripherals, mode: str
) -> None:
    async def go() -> None:
        pic = board.pics[2]
        assert await pic.beat() is None
        emu.fail_pic(2, mode)
        with pytest.raises(P.PicNotAnswering, match=r"chain 2 PIC 0x52: software version"):
            await pic.version()
        problems = [await pic.beat() for _ in range(D.PIC_DEAD_AFTER_FAILURES)]
        assert all(p is not None and "chain 2 PIC 0x52" in p for p in problems)
        assert "not answering" in problems[-1]
        assert not pic.health.alive
        emu.fail_pic(2, None)
        assert await pic.beat() is None and pic.health.alive

    run(go())


def test_pic_wrong_firmware_version_named(board: Board, emu: EmulatedPeripherals) -> None:
    emu.pics[0].firmware = 0x02
    with pytest.raises(P.PicError, match="chain 0 PIC 0x50: software version: firmware 0x02"):
        run(board.pics[0].check_version())


def test_pic_timeout_and_retry() -> None:
    class Flaky(RecordingBus):
        fails = 1

        def write_byte(self, addr: int, value: int, force: bool | None = None) -> None:
            if self.fails:
                self.fails -= 1
                raise OSError(errno.EREMOTEIO, "Remote I/O error")
            super().write_byte(addr, value)

    pic = P.Pic(Flaky(replies=[3]), 0x50, chain=0, step_delay_s=0)
    assert run(pic.version()) == 3 and pic.health.failures == 1
    slow = P.Pic(RecordingBus(), 0x51, chain=1, step_delay_s=1.0, timeout_s=0.01, retries=2)
    with pytest.raises(P.PicNotAnswering, match=r"chain 1 PIC 0x51: heartbeat: no completion"):
        run(slow.heartbeat())


# ---------------------------------------------------------------------------- sensors

TMP75_VECTORS = [  # TMP75 datasheet table: word -> °C
    (0x7FF0, 127.9375), (0x6400, 100.0), (0x5000, 80.0), (0x1900, 25.0), (0x0300, 3.0),
    (0x0040, 0.25), (0x0000, 0.0), (0xFFC0, -0.25), (0xE700, -25.0), (0xC900, -55.0),
]  # fmt: skip


@pytest.mark.parametrize(("word", "temp"), TMP75_VECTORS)
def test_tmp75_decode(word: int, temp: float) -> None:
    assert S.tmp75_decode(word >> 8, word & 0xFF) == temp
    if -55 <= temp <= 127:
        assert S.tmp75_encode(temp, 12) == (word >> 8, word & 0xFF)


def test_tmp75_resolution_and_plausibility() -> None:
    assert S.tmp75_config(12) == 0x60 and S.tmp75_config(9) == 0x00
    assert S.tmp75_decode(*S.tmp75_encode(25.3, 9)) == 25.0
    assert S.tmp75_decode(*S.tmp75_encode(-0.3, 9)) == -0.5  # truncation toward -inf
    assert S.tmp75_reading("t", 0x19, 0x00).temp_c == 25.0
    for msb, lsb in ((0, 0), (0xFF, 0xFF), (0x80, 0x00), (0x7F, 0xF0)):
        r = S.tmp75_reading("tmp75@0x48", msb, lsb)
        assert r.temp_c is None and r.problem and "tmp75@0x48" in r.problem
    assert S.tmp75_reading("t", 0xE7, 0x00).temp_c == -25.0  # a cold start is plausible
    with pytest.raises(ValueError, match="msb must be a byte"):
        S.tmp75_decode(256, 0)


def test_tmp451_and_ext_temp_sensor_decoding() -> None:
    assert S.tmp451_decode(0x19, 0x80) == 25.5
    assert S.tmp451_decode(0xF6) == -10.0
    assert S.tmp451_decode(0x59, extended=True) == 25.0
    assert S.tmp451_decode(0x00, extended=True) == -64.0
    for t in (-10.5, 0.0625, 45.25, 99.9375):
        assert S.tmp451_decode(*S.tmp451_encode(t)) == t
        assert S.tmp451_decode(*S.tmp451_encode(t, extended=True), extended=True) == t
    for bad in (0, 0xFF):
        r = S.tmp451_reading("chain 1 chip 0x0c remote", bad)
        assert not r.ok and "chain 1 chip 0x0c remote" in (r.problem or "")
    local, remote = S.ext_temp_sensor_decode(0x002D0034, "chain 0 chip 0x0c")
    assert (local.temp_c, remote.temp_c) == (45.0, 52.0)
    local, remote = S.ext_temp_sensor_decode(0x00FF0000, "chain 3 chip 0xc9")
    assert not local.ok and not remote.ok and "chain 3 chip 0xc9 local" in (local.problem or "")
    with pytest.raises(ValueError, match="32-bit"):
        S.ext_temp_sensor_decode(1 << 32)


def test_tmp75_driver_on_the_emulator(board: Board, emu: EmulatedPeripherals) -> None:
    t = board.tmp75s[0]
    assert emu.tmp75s[0].bits == 12  # configured by Board.open
    r = t.read()
    assert r.ok and r.temp_c == pytest.approx(emu.thermal.ambient_c + 8, abs=0.07)
    emu.force_tmp75(0x0000)
    assert board.read_sensors()[0].temp_c is None
    assert "tmp75@0x48" in board.problems["tmp75@0x48"] and t.errors == 1
    emu.force_tmp75(None)
    assert board.read_sensors()[0].ok and "tmp75@0x48" not in board.problems
    gone = S.Tmp75(emu.bus, 0x4F)
    r = gone.read()
    assert not r.ok and "tmp75@0x4f: read failed" in (r.problem or "")


@pytest.mark.parametrize("raw", [0, 255])
def test_chip_side_sensor_fault_flagged(emu: EmulatedPeripherals, raw: int) -> None:
    emu.set_chain_clock(1, 384, 72)
    bus = emu.chip_bus(1)
    assert S.tmp451_reading("chain 1 local", bus.read_byte_data(0x4C, 0)).ok
    emu.force_chip_sensor(1, raw)
    r = S.tmp451_reading("chain 1 chip 0x0c local", bus.read_byte_data(0x4C, 0))
    assert r.temp_c is None and "chain 1 chip 0x0c local" in (r.problem or "")


def test_tmp451_offset_calibration_register(emu: EmulatedPeripherals) -> None:
    bus = emu.chip_bus(0)
    bus.write_byte_data(0x4C, 0x11, 0xD8)  # -40, as the stock calibration starts
    remote = S.tmp451_decode(bus.read_byte_data(0x4C, 1), bus.read_byte_data(0x4C, 0x10))
    assert remote == pytest.approx(emu.chip_temp_c(0), abs=0.07)


# ---------------------------------------------------------------------------- fans


def test_fan_pure_parts() -> None:
    assert F.duty_to_ns(50, 100000) == 50000  # duty_ns = 1000 x percent on the L3+
    assert F.duty_to_ns(100, 100000) == 100000 and F.duty_to_ns(0, 100000) == 0
    assert F.duty_to_ns(30, 100000, inverted=True) == 70000
    assert F.ns_to_duty(70000, 100000, inverted=True) == 30.0
    with pytest.raises(ValueError, match=r"fan duty must be 0\.\.100"):
        F.duty_to_ns(101, 100000)
    text = (
        "           CPU0       CPU1\n"
        " 16:     104212          3      INTC  68 Level     gp_timer\n"
        "160:        100         20      GPIO  112 Edge  gpiolib\n"
        "161:         55          0      GPIO  110 Edge  gpiolib\n"
    )
    assert F.parse_interrupts(text, "gpiolib") == [120, 55]
    assert F.rpm_from_counts(120, 1.0, 2, 6600) == 3600
    assert F.rpm_from_counts(1000, 1.0, 2, 6600) == 6600
    assert F.rpm_from_counts(-5, 1.0, 2, 6600) is None
    assert F.rpm_from_counts(5, 0.0, 2, 6600) is None
    timer = F.GraceTimer(10.0)
    assert not timer.update(True, 0.0) and not timer.update(None, 5.0)
    assert not timer.update(True, 10.0) and timer.update(True, 10.5)
    assert not timer.update(False, 11.0)


def test_fans_pwm_and_tach_on_the_emulator(board: Board, emu: EmulatedPeripherals) -> None:
    duty_file = Path(board.profile.pwm_dir) / "duty_ns"
    assert duty_file.read_text().strip() == "100000"  # boot: 100 %
    board.sample_fans(emu.clock.now)
    for _ in range(10):
        emu.advance(1.0)
        readings = board.sample_fans(emu.clock.now)
    assert readings[0].rpm == pytest.approx(4300, rel=0.05)
    assert readings[1].rpm == pytest.approx(3600, rel=0.05)
    board.fans.set_duty(40)
    assert duty_file.read_text().strip() == "40000" and board.fans.read_duty() == 40.0
    # the thermal loop sets the duty every second: an unchanged one is not written again
    # (each write opens the sysfs file) until FAN_PWM_REWRITE_S has passed
    duty_file.write_text("12345\n")  # a PWM reset under us
    board.fans.set_duty(40)
    assert duty_file.read_text().strip() == "12345"
    board.fans._written_at -= D.FAN_PWM_REWRITE_S
    board.fans.set_duty(40)
    assert duty_file.read_text().strip() == "40000"
    emu.advance(1.0)
    after_one = board.sample_fans(emu.clock.now)[0].rpm
    for _ in range(10):
        emu.advance(1.0)
        settled = board.sample_fans(emu.clock.now)[0].rpm
    assert after_one is not None and settled is not None
    assert settled < after_one < 4300  # inertia: slows down over seconds, not at once
    assert settled == pytest.approx(4300 * 0.4, rel=0.05)
    assert not board.problems


def test_dead_fan_detected_after_grace(board: Board, emu: EmulatedPeripherals) -> None:
    board.sample_fans(emu.clock.now)
    emu.advance(5.0)
    board.sample_fans(emu.clock.now)
    emu.kill_fan(1)
    seen_dead_at = None
    for _ in range(20):
        emu.advance(1.0)
        r = board.sample_fans(emu.clock.now)[1]
        if r.dead and seen_dead_at is None:
            seen_dead_at = emu.clock.now
    assert seen_dead_at is not None and seen_dead_at > 5.0 + D.FAN_DEAD_GRACE_S
    assert board.problems["fan 1"].startswith("fan 1: 0 rpm at 100 % duty")
    assert not board.fans.readings[0].dead


def test_inverted_pwm_profile(tmp_path: Path) -> None:
    p = PR.load("emulated", overrides={"sysfs_root": str(tmp_path), "pwm_inverted": True})
    b = Board.open(p, emulator=EmulatedPeripherals(p, tmp_path))
    b.fans.set_duty(25)
    assert (Path(p.pwm_dir) / "duty_ns").read_text().strip() == "75000"


# ---------------------------------------------------------------------------- GPIO


def test_gpio_on_a_folder(tmp_path: Path) -> None:
    (tmp_path / "export").write_text("")
    (tmp_path / "gpio7").mkdir()
    for leaf, text in (("direction", "in"), ("value", "0"), ("edge", "none")):
        (tmp_path / "gpio7" / leaf).write_text(text)
    g = G.output(7, tmp_path, "test line", 1)
    assert g.direction() == "high"
    g.write(0)
    assert g.read() == 0 and (tmp_path / "gpio7" / "value").read_text() == "0"
    g.set_edge("falling")
    assert (tmp_path / "gpio7" / "edge").read_text() == "falling"
    (tmp_path / "gpio7" / "value").write_text("x")
    with pytest.raises(G.GpioError, match=r"test line \(gpio7\): value reads 'x'"):
        g.read()
    with pytest.raises(G.GpioError, match="direction must be one of"):
        g.set_direction("sideways")


def test_gpio_export_that_never_appears(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "export").write_text("")
    monkeypatch.setattr(G, "EXPORT_WAIT_S", 0.05)
    with pytest.raises(G.GpioError, match=r"chain 9 reset \(gpio99\): export"):
        G.output(99, tmp_path, "chain 9 reset", 1)
    assert (tmp_path / "export").read_text().strip() == "99"


# ---------------------------------------------------------------------------- LEDs


def test_led_pattern_timing() -> None:
    assert not L.level("off", 3.0) and L.level("on", 3.0)
    assert L.level("blink_slow", 0.0) and L.level("blink_slow", 0.99)
    assert not L.level("blink_slow", 1.0) and L.level("blink_slow", 2.0)
    assert L.level("blink_fast", 0.1) and not L.level("blink_fast", 0.3)
    hb = [L.level("heartbeat", t) for t in (0.05, 0.15, 0.25, 0.35, 1.0, 1.45)]
    assert hb == [True, False, True, False, False, True]
    assert L.next_change("on", 1.0) is None
    assert L.next_change("blink_slow", 0.0) == 1.0
    assert L.next_change("blink_slow", 1.5) == 2.0
    assert L.next_change("heartbeat", 0.35) == pytest.approx(1.4)
    with pytest.raises(ValueError, match="unknown LED pattern 'disco'"):
        L.level("disco", 0)
    assert L.status_patterns("healthy") == ("off", "blink_slow")
    assert L.status_patterns("fault") == ("blink_slow", "off")


def test_led_task_writes_the_gpio(board: Board, emu: EmulatedPeripherals) -> None:
    async def go() -> None:
        green = board.green
        green.start()
        green.set("on")
        await asyncio.wait_for(green.written.wait(), 2)
        assert emu.sysfs.led("green") and not emu.sysfs.led("red")
        green.written.clear()
        green.set("blink_fast")  # lit first, then off after 0.2 s
        levels = []
        for _ in range(2):
            await asyncio.wait_for(green.written.wait(), 2)
            green.written.clear()
            levels.append(emu.sysfs.led("green"))
        assert levels == [False, True]
        board.show("fault")
        board.red.start()
        await asyncio.wait_for(board.red.written.wait(), 2)
        assert emu.sysfs.led("red")
        await board.stop()
        await green.stop()
        await board.red.stop()

    run(go())


# ---------------------------------------------------------------------------- board


def test_board_builds_everything_from_the_emulated_profile(
    board: Board, emu: EmulatedPeripherals
) -> None:
    assert [p.address for p in board.pics] == [0x50, 0x51, 0x52, 0x53]
    assert [t.address for t in board.tmp75s] == [0x48]
    assert board.fans.count == 2 and board.present() == [True] * 4
    assert all(emu.sysfs.gpio_value(n) == 1 for n in board.profile.reset_gpios)
    assert (Path(board.profile.gpio_dir) / "gpio112" / "edge").read_text() == "falling"


def test_board_chain_hook_and_presence(profile: PR.Profile, tmp_path: Path) -> None:
    uarts = [f"/dev/pts/{i}" for i in range(4)]
    p = PR.load("emulated", overrides={"sysfs_root": str(tmp_path), "uarts": uarts})
    emu = EmulatedPeripherals(p, tmp_path)
    emu.unplug(2)
    b = Board.open(p, emulator=emu)
    made = b.build_chains(lambda i, uart, board: (i, uart, board is b))
    assert made == [(0, "/dev/pts/0", True), (1, "/dev/pts/1", True), None, (3, "/dev/pts/3", True)]


def test_board_reset_and_power_off(board: Board, emu: EmulatedPeripherals) -> None:
    async def go() -> None:
        levels: list[int] = []
        line = board.reset_lines[0]
        real = line.write

        def spy(level: int | bool) -> None:
            levels.append(int(level))
            real(level)

        line.write = spy  # type: ignore[method-assign]
        await board.reset_chain(0)
        assert levels == [0, 1, 0, 1] and not emu.sysfs.reset_asserted(0)
        for i in range(4):
            await board.power_on(i)
        emu.fail_pic(3, "nack")
        assert await board.power_off_all("over temperature") is False
        assert not any(p.dc_dc_on for p in emu.pics[:3]) and emu.pics[3].dc_dc_on
        assert "chain 3 PIC 0x53" in board.problems["chain 3 PIC"]
        assert all(emu.sysfs.reset_asserted(i) for i in range(4))

    run(go())


def test_board_heartbeat_task_reports_a_silent_pic(board: Board, emu: EmulatedPeripherals) -> None:
    async def go() -> None:
        reported = asyncio.Event()
        real = board.report

        def spy(device: str, problem: str) -> None:
            real(device, problem)
            if device == "chain 1 PIC" and "not answering" in problem:
                reported.set()

        board.report = spy  # type: ignore[method-assign]
        sampled = asyncio.Event()
        real_sample = board.sample_fans

        def sample_spy(now: float) -> list[F.FanReading]:
            out = real_sample(now)
            if len(sampled_at) == 1:
                sampled.set()
            sampled_at.append(now)
            return out

        sampled_at: list[float] = []
        board.sample_fans = sample_spy  # type: ignore[method-assign]
        emu.fail_pic(1, "silent")
        assert board.fan_status() == [{"rpm": None, "duty_pct": 100.0}] * 2
        board.start(heartbeat_s=0.0, fan_sample_s=0.0)
        await asyncio.wait_for(reported.wait(), 5)
        await asyncio.wait_for(sampled.wait(), 5)
        assert [f["duty_pct"] for f in board.fan_status()] == [100.0, 100.0]
        await board.close()
        assert board.bus.closed

    run(go())


def test_board_open_errors(tmp_path: Path) -> None:
    p = PR.load("emulated", overrides={"sysfs_root": str(tmp_path)})
    with pytest.raises(BoardError, match="needs the emulator"):
        Board.open(p)
    bad_bus = {"sysfs_root": str(tmp_path), "i2c_bus": "/nonexistent/i2c-9"}
    real = PR.load("l3plus", overrides=bad_bus)
    with pytest.raises(BoardError, match="I2C bus /nonexistent/i2c-9: cannot open"):
        Board.open(real)


def test_emulated_bus_is_smbus_shaped() -> None:
    import smbus2

    for name in ("read_byte", "write_byte", "read_byte_data", "write_byte_data",
                 "read_i2c_block_data", "write_i2c_block_data", "close"):  # fmt: skip
        assert callable(getattr(smbus2.SMBus, name)) and callable(getattr(EmulatedBus, name))
    bus = EmulatedBus([EmulatedPic(0x50, 0, lambda: 0.0)])
    with pytest.raises(OSError) as e:
        bus.read_byte(0x77)
    assert e.value.errno == errno.EREMOTEIO


def test_an_output_gpio_keeps_its_value_file_open_and_reopens_after_a_failure(
    tmp_path: Path,
) -> None:
    """An LED blinks for as long as the agent runs: write() keeps the value file open rather
    than opening it per write; a failed write names the line and the next one opens afresh."""
    from agent.hardware.gpio import Gpio, GpioError

    (tmp_path / "gpio7").mkdir()
    value = tmp_path / "gpio7" / "value"
    value.write_text("0\n")
    g = Gpio(7, tmp_path, "led")
    g.write(1)
    assert value.read_text().strip() == "1"
    fd = g._value_fd
    g.write(0)
    assert g._value_fd == fd and value.read_text().strip() == "0"
    g.close()
    (tmp_path / "gpio7" / "value").unlink()
    (tmp_path / "gpio7").rmdir()  # unexported under us
    with pytest.raises(GpioError, match=r"led \(gpio7\): write value=1"):
        g.write(1)
    assert g._value_fd is None
    (tmp_path / "gpio7").mkdir()
    value.write_text("0\n")  # exported again
    g.write(1)
    assert value.read_text().strip() == "1"
    g.close()
    g.close()
