"""GPIO lines through the sysfs interface (/sys/class/gpio), as the L3+ kernel provides it.

The directory is a parameter (profile.gpio_dir, under sysfs_root), so tests and the emulator use a
plain folder with the same files: export, gpioN/direction, gpioN/value, gpioN/edge."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

DIRECTIONS = ("in", "out", "high", "low")  # "high"/"low": output with a glitch-free initial level
EDGES = ("none", "rising", "falling", "both")
EXPORT_WAIT_S = 1.0  # udev may take a moment to create gpioN/ after export


class GpioError(OSError):
    """A GPIO that cannot be exported, configured, read or written; the message names it."""


class Gpio:
    def __init__(self, number: int, gpio_dir: str | Path, name: str = "") -> None:
        if number < 0:
            raise GpioError(f"gpio{number} ({name or 'unnamed'}): negative GPIO number")
        self.number = number
        self.name = name or f"gpio{number}"
        self.base = Path(gpio_dir)
        self.path = self.base / f"gpio{number}"
        self.errors = 0
        self._value_fd: int | None = None

    def __repr__(self) -> str:
        return f"Gpio({self.number}, {self.name!r})"

    def _fail(self, what: str, e: Exception) -> GpioError:
        self.errors += 1
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return GpioError(f"{self.name} (gpio{self.number}): {what}: {why}")

    def export(self) -> None:
        """Make gpioN/ exist; a line already exported is fine (another run left it)."""
        if self.path.is_dir():
            return
        try:
            (self.base / "export").write_text(f"{self.number}\n")
        except OSError as e:
            if not self.path.is_dir():
                raise self._fail("export", e) from None
        # Creating gpioN/ is the kernel's and udev's job: wait a bounded time for it to appear.
        deadline = time.monotonic() + EXPORT_WAIT_S
        while not self.path.is_dir():
            if time.monotonic() > deadline:
                raise self._fail("export", OSError(f"{self.path} did not appear"))
            time.sleep(0.01)

    def set_direction(self, direction: str) -> None:
        if direction not in DIRECTIONS:
            raise GpioError(
                f"{self.name}: direction must be one of {DIRECTIONS}, got {direction!r}"
            )
        self._write("direction", direction)

    def direction(self) -> str:
        return self._read("direction")

    def set_edge(self, edge: str) -> None:
        if edge not in EDGES:
            raise GpioError(f"{self.name}: edge must be one of {EDGES}, got {edge!r}")
        self._write("edge", edge)

    def read(self) -> int:
        text = self._read("value")
        if text not in ("0", "1"):
            self.errors += 1
            raise GpioError(f"{self.name} (gpio{self.number}): value reads {text!r}, not 0 or 1")
        return int(text)

    def write(self, level: int | bool) -> None:
        """Drive an output. The value file stays open: an LED blinks for as long as the agent
        runs, and opening the sysfs file for each write cost more than the write."""
        data = b"1" if level else b"0"
        try:
            if self._value_fd is None:
                self._value_fd = os.open(self.path / "value", os.O_WRONLY | os.O_CLOEXEC)
            os.pwrite(self._value_fd, data, 0)  # sysfs takes each write whole, from offset 0
        except OSError as e:
            self.close()  # opened afresh next time (a line unexported and exported again)
            raise self._fail(f"write value={data.decode()}", e) from None

    def close(self) -> None:
        """Close the value file kept open by write(). Idempotent."""
        fd, self._value_fd = self._value_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:
        self.close()

    def _read(self, leaf: str) -> str:
        try:
            return (self.path / leaf).read_text().strip()
        except OSError as e:
            raise self._fail(f"read {leaf}", e) from None

    def _write(self, leaf: str, value: str) -> None:
        try:
            # Plain open+write: sysfs attributes are not regular files (no temp+rename).
            with open(self.path / leaf, "w") as f:
                f.write(value)
        except OSError as e:
            raise self._fail(f"write {leaf}={value}", e) from None


def output(number: int, gpio_dir: str | Path, name: str, initial: int) -> Gpio:
    """An exported output line, driven to `initial` as it becomes an output."""
    g = Gpio(number, gpio_dir, name)
    g.export()
    g.set_direction("high" if initial else "low")
    # Also write the value: same level on a real kernel, and a plain folder has no kernel to
    # turn "high"/"low" into a value.
    g.write(initial)
    return g


def input_(number: int, gpio_dir: str | Path, name: str, edge: str | None = None) -> Gpio:
    """An exported input line, with its interrupt edge set when given (fan tach)."""
    g = Gpio(number, gpio_dir, name)
    g.export()
    g.set_direction("in")
    if edge is not None:
        g.set_edge(edge)
    return g
