"""control.thermal: the decision table, the loop shell, a closed loop on the emulator model."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agent.control import thermal as T
from agent.control.thermal import Fan, ThermalLoop, ThermalMemory, ThermalOptions, decide
from agent.emulator.thermal import ThermalModel

OPT = ThermalOptions()
SPIN = [Fan(0, 3000, 50.0), Fan(1, 2800, 50.0)]


def run(readings, fans=SPIN, options=OPT, memory=None, now=0.0):
    return decide(readings, fans, options, memory, now)


# ---------------------------------------------------------------------------- options


def test_options_from_config_and_validation():
    o = ThermalOptions.from_config(
        {"target_temp_c": 55, "hot_temp_c": 70, "mode": "immersion", "x": 1}
    )
    assert (o.target_temp_c, o.hot_temp_c, o.dangerous_temp_c, o.immersion) == (55, 70, 85.0, True)
    assert ThermalOptions.from_config(None) == ThermalOptions()

    class Section:
        target_temp_c = 58.0
        mode = "air"

    assert ThermalOptions.from_config(Section()).target_temp_c == 58.0
    with pytest.raises(ValueError, match="mode"):
        ThermalOptions(mode="oil")
    with pytest.raises(ValueError, match="rearm < target"):
        ThermalOptions(hot_temp_c=90)
    with pytest.raises(ValueError, match="fan limits"):
        ThermalOptions(fan_min_pct=-1)
    with pytest.raises(ValueError, match="throttle_min_pct"):
        ThermalOptions(rearm_freq_pct=10)


# ---------------------------------------------------------------------------- readings


@pytest.mark.parametrize(
    ("value", "previous", "why"),
    [
        (None, None, "no reading"),
        ("61", None, "not a number"),
        (True, None, "not a number"),
        (float("nan"), None, "not finite"),
        (0, None, "sentinel"),
        (255, None, "sentinel"),
        (-60.0, None, "outside"),
        (130.0, None, "outside"),
        (90.0, 50.0, "jumped"),
    ],
)
def test_untrusted_readings(value, previous, why):
    temp, problem = T.judge_reading(value, previous, OPT)
    assert temp is None and why in problem


def test_trusted_reading():
    assert T.judge_reading(61, 55.0, OPT) == (61.0, None)


@pytest.mark.parametrize("bad", [None, 0, 255, 200.0, float("inf")])
def test_any_bad_reading_means_fans_full(bad):
    d = run({0: [50.0, bad], 1: [52.0]})
    assert d.fan_duty_pct == 100.0 and d.fan_code == "unknown_temp"
    assert "chain 0 sensor 1" in d.fan_reason
    assert d.action(0).action == "run" and d.action(0).code == "ok"  # other sensor still trusted
    assert d.hottest_c == 52.0


def test_chain_without_readings_is_blind_then_tripped():
    d = run({0: [None, None], 1: [50.0]})
    assert d.fan_duty_pct == 100.0 and d.action(0).code == "blind"
    d = run({0: [], 1: [50.0]}, memory=d.memory, now=OPT.sensor_lost_s)
    assert d.action(0).action == "power_off" and d.action(0).code == "sensor_lost"
    assert "sensor_lost" in d.flags and "no trusted temperature" in d.action(0).reason
    # a chain known from memory but absent from the readings is still judged
    d = run({1: [50.0]}, memory=d.memory, now=OPT.sensor_lost_s + 1)
    assert d.action(0).code == "cooldown" and "no trusted reading" in d.action(0).reason


def test_no_chains_at_all():
    d = run({})
    assert d.fan_duty_pct == 100.0 and d.fan_code == "unknown_temp" and d.chains == ()


def test_jump_is_rejected_once_then_trusted_if_it_stays():
    d = run({0: [50.0]})
    d = run({0: [80.0]}, memory=d.memory, now=1)
    assert d.fan_code == "unknown_temp" and "jumped" in d.fan_reason
    d = run({0: [80.0]}, memory=d.memory, now=2)
    assert d.fan_code == "hot" and d.action(0).code == "hot"


# ---------------------------------------------------------------------------- fan PID


def test_pid_pulls_toward_target_and_clamps():
    cool = run({0: [30.0]})
    assert cool.fan_code == "pid" and cool.fan_duty_pct == OPT.fan_min_pct
    warm = run({0: [70.0]})
    assert warm.fan_code == "pid" and warm.fan_duty_pct == 90.0  # 50 + 4 x 10
    assert "target 60" in warm.fan_reason


def test_pid_integral_anti_windup():
    m = ThermalMemory()
    for t in range(1000):  # far above target for a long time: the output saturates
        d = run({0: [74.0]}, memory=m, now=float(t))
        m = d.memory
    assert d.fan_duty_pct == 100.0
    assert m.integral <= OPT.fan_max_pct - OPT.bias_pct  # bounded: no wind-up
    wound = m.integral
    # back to target: the output falls at once instead of staying at 100 % for minutes
    d = run({0: [60.0]}, memory=m, now=1000.0)
    assert d.fan_duty_pct < 100.0 and d.memory.integral <= wound


def test_pid_integral_removes_steady_error():
    m = ThermalMemory()
    duties = []
    for t in range(100):
        d = run({0: [62.0]}, memory=m, now=float(t))
        m = d.memory
        duties.append(d.fan_duty_pct)
    assert duties[-1] > duties[1]  # a constant error keeps adding fan


def test_derivative_on_measurement():
    d = run({0: [60.0]})
    rising = run({0: [62.0]}, memory=d.memory, now=1.0)
    flat = run({0: [62.0]}, memory=ThermalMemory(t=0.0, last_temp_c=62.0), now=1.0)
    assert rising.fan_duty_pct > flat.fan_duty_pct


def test_hot_means_full_fans_and_throttle_steps():
    d = run({0: [76.0], 1: [60.0]})
    assert d.fan_duty_pct == 100.0 and d.fan_code == "hot"
    a = d.action(0)
    assert (a.action, a.code, a.freq_pct) == ("throttle", "hot", 90.0)
    assert d.action(1).action == "run"
    # no second step before the interval
    d = run({0: [76.0], 1: [60.0]}, memory=d.memory, now=1)
    assert d.action(0).freq_pct == 90.0
    m, t = d.memory, 1.0
    for _ in range(20):
        t += OPT.throttle_interval_s
        d = run({0: [76.0], 1: [60.0]}, memory=m, now=t)
        m = d.memory
    assert d.action(0).freq_pct == OPT.throttle_min_pct
    # between hot - margin and hot: hold
    t += OPT.throttle_interval_s
    d = run({0: [72.0], 1: [60.0]}, memory=m, now=t)
    assert d.action(0).code == "cooling" and d.action(0).freq_pct == OPT.throttle_min_pct
    # below hot - margin: step back up to 100 %, then run
    m = d.memory
    for _ in range(10):
        t += OPT.throttle_interval_s
        d = run({0: [65.0], 1: [60.0]}, memory=m, now=t)
        m = d.memory
    assert d.action(0).action == "run" and d.action(0).freq_pct == 100.0


# ---------------------------------------------------------------------------- dangerous


def test_dangerous_trips_latches_cools_down_and_rearms():
    d = run({0: [86.0], 1: [60.0]})
    a = d.action(0)
    assert (a.action, a.code) == ("power_off", "overheat") and "dangerous 85" in a.reason
    assert "overheat" in d.flags and d.action(1).action == "run"
    # cool but too soon
    d = run({0: [40.0], 1: [60.0]}, memory=d.memory, now=10)
    assert d.action(0).code == "cooldown" and "cooling down" in d.action(0).reason
    # long enough but still warm
    d = run({0: [55.0], 1: [60.0]}, memory=d.memory, now=OPT.cooldown_s + 1)
    assert d.action(0).code == "cooldown"
    # both: re-armed at a reduced clock
    d = run({0: [45.0], 1: [60.0]}, memory=d.memory, now=OPT.cooldown_s + 2)
    a = d.action(0)
    assert (a.action, a.code, a.freq_pct) == ("throttle", "rearmed", OPT.rearm_freq_pct)
    assert d.memory.chains[0].trips == 1


def test_too_many_trips_lock_the_chain_out():
    o = ThermalOptions(max_jump_c=100)
    m, t = None, 0.0
    for _ in range(OPT.max_trips):
        d = run({0: [86.0]}, memory=m, now=t, options=o)
        assert d.action(0).code == "overheat"
        t += OPT.cooldown_s + 1
        d = run({0: [45.0]}, memory=d.memory, now=t, options=o)
        m = d.memory
        t += 1
    a = d.action(0)
    assert (a.action, a.code) == ("power_off", "locked_out") and "until restart" in a.reason
    assert "locked_out" in d.flags


# ---------------------------------------------------------------------------- fans


def test_fan_failure_after_grace_powers_everything_off_then_rearms():
    dead = [Fan(0, 0, 60.0), Fan(1, 2800, 60.0)]
    d = run({0: [60.0], 1: [60.0]}, fans=dead)
    assert d.action(0).action == "run"  # within the grace period
    d = run({0: [60.0], 1: [60.0]}, fans=dead, memory=d.memory, now=OPT.fan_grace_s)
    assert d.fan_code == "fan_failed" and d.fan_duty_pct == 100.0 and "fan_failed" in d.flags
    assert all(a.action == "power_off" and a.code == "fan_failed" for a in d.chains)
    assert "fan 0 at 0 rpm" in d.action(1).reason
    # the fan spins again, but not yet past the cool-down: still off
    d = run({0: [50.0], 1: [50.0]}, memory=d.memory, now=OPT.fan_grace_s + 5)
    assert d.action(0).code == "fan_failed"
    d = run({0: [45.0], 1: [45.0]}, memory=d.memory, now=OPT.fan_grace_s + OPT.cooldown_s)
    assert d.fan_code == "pid" and all(a.action == "run" for a in d.chains)


def test_fan_at_zero_duty_or_unknown_rpm_is_not_dead():
    fans = [Fan(0, 0, 0.0), Fan(1, None, 60.0)]
    d = run({0: [60.0]}, fans=fans)
    d = run({0: [60.0]}, fans=fans, memory=d.memory, now=100)
    assert "fan_failed" not in d.flags and d.action(0).action == "run"


def test_fan_recovering_within_grace_resets_the_timer():
    d = run({0: [60.0]}, fans=[Fan(0, 0, 60.0)])
    d = run({0: [60.0]}, fans=[Fan(0, 3000, 60.0)], memory=d.memory, now=5)
    d = run({0: [60.0]}, fans=[Fan(0, 0, 60.0)], memory=d.memory, now=9)
    d = run({0: [60.0]}, fans=[Fan(0, 0, 60.0)], memory=d.memory, now=14)
    assert "fan_failed" not in d.flags


def test_immersion_has_no_fan_control_and_no_fan_checks():
    o = ThermalOptions(mode="immersion")
    dead = [Fan(0, 0, 60.0)]
    d = run({0: [60.0]}, fans=dead, options=o)
    d = run({0: [None]}, fans=dead, options=o, memory=d.memory, now=100)
    assert d.fan_duty_pct is None and d.fan_code == "immersion"
    assert "fan_failed" not in d.flags and d.action(0).code == "blind"
    d = run({0: [90.0]}, fans=dead, options=o, memory=d.memory, now=101)
    assert d.action(0).code == "overheat"  # still protects the chips


def test_decide_is_pure():
    m = ThermalMemory()
    a = run({0: [70.0]}, memory=m, now=5)
    b = run({0: [70.0]}, memory=m, now=5)
    assert a == b and m == ThermalMemory()


# ---------------------------------------------------------------------------- the loop shell


def test_loop_survives_bad_reads_and_logs_changes_with_reasons(caplog):
    clock = [0.0]
    applied = []
    temps = [{0: [60.0]}, RuntimeError("i2c"), {0: [60.0]}, {0: [60.0]}, "junk"]

    def read_temps():
        v = temps.pop(0)
        if isinstance(v, Exception):
            raise v
        return v

    async def read_fans():
        return SPIN

    def apply(d):
        applied.append(d)
        if len(applied) == 3:
            raise OSError("pwm write failed")

    loop = ThermalLoop(read_temps, read_fans, apply, clock=lambda: clock[0])

    async def main():
        for _ in range(5):
            await loop.tick()
            clock[0] += 1

    with caplog.at_level(logging.INFO, logger="agent.control.thermal"):
        asyncio.run(main())
    assert len(applied) == 5
    assert applied[1].fan_duty_pct == 100.0  # read failure: unknown temperature
    assert loop.counts["read_temps_failed"] == 2 and loop.counts["apply_failed"] == 1
    assert loop.counts["fans:unknown_temp"] == 2 and loop.counts["fans:pid"] == 2
    assert loop.counts["chain:run:ok"] == 2 and loop.counts["chain:run:blind"] == 2
    assert "temperature not known" in caplog.text and "chain 0: 60.0" in caplog.text


def test_loop_run_stops_on_event():
    loop = ThermalLoop(
        lambda: {0: [60.0]}, lambda: SPIN, lambda d: None, ThermalOptions(interval_s=0)
    )

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        while loop.last is None:
            await asyncio.sleep(0)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert loop.last is not None and loop.last.fan_code == "pid"


# ---------------------------------------------------------------------------- closed loop


def test_closed_loop_fan_failure_sensor_loss_and_heat_ramp(caplog):
    """The loop against the emulator's thermal model in simulated time (1 s ticks): a fan dies,
    a chain's sensors vanish, ambient ramps to 60 °C. No die ever reaches the dangerous limit."""
    chains, freq = 4, 384.0
    model = ThermalModel(chains, ambient_c=25.0)
    for c in range(chains):
        model.set_chain(c, chips=72, freq_mhz=freq, voltage_v=10.0, powered=True)
    clock = [0.0]
    fan_dead = [False]
    sensors_lost = [False]
    duty = [100.0]
    codes: set[str] = set()

    def read_temps():
        out = {}
        for c in range(chains):
            if c == 0 and sensors_lost[0]:
                out[c] = [None, 0]
            else:
                out[c] = [round(model.board_temp_c(c), 2), round(model.chip_temp_c(c), 2)]
        return out

    def read_fans():
        rpm = 0 if fan_dead[0] else int(43 * duty[0])
        return [Fan(0, rpm, duty[0]), Fan(1, int(36 * duty[0]), duty[0])]

    def apply(d: T.ThermalDecision):
        duty[0] = d.fan_duty_pct
        model.fan_pct = duty[0] / 2 if fan_dead[0] else duty[0]  # one of two fans left
        for a in d.chains:
            codes.add(a.code)
            model.set_chain(
                a.chain, powered=a.action != "power_off", freq_mhz=freq * a.freq_pct / 100
            )

    loop = ThermalLoop(read_temps, read_fans, apply, clock=lambda: clock[0])
    max_chip = 0.0

    async def main():
        nonlocal max_chip
        for t in range(6000):
            clock[0] = float(t)
            fan_dead[0] = 600 <= t < 900
            sensors_lost[0] = 1500 <= t < 1560
            model.ambient_c = 25.0 + min(35.0, max(0.0, (t - 2000) / 60.0))  # +35 °C over 35 min
            await loop.tick()
            model.advance(1.0)
            max_chip = max(max_chip, *model.state.chip_c)
            if t == 620:
                assert all(not c.powered for c in model.chains), "fan failure must cut DC-DC"
            if 1500 <= t < 1560:
                assert duty[0] == 100.0, "sensor loss must mean fans 100 %"

    with caplog.at_level(logging.INFO, logger="agent.control.thermal"):
        asyncio.run(main())
    print(
        f"\nmax die {max_chip:.1f} °C (dangerous {OPT.dangerous_temp_c:g}); codes {sorted(codes)}"
    )
    print("action counts:", dict(loop.counts))
    assert max_chip < OPT.dangerous_temp_c
    assert {"fan_failed", "hot", "ok", "blind"} <= codes
    assert loop.counts["fans:unknown_temp"] >= 1 and loop.counts["chain:power_off:fan_failed"] == 4
    assert any(a.action == "throttle" for a in loop.last.chains), "hot at 60 °C ambient"
    assert all(a.action != "power_off" for a in loop.last.chains), "throttled, still mining"
    assert "fan failure" in caplog.text and ">= hot 75" in caplog.text
