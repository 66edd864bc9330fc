"""Status LEDs: each LED runs one asyncio task that follows a pattern.

Pattern timing is pure: level(pattern, t) says whether the LED is lit t seconds into the pattern,
next_change(pattern, t) when that next changes. The task only writes the GPIO when the level
changes and sleeps until the next change (a steady pattern sleeps until the pattern is changed)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from agent import defaults as D

log = logging.getLogger(__name__)

PATTERNS = ("off", "on", "blink_slow", "blink_fast", "heartbeat", "locate")


def _square(t: float, period: float) -> bool:
    return (t % period) < period / 2


def level(pattern: str, t: float) -> bool:
    """Whether the LED is lit at t seconds since the pattern started."""
    if pattern == "off":
        return False
    if pattern == "on":
        return True
    if pattern == "blink_slow":
        return _square(t, D.LED_SLOW_PERIOD_S)
    if pattern == "blink_fast":
        return _square(t, D.LED_FAST_PERIOD_S)
    if pattern == "locate":
        return _square(t, D.LED_LOCATE_PERIOD_S)
    if pattern == "heartbeat":
        # Pulse, gap, pulse, long pause: lit in [0, p) and [2p, 3p) of each period.
        p = D.LED_HEARTBEAT_PULSE_S
        phase = t % D.LED_HEARTBEAT_PERIOD_S
        return phase < p or 2 * p <= phase < 3 * p
    raise ValueError(f"unknown LED pattern {pattern!r} (known: {', '.join(PATTERNS)})")


def _edges(pattern: str) -> tuple[float, tuple[float, ...]]:
    """(period, times within a period where the level changes)."""
    if pattern == "heartbeat":
        p = D.LED_HEARTBEAT_PULSE_S
        return D.LED_HEARTBEAT_PERIOD_S, (0.0, p, 2 * p, 3 * p)
    period = {
        "blink_slow": D.LED_SLOW_PERIOD_S,
        "blink_fast": D.LED_FAST_PERIOD_S,
        "locate": D.LED_LOCATE_PERIOD_S,
    }[pattern]
    return period, (0.0, period / 2)


def next_change(pattern: str, t: float) -> float | None:
    """The first time > t at which level() changes; None for the steady patterns."""
    if pattern in ("off", "on"):
        return None
    level(pattern, t)  # validates the name
    period, edges = _edges(pattern)
    base = math.floor(t / period) * period
    for cycle in (base, base + period):
        for e in edges:
            if cycle + e > t + 1e-9:
                return cycle + e
    return base + 2 * period  # unreachable: every period has an edge


class Led:
    """One LED on an output line. `write` takes the level (a Gpio.write, or anything)."""

    def __init__(self, name: str, write: Callable[[bool], None]) -> None:
        self.name = name
        self._write = write
        self.pattern = "off"
        self.lit: bool | None = None  # as last written
        self.errors = 0
        self.written = asyncio.Event()  # set after each write: tests wait on it, never sleep
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def set(self, pattern: str) -> None:
        if pattern not in PATTERNS:
            known = ", ".join(PATTERNS)
            raise ValueError(f"LED {self.name}: unknown pattern {pattern!r} (known: {known})")
        if pattern != self.pattern:
            self.pattern = pattern
            self._changed.set()

    def _apply(self, lit: bool) -> None:
        if lit == self.lit:
            return
        try:
            self._write(lit)
        except OSError as e:  # a failing LED is reported, never fatal
            self.errors += 1
            log.warning("LED %s: %s", self.name, e)
            return
        self.lit = lit
        self.written.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._changed.clear()
            pattern, start = self.pattern, loop.time()
            while True:
                t = loop.time() - start
                self._apply(level(pattern, t))
                nxt = next_change(pattern, t)
                timeout = None if nxt is None else max(0.0, nxt - t)
                try:
                    async with asyncio.timeout(timeout):  # not wait_for: see pic.command
                        await self._changed.wait()
                except TimeoutError:
                    continue
                break  # pattern changed: restart its timing

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"led-{self.name}")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # asyncio.wait never raises the task's CancelledError, and lets ours through.
            await asyncio.wait([self._task])
            self._task = None


def status_patterns(status: str) -> tuple[str, str]:
    """(red, green) for a board status, as the stock firmware shows it: healthy = green blinking,
    red off; fault or stopped = red blinking, green off; locate = both flashing."""
    if status == "healthy":
        return "off", "blink_slow"
    if status in ("fault", "stopped"):
        return "blink_slow", "off"
    if status == "locate":
        return "locate", "locate"
    if status == "booting":
        return "off", "heartbeat"
    raise ValueError(f"unknown LED status {status!r} (healthy, fault, stopped, locate, booting)")
