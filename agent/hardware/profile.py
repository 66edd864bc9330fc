"""Board profiles: board/profiles/<kind>.toml -> one frozen, validated Profile.

A profile holds every device path and address of a board (UARTs, I2C bus, PIC addresses, GPIO
numbers, fan PWM and tach, sensors). The TOML sections are for reading only: every key is unique
and becomes one Profile field. Any field can be overridden (the [board] config section's `uarts`,
`i2c_bus`, `sysfs_root`, `chains`, `chips_per_chain`, or an `overrides` mapping by field name), and
`sysfs_root` prefixes every /sys and /proc path so tests and the emulator point at a folder."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROFILES_DIR = Path(__file__).resolve().parent.parent.parent / "board" / "profiles"

# Fields holding a /sys or /proc path: sysfs_root is put in front of them.
SYSFS_FIELDS = ("gpio_dir", "pwm_dir", "interrupts_path")


class ProfileError(Exception):
    """A profile that cannot be used; .errors names every bad key."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("invalid board profile:\n  " + "\n  ".join(self.errors))


@dataclass(frozen=True)
class Profile:
    name: str
    sysfs_root: str
    chains: int
    uarts: tuple[str, ...]
    uart_baud: int
    chips_per_chain: int
    i2c_bus: int | str  # a bus number, a /dev/i2c-N path, or "emulated"
    pic_addresses: tuple[int, ...]
    pic_firmware_version: int
    gpio_dir: str
    board_present_gpios: tuple[int, ...]
    reset_gpios: tuple[int, ...]
    led_red_gpio: int
    led_green_gpio: int
    beeper_gpio: int
    pwm_dir: str
    pwm_period_file: str
    pwm_duty_file: str
    pwm_enable_file: str  # "" when the PWM has no enable file
    pwm_period_ns: int
    pwm_inverted: bool
    tach_gpios: tuple[int, ...]
    tach_edge: str
    interrupts_path: str
    tach_irq_match: str
    fan_pulses_per_rev: int
    fan_max_rpm: tuple[int, ...]
    fan_rpm_cap: int
    tmp75_addresses: tuple[int, ...]
    chip_sensor_address: int
    sensor_chip_addresses: tuple[int, ...]
    reset_pulse_s: float
    pic_step_delay_s: float
    pic_reset_wait_s: float
    pic_dcdc_settle_s: float

    @property
    def fans(self) -> int:
        return len(self.tach_gpios)


FIELDS = {f.name: f for f in dataclasses.fields(Profile)}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(name: str, v: Any) -> tuple[Any, str | None]:
    """(converted value, None) or (None, why) for one field, by its declared type."""
    kind = FIELDS[name].type
    if kind == "str":
        return (v, None) if isinstance(v, str) else (None, "must be a string")
    if kind == "int":
        return (v, None) if _is_int(v) and v >= 0 else (None, "must be an integer >= 0")
    if kind == "bool":
        return (v, None) if isinstance(v, bool) else (None, "must be true or false")
    if kind == "float":
        ok = (_is_int(v) or isinstance(v, float)) and 0 <= v < 3600
        return (float(v), None) if ok else (None, "must be a number of seconds in [0, 3600)")
    if kind == "tuple[str, ...]":
        ok = isinstance(v, list | tuple) and all(isinstance(x, str) and x for x in v)
        return (tuple(v), None) if ok else (None, "must be an array of strings")
    if kind == "tuple[int, ...]":
        ok = isinstance(v, list | tuple) and all(_is_int(x) and x >= 0 for x in v)
        return (tuple(v), None) if ok else (None, "must be an array of integers >= 0")
    if kind == "int | str":
        ok = (_is_int(v) and 0 <= v <= 255) or (isinstance(v, str) and v)
        return (v, None) if ok else (None, 'must be a bus number, a device path or "emulated"')
    raise AssertionError(f"profile field {name} has an unhandled type {kind}")


def _flatten(data: Mapping[str, Any], source: str, errors: list[str]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for k, v in items:
            if k in flat:
                errors.append(f"{source}: {k}: set twice")
            flat[k] = v
    return flat


def _under_root(root: str, path: str) -> str:
    if not path or root in ("", "/"):
        return path
    return str(Path(root) / path.lstrip("/"))


def build(
    data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None, source: str = "<profile>"
) -> Profile:
    """A Profile from parsed TOML plus overrides (by field name); ProfileError names bad keys."""
    errors: list[str] = []
    flat = _flatten(data, source, errors)
    pics = flat.get("pic_addresses", ())
    # (a pic_addresses that is not an array is reported below, by its own check)
    flat.setdefault("chains", len(pics) if isinstance(pics, list | tuple) else 0)
    for key, value in (overrides or {}).items():
        if value is not None:
            flat[key] = value
    values: dict[str, Any] = {}
    for key, value in flat.items():
        if key not in FIELDS:
            errors.append(f"{source}: {key}: unknown profile key")
            continue
        good, why = _check(key, value)
        if why is not None:
            errors.append(f"{source}: {key}: {why}, got {value!r}")
        else:
            values[key] = good
    for key in FIELDS:
        if key not in flat:
            errors.append(f"{source}: {key}: missing")
    if errors:
        raise ProfileError(errors)
    chains = values["chains"]
    for key in ("pic_addresses", "board_present_gpios", "reset_gpios"):
        if len(values[key]) < chains:
            errors.append(f"{source}: {key}: {len(values[key])} entries for {chains} chains")
    if values["uarts"] and len(values["uarts"]) < chains:
        errors.append(f"{source}: uarts: {len(values['uarts'])} entries for {chains} chains")
    if len(values["fan_max_rpm"]) != len(values["tach_gpios"]):
        errors.append(f"{source}: fan_max_rpm: one entry per tach_gpios entry")
    if values["pwm_period_ns"] <= 0:
        errors.append(f"{source}: pwm_period_ns: must be > 0")
    if values["tach_edge"] not in ("rising", "falling", "both"):
        errors.append(f"{source}: tach_edge: must be rising, falling or both")
    for key in ("pic_addresses", "tmp75_addresses"):
        if any(not 0x03 <= a <= 0x77 for a in values[key]):
            errors.append(f"{source}: {key}: 7-bit I2C addresses are 0x03..0x77")
    if errors:
        raise ProfileError(errors)
    for key in SYSFS_FIELDS:
        values[key] = _under_root(values["sysfs_root"], values[key])
    return Profile(**values)


def board_overrides(board: Any) -> dict[str, Any]:
    """The profile keys a config.BoardConfig sets (None = keep the profile's value)."""
    out: dict[str, Any] = {
        "uarts": board.uarts,
        "i2c_bus": board.i2c_bus,
        "sysfs_root": board.sysfs_root,
        "chains": board.chains,
        "chips_per_chain": board.chips_per_chain,
    }
    if out["uarts"] is not None:
        out["uarts"] = tuple(out["uarts"])
    return out


def load(
    kind: str,
    board: Any = None,
    overrides: Mapping[str, Any] | None = None,
    profiles_dir: Path | None = None,
) -> Profile:
    """The profile board/profiles/<kind>.toml (or a path to a .toml), with the [board] config's
    keys and then `overrides` applied on top."""
    path = Path(kind) if kind.endswith(".toml") else (profiles_dir or PROFILES_DIR) / f"{kind}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ProfileError([f"{path}: cannot read: {e.strerror or e}"]) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ProfileError([f"{path}: not valid TOML: {e}"]) from None
    merged: dict[str, Any] = board_overrides(board) if board is not None else {}
    merged.update(overrides or {})
    return build(data, merged, source=str(path))
