"""Fans: one sysfs PWM for all fans, tach counted from GPIO interrupts (reference §3.1, §3.2).

The L3+ drives both fans from /sys/class/pwm/pwm1 (period_ns 100000, duty_ns = 1000 x percent)
and counts each fan's tach edges as a GPIO interrupt: the count is read from /proc/interrupts
(lines containing "gpiolib", in fan order). RPM = edges per second x 60 / pulses per revolution,
capped like the stock driver. A fan reading 0 rpm at non-zero duty for longer than the grace
period is dead. The arithmetic is pure; Fans is the thin shell around the files."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent import defaults as D

log = logging.getLogger(__name__)


class FanError(OSError):
    """A PWM or tach file that cannot be read or written; the message names it."""


# ---------------------------------------------------------------------------- pure parts


def duty_to_ns(pct: float, period_ns: int, inverted: bool = False) -> int:
    """Duty percent -> the PWM's duty value in ns (inverted PWMs count the off time)."""
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"fan duty must be 0..100 %, got {pct!r}")
    if period_ns <= 0:
        raise ValueError(f"PWM period must be > 0 ns, got {period_ns!r}")
    on = round(period_ns * pct / 100.0)
    return period_ns - on if inverted else on


def ns_to_duty(ns: int, period_ns: int, inverted: bool = False) -> float:
    if not 0 <= ns <= period_ns:
        raise ValueError(f"PWM duty {ns} ns is outside the period 0..{period_ns} ns")
    on = period_ns - ns if inverted else ns
    return 100.0 * on / period_ns


def parse_interrupts(text: str, match: str) -> list[int]:
    """Counts (summed over CPUs) of the /proc/interrupts lines containing `match`, in order."""
    counts = []
    for line in text.splitlines():
        if match not in line:
            continue
        fields = line.split()
        if not fields or not fields[0].endswith(":"):
            continue
        total = 0
        for f in fields[1:]:
            if not f.isdigit():
                break
            total += int(f)
        counts.append(total)
    return counts


def rpm_from_counts(delta: int, dt_s: float, pulses_per_rev: int, cap: int) -> int | None:
    """RPM from tach edges counted over dt_s; None when it cannot be known (no time passed or
    the counter went backwards). A result above the cap is capped, as the stock driver does."""
    if dt_s <= 0 or delta < 0 or pulses_per_rev <= 0:
        return None
    rpm = round(delta / dt_s * 60.0 / pulses_per_rev)
    return min(rpm, cap)


@dataclass
class GraceTimer:
    """A condition that must hold for more than grace_s before it counts (a fan spinning up
    is not a failure). None (unknown) neither starts nor clears the timer."""

    grace_s: float = D.FAN_DEAD_GRACE_S
    since: float | None = None  # when the condition was first seen

    def update(self, condition: bool | None, now: float) -> bool:
        if condition is None:
            return self.tripped(now)
        if not condition:
            self.since = None
            return False
        if self.since is None:
            self.since = now
        return self.tripped(now)

    def tripped(self, now: float) -> bool:
        return self.since is not None and now - self.since > self.grace_s


def stopped_fan(rpm: int | None, duty_pct: float) -> bool | None:
    """0 rpm while driven (None when the rpm is unknown)."""
    return None if rpm is None else rpm == 0 and duty_pct > 0


def slow_fan(rpm: int | None, duty_pct: float, max_rpm: int) -> bool | None:
    """The stock driver's other check: a fan under max x PWM / 130 is failing to keep up."""
    return None if rpm is None else duty_pct > 0 and rpm < max_rpm * duty_pct / 130.0


# ---------------------------------------------------------------------------- the shell


@dataclass(frozen=True)
class FanReading:
    index: int
    rpm: int | None  # None: not known yet (first sample, or the tach file failed)
    duty_pct: float
    dead: bool
    slow: bool
    problem: str | None  # names the fan


class Fans:
    def __init__(
        self,
        pwm_dir: str | Path,
        interrupts_path: str | Path,
        *,
        period_ns: int,
        max_rpm: Sequence[int],
        period_file: str = "period_ns",
        duty_file: str = "duty_ns",
        enable_file: str = "",
        inverted: bool = False,
        irq_match: str = "gpiolib",
        pulses_per_rev: int = D.FAN_PULSES_PER_REV,
        rpm_cap: int = D.FAN_RPM_CAP,
        grace_s: float = D.FAN_DEAD_GRACE_S,
    ) -> None:
        self.pwm_dir = Path(pwm_dir)
        self.interrupts_path = Path(interrupts_path)
        self.period_ns = period_ns
        self.max_rpm = tuple(max_rpm)
        self.period_file, self.duty_file, self.enable_file = period_file, duty_file, enable_file
        self.inverted = inverted
        self.irq_match = irq_match
        self.pulses_per_rev = pulses_per_rev
        self.rpm_cap = rpm_cap
        self.grace_s = grace_s
        self.dead_timers = [GraceTimer(grace_s) for _ in self.max_rpm]
        self.slow_timers = [GraceTimer(grace_s) for _ in self.max_rpm]
        self.duty_pct: float | None = None  # as last written
        self._written_ns: int | None = None  # the duty file's value as last written, and when
        self._written_at = 0.0
        self.errors = 0
        self._last: tuple[float, list[int]] | None = None
        self.readings: list[FanReading] = []

    @property
    def count(self) -> int:
        return len(self.max_rpm)

    def _write(self, leaf: str, value: int) -> None:
        path = self.pwm_dir / leaf
        try:
            with open(path, "w") as f:
                f.write(f"{value}\n")
        except OSError as e:
            self.errors += 1
            raise FanError(e.errno, f"fan PWM {path}: write {value}: {e.strerror or e}") from None

    def open(self, duty_pct: float = D.FAN_BOOT_DUTY_PCT) -> None:
        """Set the period, enable the PWM if it has an enable file, start at duty_pct."""
        self._write(self.period_file, self.period_ns)
        if self.enable_file:
            self._write(self.enable_file, 1)
        self.set_duty(duty_pct)

    def set_duty(self, pct: float) -> None:
        """Write the duty cycle. The thermal loop sets it every second and it rarely changes:
        the same value is written again only after D.FAN_PWM_REWRITE_S (a PWM reset under us is
        still undone), since each write opens the sysfs file anew."""
        ns = duty_to_ns(pct, self.period_ns, self.inverted)
        now = time.monotonic()
        if ns != self._written_ns or now - self._written_at >= D.FAN_PWM_REWRITE_S:
            self._written_ns = None  # unknown until this write succeeds
            self._write(self.duty_file, ns)
            self._written_ns, self._written_at = ns, now
        self.duty_pct = float(pct)

    def read_duty(self) -> float:
        path = self.pwm_dir / self.duty_file
        try:
            ns = int(path.read_text().strip())
            return ns_to_duty(ns, self.period_ns, self.inverted)
        except (OSError, ValueError) as e:
            self.errors += 1
            raise FanError(0, f"fan PWM {path}: {e}") from None

    def _counts(self) -> list[int] | None:
        try:
            counts = parse_interrupts(self.interrupts_path.read_text(), self.irq_match)
        except OSError as e:
            self.errors += 1
            log.warning("fan tach %s: %s", self.interrupts_path, e.strerror or e)
            return None
        if len(counts) < self.count:
            self.errors += 1
            log.warning("fan tach %s: %d %r lines for %d fans",
                        self.interrupts_path, len(counts), self.irq_match, self.count)  # fmt: skip
            return None
        return counts[: self.count]

    def sample(self, now: float) -> list[FanReading]:
        """Read the tach counters (call about once per second) -> one reading per fan; never
        raises. The first sample only sets the baseline, so its rpm is None."""
        counts = self._counts()
        duty = self.duty_pct if self.duty_pct is not None else 0.0
        rpms: list[int | None] = [None] * self.count
        if counts is not None:
            if self._last is not None:
                t0, c0 = self._last
                rpms = [
                    rpm_from_counts(c - p, now - t0, self.pulses_per_rev, self.rpm_cap)
                    for c, p in zip(counts, c0, strict=True)
                ]
            self._last = (now, counts)
        out = []
        for i, rpm in enumerate(rpms):
            dead = self.dead_timers[i].update(stopped_fan(rpm, duty), now)
            slow = self.slow_timers[i].update(slow_fan(rpm, duty, self.max_rpm[i]), now)
            problem = None
            if dead:
                problem = f"fan {i}: 0 rpm at {duty:g} % duty for more than {self.grace_s:g} s"
            elif slow:
                problem = (
                    f"fan {i}: {rpm} rpm is slow for {duty:g} % duty "
                    f"(max {self.max_rpm[i]}) for more than {self.grace_s:g} s"
                )
            out.append(FanReading(i, rpm, duty, dead, slow, problem))
        self.readings = out
        return out
