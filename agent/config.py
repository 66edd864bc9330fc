"""TOML + environment overrides -> one frozen, validated Config.

load(path, env) reads `path`, merges the overlay `<stem>.<environment>.toml` next to it when it
exists, applies DOGE_AGENT__SECTION__KEY variables (DOGE_AGENT__POOLS__<i>__KEY for a pool), then
validates everything at once: every error names its key by path, and all of them are reported.
Secrets (pool and [api] passwords, the API token) never appear in an error message or a repr.

A valid Config always builds the modules' options: ThermalOptions.from_config(config.thermal),
TunerOptions.from_config(config.tuner), GuardianOptions.from_config(config.guardian) and
WebOptions.from_config(config) never raise on it (every range here is at least as strict)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent import defaults as D
from agent.hardware.bm1485 import PLL_MAX_MHZ, PLL_MIN_MHZ
from agent.security.access import AccessConfigError, AccessPolicy

PASSWORD_KEYS = frozenset({"password", "password_enc"})  # one or the other, never both
SECRET_KEYS = PASSWORD_KEYS | {"token"}
MASK = "***"


def _masked_repr(obj: Any) -> str:
    """A dataclass repr with every set secret shown as *** (None stays None)."""
    parts = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in SECRET_KEYS and value is not None:
            value = MASK
        parts.append(f"{f.name}={value!r}")
    return f"{type(obj).__name__}({', '.join(parts)})"


class ConfigError(Exception):
    """A config that cannot be used; .errors lists every problem, each naming its key path."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("invalid configuration:\n  " + "\n  ".join(self.errors))


# ---------------------------------------------------------------------------- the Config


@dataclass(frozen=True)
class AgentConfig:
    environment: str = D.ENVIRONMENT
    state_dir: str = D.STATE_DIR
    log_level: str = D.LOG_LEVEL


@dataclass(frozen=True)
class PoolConfig:
    url: str
    user: str
    password: str | None = field(default=None, repr=False)
    password_enc: str | None = field(default=None, repr=False)
    priority: int = D.POOL_PRIORITY

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 0

    @property
    def tls(self) -> bool:
        return self.scheme == "stratum+ssl"

    def __repr__(self) -> str:
        # Never show a secret, even when the whole Config is logged.
        pw = MASK if self.password is not None else None
        enc = MASK if self.password_enc is not None else None
        return (
            f"PoolConfig(url={self.url!r}, user={self.user!r}, password={pw!r}, "
            f"password_enc={enc!r}, priority={self.priority!r})"
        )

    __str__ = __repr__


@dataclass(frozen=True)
class BoardConfig:
    kind: str = D.BOARD_KIND
    chains: int = D.CHAINS
    chips_per_chain: int = D.CHIPS_PER_CHAIN
    threads: int = D.CPU_THREADS
    ticket_difficulty: float = D.TICKET_DIFFICULTY
    uarts: tuple[str, ...] | None = None
    i2c_bus: int | str | None = None
    sysfs_root: str | None = None
    host: str | None = None  # remote: the stock miner's address
    emulator_dir: str | None = None  # emulated: attach to `doge-agent emulate --root DIR`


@dataclass(frozen=True)
class ThermalConfig:
    """[thermal]: names as agent.control.thermal.ThermalOptions reads them."""

    mode: str = D.THERMAL_MODE
    target_temp_c: float = D.TARGET_TEMP_C
    hot_temp_c: float = D.HOT_TEMP_C
    dangerous_temp_c: float = D.DANGEROUS_TEMP_C
    rearm_temp_c: float = D.THERMAL_REARM_TEMP_C
    cooldown_s: float = D.THERMAL_COOLDOWN_S
    max_trips: int = D.THERMAL_MAX_TRIPS
    rearm_freq_pct: float = D.THERMAL_REARM_FREQ_PCT
    throttle_step_pct: float = D.THERMAL_THROTTLE_STEP_PCT
    throttle_min_pct: float = D.THERMAL_THROTTLE_MIN_PCT
    throttle_interval_s: float = D.THERMAL_THROTTLE_INTERVAL_S
    unthrottle_margin_c: float = D.THERMAL_UNTHROTTLE_MARGIN_C
    sensor_lost_s: float = D.THERMAL_SENSOR_LOST_S
    max_jump_c: float = D.THERMAL_MAX_JUMP_C
    fan_grace_s: float = D.FAN_DEAD_GRACE_S
    fan_min_pct: float = D.THERMAL_FAN_MIN_PCT
    fan_max_pct: float = D.THERMAL_FAN_MAX_PCT
    kp: float = D.THERMAL_PID_KP
    ki: float = D.THERMAL_PID_KI
    kd: float = D.THERMAL_PID_KD
    bias_pct: float = D.THERMAL_PID_BIAS_PCT
    interval_s: float = D.THERMAL_INTERVAL_S


@dataclass(frozen=True)
class TunerConfig:
    """[tuner]: names as agent.control.tuner.TunerOptions reads them (ticket_difficulty is the
    board's, not a tuner key)."""

    enabled: bool = D.TUNER_ENABLED
    min_mhz: float = D.TUNER_MIN_MHZ
    max_mhz: float = D.TUNER_MAX_MHZ
    step_mhz: float = D.TUNER_STEP_MHZ
    hw_budget: float = D.TUNER_HW_BUDGET
    confidence: float = D.TUNER_CONFIDENCE
    min_samples: int = D.TUNER_MIN_SAMPLES
    low_rate_fraction: float = D.TUNER_LOW_RATE_FRACTION
    fail_strikes: int = D.TUNER_FAIL_STRIKES
    core_fraction: float = D.TUNER_CORE_FRACTION
    tune_voltage: bool = True
    voltage_min_v: float = D.TUNER_VOLTAGE_MIN_V
    voltage_max_v: float = D.TUNER_VOLTAGE_MAX_V
    voltage_step_v: float = D.TUNER_VOLTAGE_STEP_V
    power_target_w: float | None = None  # None: no power target
    retune_delta_c: float = D.TUNER_RETUNE_DELTA_C
    interval_s: float = D.TUNER_INTERVAL_S


@dataclass(frozen=True)
class GuardianConfig:
    """[guardian]: names as agent.control.guardian.GuardianOptions reads them."""

    enabled: bool = False
    pause_below_usd_day: float = D.GUARDIAN_PAUSE_BELOW_USD_DAY
    resume_above_usd_day: float = D.GUARDIAN_RESUME_ABOVE_USD_DAY
    min_dwell_s: float = D.GUARDIAN_MIN_DWELL_S
    price_max_age_s: float = D.GUARDIAN_PRICE_MAX_AGE_S
    stale_policy: str = D.GUARDIAN_STALE_POLICY
    electricity_usd_kwh: float = D.GUARDIAN_ELECTRICITY_USD_KWH
    ltc_reward: float = D.GUARDIAN_LTC_REWARD
    doge_reward: float = D.GUARDIAN_DOGE_REWARD
    merged_mining: bool = D.GUARDIAN_MERGED_MINING
    ltc_difficulty: float = D.GUARDIAN_LTC_DIFFICULTY
    doge_difficulty: float = D.GUARDIAN_DOGE_DIFFICULTY
    currency: str = "usd"
    price_url: str | None = None  # None: prices come from price_file only
    price_file: str = D.GUARDIAN_PRICE_FILE  # relative to the state dir unless absolute
    refresh_s: float = D.GUARDIAN_REFRESH_S
    fetch_timeout_s: float = D.GUARDIAN_FETCH_TIMEOUT_S
    watts_default: float = D.GUARDIAN_WATTS_DEFAULT
    interval_s: float = D.GUARDIAN_INTERVAL_S

    def __repr__(self) -> str:  # a price URL may carry credentials or an API key
        return _masked_repr(self).replace(repr(self.price_url), repr(_redact_url(self.price_url)))

    __str__ = __repr__


@dataclass(frozen=True)
class ApiConfig:
    """[api]. read_allow / write_allow guard the web surface (status page, JSON API and the stock
    CGI pages); cgminer_* the cgminer API. Secrets are kept out of repr()."""

    http_listen: str = D.HTTP_LISTEN
    cgminer_listen: str = D.CGMINER_LISTEN
    read_allow: tuple[str, ...] = D.WEB_READ_ALLOW
    write_allow: tuple[str, ...] = D.WEB_WRITE_ALLOW
    cgminer_read_allow: tuple[str, ...] = D.CGMINER_READ_ALLOW
    cgminer_write_allow: tuple[str, ...] = D.CGMINER_WRITE_ALLOW
    user: str = D.STOCK_CGI_USER
    password: str | None = field(default=None, repr=False)  # None/"" with no password_enc: no
    password_enc: str | None = field(default=None, repr=False)  # owner password, writes refused
    token: str | None = field(default=None, repr=False)  # None: Bearer auth disabled
    login_max_failures: int = D.WEB_LOGIN_MAX_FAILURES
    login_lockout_s: float = D.WEB_LOGIN_LOCKOUT_S
    tls_cert: str | None = None  # both or neither: serve HTTPS from this chain + key
    tls_key: str | None = None

    # The names agent.api.http.WebOptions.from_config(config) reads.
    @property
    def http_read_allow(self) -> tuple[str, ...]:
        return self.read_allow

    @property
    def http_write_allow(self) -> tuple[str, ...]:
        return self.write_allow

    @property
    def http_tls_cert(self) -> str | None:
        return self.tls_cert

    @property
    def http_tls_key(self) -> str | None:
        return self.tls_key

    def __repr__(self) -> str:
        return _masked_repr(self)

    __str__ = __repr__


@dataclass(frozen=True)
class LoggingConfig:
    """[logging]: the JSON log file with size-based rotation, and the console."""

    file: str = D.LOG_FILE  # relative to agent.state_dir unless absolute
    max_bytes: int = D.LOG_MAX_BYTES
    backups: int = D.LOG_BACKUPS
    level: str | None = None  # None: agent.log_level
    console: str = D.LOG_CONSOLE  # human | json | off


@dataclass(frozen=True)
class AlertsConfig:
    """[alerts]: a command (argv, never a shell) and/or a URL POSTed JSON on critical events."""

    command: tuple[str, ...] | None = None
    url: str | None = None
    min_interval_s: float = D.ALERT_MIN_INTERVAL_S
    reminder_s: float = D.ALERT_REMINDER_S
    timeout_s: float = D.ALERT_TIMEOUT_S

    def __repr__(self) -> str:  # a hook URL may carry credentials
        return _masked_repr(self).replace(repr(self.url), repr(_redact_url(self.url)))

    __str__ = __repr__


@dataclass(frozen=True)
class Config:
    agent: AgentConfig = field(default_factory=AgentConfig)
    pools: tuple[PoolConfig, ...] = ()
    board: BoardConfig = field(default_factory=BoardConfig)
    thermal: ThermalConfig = field(default_factory=ThermalConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    tuner: TunerConfig = field(default_factory=TunerConfig)
    guardian: GuardianConfig = field(default_factory=GuardianConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    sources: tuple[str, ...] = ()  # files merged, main file first


# ---------------------------------------------------------------------------- checkers
# A checker returns (value, None) when the raw value is good, or (None, "what it must be").

Checker = Callable[[Any], tuple[Any, str | None]]


def _shown(value: Any) -> str:
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _redact_url(value: Any) -> Any:
    """scheme://user:pass@host -> scheme://***@host: credentials in a URL are secrets too."""
    if isinstance(value, str) and "@" in value:
        return re.sub(r"(?<=://)[^/@]*@", MASK + "@", value)
    return value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def int_in(lo: int, hi: int) -> Checker:
    def check(v: Any) -> tuple[Any, str | None]:
        if _is_int(v) and lo <= v <= hi:
            return v, None
        return None, f"must be an integer in {lo}..{hi}"

    return check


def number_in(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Checker:
    def check(v: Any) -> tuple[Any, str | None]:
        if _is_number(v) and (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi):
            return float(v), None
        return None, (
            f"must be a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        )

    return check


def boolean(v: Any) -> tuple[Any, str | None]:
    return (v, None) if isinstance(v, bool) else (None, "must be true or false")


def one_of(choices: tuple[str, ...]) -> Checker:
    def check(v: Any) -> tuple[Any, str | None]:
        if isinstance(v, str) and v in choices:
            return v, None
        return None, "must be one of " + ", ".join(choices)

    return check


def text(v: Any) -> tuple[Any, str | None]:
    if isinstance(v, str) and v.strip() and "\x00" not in v:
        return v, None
    return None, "must be a non-empty string"


def listen_address(v: Any) -> tuple[Any, str | None]:
    why = 'must be "host:port" with a port in 0..65535 (IPv6 as "[::1]:port")'
    if not isinstance(v, str):
        return None, why
    host, sep, port = v.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or (":" in host and not v.startswith("[")) or " " in host:
        return None, why
    # isascii: "²".isdigit() is True but int("²") raises
    if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        return None, why
    return v, None


def pool_url(v: Any) -> tuple[Any, str | None]:
    why = "must be stratum+tcp://host:port or stratum+ssl://host:port"
    if not isinstance(v, str):
        return None, why
    try:
        parts = urlsplit(v)
        port = parts.port
    except ValueError:
        return None, why
    if parts.scheme not in D.POOL_SCHEMES or not parts.hostname or port is None or port == 0:
        return None, why
    if parts.username is not None or parts.password is not None:
        return None, "must not embed credentials; use the user and password keys"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None, why + " (no path or query)"
    return v, None


def fernet_token(v: Any) -> tuple[Any, str | None]:
    # Shape only: decryption is agent.security.secrets' job, with the key.
    ok = isinstance(v, str) and v.startswith("gAAAAA") and len(v) >= 60
    ok = ok and all(c.isalnum() or c in "-_=" for c in v)
    return (v, None) if ok else (None, "must be a Fernet token (gAAAAA...)")


def string_list(v: Any) -> tuple[Any, str | None]:
    if isinstance(v, list) and v and all(isinstance(x, str) and x for x in v):
        return tuple(v), None
    return None, "must be a non-empty array of strings"


def any_string(v: Any) -> tuple[Any, str | None]:
    return (v, None) if isinstance(v, str) else (None, "must be a string")


def http_url(v: Any) -> tuple[Any, str | None]:
    why = "must be an http:// or https:// URL with a host"
    if not isinstance(v, str) or any(c.isspace() for c in v) or "\x00" in v:
        return None, why
    try:
        parts = urlsplit(v)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return None, why
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None, why
    return v, None


def currency(v: Any) -> tuple[Any, str | None]:
    if isinstance(v, str) and re.fullmatch(r"[a-z]{3,5}", v):
        return v, None
    return None, 'must be a lower-case currency code such as "usd"'


def api_user(v: Any) -> tuple[Any, str | None]:
    # HTTP Basic splits user:password at the first colon; Digest quotes the user name.
    ok = isinstance(v, str) and 0 < len(v) <= 64 and v.isprintable() and not set(v) & set(':"\\')
    return (v, None) if ok else (None, 'must be 1..64 printable characters without : " or \\')


def bearer_token(v: Any) -> tuple[Any, str | None]:
    # RFC 6750 token68 characters; 16 at least so it cannot be guessed.
    ok = isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9._~+/=-]{16,512}", v) is not None
    return (v, None) if ok else (None, "must be 16..512 characters of A-Z a-z 0-9 . _ ~ + / = -")


def network_list(v: Any) -> tuple[Any, str | None]:
    """An array of CIDR networks or addresses (empty: nobody). A bad entry is reported as
    `[i]: why`, which _check_table turns into the path `section.key[i]`."""
    if not isinstance(v, list):
        return None, 'must be an array of networks like ["192.168.1.0/24", "::1"]'
    for i, entry in enumerate(v):
        if not isinstance(entry, str) or len(entry) > 64:
            return None, f'[{i}]: must be a network like "192.168.1.0/24", got {_shown(entry)}'
        try:
            AccessPolicy([entry], [])
        except AccessConfigError as e:
            return None, f"[{i}]: {str(e).split(': ', 1)[-1]}"
    return tuple(v), None


def i2c_bus(v: Any) -> tuple[Any, str | None]:
    if _is_int(v) and 0 <= v <= 255:
        return v, None
    if isinstance(v, str) and v.strip():
        return v, None
    return None, 'must be a bus number in 0..255, a device path or "emulated"'


# section -> key -> checker. Env values of STRING_KEYS are kept verbatim (a password "1234").
SCHEMA: dict[str, dict[str, Checker]] = {
    "agent": {
        "environment": one_of(D.ENVIRONMENTS),
        "state_dir": text,
        "log_level": one_of(D.LOG_LEVELS),
    },
    "pools": {
        "url": pool_url,
        "user": text,
        "password": any_string,
        "password_enc": fernet_token,
        "priority": int_in(0, 1000),
    },
    "board": {
        "kind": one_of(D.BOARD_KINDS),
        "chains": int_in(1, D.MAX_CHAINS),
        "chips_per_chain": int_in(1, D.MAX_CHIPS_PER_CHAIN),
        "threads": int_in(1, D.MAX_CPU_THREADS),
        "ticket_difficulty": number_in(0, D.MAX_TICKET_DIFFICULTY, lo_open=True),
        "uarts": string_list,
        "i2c_bus": i2c_bus,
        "sysfs_root": text,
        "host": text,
        "emulator_dir": text,
    },
    "thermal": {
        "mode": one_of(D.THERMAL_MODES),
        "target_temp_c": number_in(D.MIN_TEMP_C, D.MAX_TEMP_C),
        "hot_temp_c": number_in(D.MIN_TEMP_C, D.MAX_TEMP_C),
        "dangerous_temp_c": number_in(D.MIN_TEMP_C, D.MAX_TEMP_C),
        "rearm_temp_c": number_in(D.MIN_TEMP_C, D.MAX_TEMP_C),
        "cooldown_s": number_in(0, 86400),
        "max_trips": int_in(1, 100),
        "rearm_freq_pct": number_in(0, 100, lo_open=True),
        "throttle_step_pct": number_in(0, 100, lo_open=True),
        "throttle_min_pct": number_in(0, 100, lo_open=True),
        "throttle_interval_s": number_in(0, 3600, lo_open=True),
        "unthrottle_margin_c": number_in(0, 50),
        "sensor_lost_s": number_in(0, 3600, lo_open=True),
        "max_jump_c": number_in(0, 125, lo_open=True),
        "fan_grace_s": number_in(0, 600, lo_open=True),
        "fan_min_pct": number_in(0, 100),
        "fan_max_pct": number_in(0, 100),
        "kp": number_in(0, 100),
        "ki": number_in(0, 100),
        "kd": number_in(0, 100),
        "bias_pct": number_in(0, 100),
        "interval_s": number_in(0.05, 60),
    },
    "api": {
        "http_listen": listen_address,
        "cgminer_listen": listen_address,
        "read_allow": network_list,
        "write_allow": network_list,
        "cgminer_read_allow": network_list,
        "cgminer_write_allow": network_list,
        "user": api_user,
        "password": any_string,
        "password_enc": fernet_token,
        "token": bearer_token,
        "login_max_failures": int_in(1, 1000),
        "login_lockout_s": number_in(1, 86400),
        "tls_cert": text,
        "tls_key": text,
    },
    "tuner": {
        "enabled": boolean,
        "min_mhz": number_in(PLL_MIN_MHZ, PLL_MAX_MHZ),
        "max_mhz": number_in(PLL_MIN_MHZ, PLL_MAX_MHZ),
        "step_mhz": number_in(0, 100, lo_open=True),
        "hw_budget": number_in(0, 1, lo_open=True, hi_open=True),
        "confidence": number_in(0.5, 1, lo_open=True, hi_open=True),
        "min_samples": int_in(1, 1_000_000),
        "low_rate_fraction": number_in(0, 1, lo_open=True),
        "fail_strikes": int_in(1, 100),
        "core_fraction": number_in(0, 1, lo_open=True),
        "tune_voltage": boolean,
        "voltage_min_v": number_in(9, 11),
        "voltage_max_v": number_in(9, 11),
        "voltage_step_v": number_in(0, 1, lo_open=True),
        "power_target_w": number_in(0, 10_000, lo_open=True),
        "retune_delta_c": number_in(0, 100, lo_open=True),
        "interval_s": number_in(1, 86400),
    },
    "guardian": {
        "enabled": boolean,
        "pause_below_usd_day": number_in(-1e6, 1e6),
        "resume_above_usd_day": number_in(-1e6, 1e6),
        "min_dwell_s": number_in(0, 7 * 86400),
        "price_max_age_s": number_in(0, 30 * 86400),
        "stale_policy": one_of(D.GUARDIAN_STALE_POLICIES),
        "electricity_usd_kwh": number_in(0, 10),
        "ltc_reward": number_in(0, 1000),
        "doge_reward": number_in(0, 1e7),
        "merged_mining": boolean,
        "ltc_difficulty": number_in(0, 1e18, lo_open=True),
        "doge_difficulty": number_in(0, 1e18, lo_open=True),
        "currency": currency,
        "price_url": http_url,
        "price_file": text,
        "refresh_s": number_in(1, 7 * 86400),
        "fetch_timeout_s": number_in(0, 300, lo_open=True),
        "watts_default": number_in(0, 10_000, lo_open=True),
        "interval_s": number_in(1, 86400),
    },
    "logging": {
        "file": text,
        "max_bytes": int_in(D.LOG_MIN_MAX_BYTES, 2**40),
        "backups": int_in(1, D.LOG_MAX_BACKUPS),
        "level": one_of(D.LOG_LEVELS),
        "console": one_of(D.LOG_CONSOLE_MODES),
    },
    "alerts": {
        "command": string_list,
        "url": http_url,
        "min_interval_s": number_in(0, 7 * 86400),
        "reminder_s": number_in(0, 30 * 86400),
        "timeout_s": number_in(0, 600, lo_open=True),
    },
}
STRING_KEYS = frozenset(
    {
        "environment", "state_dir", "log_level", "url", "user", "password", "password_enc",
        "kind", "sysfs_root", "host", "emulator_dir", "mode", "http_listen", "cgminer_listen",
        "token", "tls_cert", "tls_key", "stale_policy", "currency", "price_url", "price_file",
        "file", "level", "console",
    }
)  # fmt: skip
REQUIRED_POOL_KEYS = ("url", "user")


# ---------------------------------------------------------------------------- validation


def _check_table(
    section: str, prefix: str, raw: Mapping[str, Any], errors: list[str]
) -> dict[str, Any]:
    """Checked values of one table; errors get `prefix.key: why, got value` (secrets hidden)."""
    out: dict[str, Any] = {}
    schema = SCHEMA[section]
    for key, value in raw.items():
        path = f"{prefix}.{key}"
        checker = schema.get(key)
        if checker is None:
            errors.append(f"{path}: unknown key (known: {', '.join(schema)})")
            continue
        good, why = checker(value)
        if why is not None and why.startswith("["):  # an array entry: `path[i]: why`
            errors.append(f"{path}{why}")
        elif why is not None:
            got = "<hidden>" if key in SECRET_KEYS else _shown(_redact_url(value))
            errors.append(f"{path}: {why}, got {got}")
        else:
            out[key] = good
    return out


def _table(data: Mapping[str, Any], name: str, errors: list[str]) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        errors.append(f"{name}: must be a table ([{name}]), got {_shown(value)}")
        return {}
    return value


def validate(data: Mapping[str, Any]) -> tuple[Config | None, list[str]]:
    """(Config, []) for good data, (None, every error) otherwise. Never raises on bad input."""
    errors: list[str] = []
    if not isinstance(data, Mapping):
        return None, [f"<root>: must be a table, got {_shown(data)}"]
    for name in data:
        if name not in SCHEMA:
            errors.append(f"{name}: unknown section (known: {', '.join(SCHEMA)})")

    agent = _check_table("agent", "agent", _table(data, "agent", errors), errors)
    board = _check_table("board", "board", _table(data, "board", errors), errors)
    thermal = _check_table("thermal", "thermal", _table(data, "thermal", errors), errors)
    api = _check_table("api", "api", _table(data, "api", errors), errors)
    tuner = _check_table("tuner", "tuner", _table(data, "tuner", errors), errors)
    guardian = _check_table("guardian", "guardian", _table(data, "guardian", errors), errors)
    logging_ = _check_table("logging", "logging", _table(data, "logging", errors), errors)
    alerts = _check_table("alerts", "alerts", _table(data, "alerts", errors), errors)

    pools: list[PoolConfig] = []
    raw_pools = data.get("pools", [])
    if not isinstance(raw_pools, list):
        errors.append(f"pools: must be an array of tables ([[pools]]), got {_shown(raw_pools)}")
        raw_pools = []
    for i, raw in enumerate(raw_pools):
        prefix = f"pools[{i}]"
        if not isinstance(raw, dict):
            errors.append(f"{prefix}: must be a table, got {_shown(raw)}")
            continue
        n_before = len(errors)
        pool = _check_table("pools", prefix, raw, errors)
        for key in REQUIRED_POOL_KEYS:
            if key not in raw:
                errors.append(f"{prefix}.{key}: missing (required for every pool)")
        if "password" in raw and "password_enc" in raw:
            errors.append(f"{prefix}.password: set password or password_enc, not both")
        if len(errors) == n_before:
            if "password" not in pool and "password_enc" not in pool:
                pool["password"] = D.POOL_PASSWORD
            pools.append(PoolConfig(**pool))
    seen: dict[str, int] = {}
    for i, pool in enumerate(pools):
        key = f"{pool.url} {pool.user}"
        if key in seen:
            errors.append(f"pools[{i}]: same url and user as pools[{seen[key]}]")
        seen[key] = i

    _check_thermal_order(thermal, errors)
    _check_tuner(tuner, errors)
    _check_guardian(guardian, errors)
    _check_api(_table(data, "api", []), api, errors)
    if board.get("kind", D.BOARD_KIND) == "remote" and "host" not in board:
        errors.append('board.host: missing (required when board.kind = "remote")')
    if "emulator_dir" in board and board.get("kind", D.BOARD_KIND) != "emulated":
        errors.append('board.emulator_dir: only for board.kind = "emulated"')
    if "ticket_difficulty" not in board and board.get("kind") == "l3plus":
        board["ticket_difficulty"] = D.BM1485_TICKET_DIFFICULTY
    listens = [api.get("http_listen", D.HTTP_LISTEN), api.get("cgminer_listen", D.CGMINER_LISTEN)]
    if listens[0] == listens[1] and not listens[0].endswith(":0"):
        errors.append(f"api.cgminer_listen: same address as api.http_listen ({listens[0]})")

    if errors:
        return None, errors
    config = Config(
        agent=AgentConfig(**agent),
        pools=tuple(sorted(pools, key=lambda p: p.priority)),
        board=BoardConfig(**board),
        thermal=ThermalConfig(**thermal),
        api=ApiConfig(**api),
        tuner=TunerConfig(**tuner),
        guardian=GuardianConfig(**guardian),
        logging=LoggingConfig(**logging_),
        alerts=AlertsConfig(**alerts),
    )
    return config, []


def _order(
    table: Mapping[str, Any], section: str, low: str, high: str, defaults: Mapping[str, Any],
    errors: list[str], *, strict: bool = True, word: str = "above",
) -> None:  # fmt: skip
    """`section.high: must be above low` unless low < high (<= when not strict). The key named is
    the one the file set (high when both or neither were set)."""
    lo, hi = table.get(low, defaults[low]), table.get(high, defaults[high])
    if lo is None or hi is None or (lo < hi if strict else lo <= hi):
        return
    if low in table and high not in table:
        other = "below" if strict else "at most"
        errors.append(f"{section}.{low}: must be {other} {high} ({hi:g}), got {lo:g}")
    else:
        errors.append(f"{section}.{high}: must be {word} {low} ({lo:g}), got {hi:g}")


THERMAL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ThermalConfig)}
TUNER_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TunerConfig)}
GUARDIAN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GuardianConfig)}


def _check_thermal_order(thermal: Mapping[str, Any], errors: list[str]) -> None:
    # What ThermalOptions requires: rearm < target <= hot < dangerous (target < hot here).
    target = thermal.get("target_temp_c", D.TARGET_TEMP_C)
    hot = thermal.get("hot_temp_c", D.HOT_TEMP_C)
    dangerous = thermal.get("dangerous_temp_c", D.DANGEROUS_TEMP_C)
    if not target < hot:
        errors.append(f"thermal.hot_temp_c: must be above target_temp_c ({target:g}), got {hot:g}")
    if not hot < dangerous:
        errors.append(
            f"thermal.dangerous_temp_c: must be above hot_temp_c ({hot:g}), got {dangerous:g}"
        )
    rearm = thermal.get("rearm_temp_c", D.THERMAL_REARM_TEMP_C)
    if not rearm < target:
        # below target implies below dangerous: a tripped chain must cool well down first
        errors.append(
            f"thermal.rearm_temp_c: must be below target_temp_c ({target:g}) and so below "
            f"dangerous_temp_c ({dangerous:g}), got {rearm:g}"
        )
    d = THERMAL_DEFAULTS
    _order(thermal, "thermal", "fan_min_pct", "fan_max_pct", d, errors, strict=False,
           word="at least")  # fmt: skip
    _order(thermal, "thermal", "throttle_min_pct", "rearm_freq_pct", d, errors, strict=False,
           word="at least")  # fmt: skip


def _check_tuner(tuner: Mapping[str, Any], errors: list[str]) -> None:
    d = TUNER_DEFAULTS
    _order(tuner, "tuner", "min_mhz", "max_mhz", d, errors)
    _order(tuner, "tuner", "voltage_min_v", "voltage_max_v", d, errors, strict=False,
           word="at least")  # fmt: skip


def _check_guardian(guardian: Mapping[str, Any], errors: list[str]) -> None:
    # GuardianOptions needs resume strictly above pause: equal thresholds give no hysteresis.
    _order(guardian, "guardian", "pause_below_usd_day", "resume_above_usd_day", GUARDIAN_DEFAULTS,
           errors)  # fmt: skip


def _check_api(raw: Mapping[str, Any], api: Mapping[str, Any], errors: list[str]) -> None:
    if "password" in raw and "password_enc" in raw:
        errors.append("api.password: set password or password_enc, not both")
    if ("tls_cert" in raw) != ("tls_key" in raw):
        missing = "tls_key" if "tls_cert" in raw else "tls_cert"
        errors.append(f"api.{missing}: missing (set tls_cert and tls_key together, or neither)")


# ---------------------------------------------------------------------------- files and env


def _read_toml(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        return None, f"{path}: cannot read: {e.strerror or e}"
    try:
        return tomllib.loads(raw.decode("utf-8")), None
    except UnicodeDecodeError:
        return None, f"{path}: not UTF-8 text"
    except tomllib.TOMLDecodeError as e:
        # tomllib's messages give line and column, never the offending text (may be a secret).
        return None, f"{path}: not valid TOML: {e}"


def overlay_path(path: Path, environment: str) -> Path:
    """`agent.toml` + "staging" -> `agent.staging.toml`, in the same folder."""
    return path.with_name(f"{path.stem}.{environment}{path.suffix or '.toml'}")


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; anything else (arrays such as pools included) is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_value(raw: str, key: str) -> Any:
    """A TOML value when the text parses as one, else the text. String keys keep the text."""
    if key in STRING_KEYS:
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(
    data: Mapping[str, Any], env: Mapping[str, str], errors: list[str]
) -> dict[str, Any]:
    """Apply DOGE_AGENT__SECTION__KEY (and DOGE_AGENT__POOLS__<i>__KEY) variables to data."""
    out = merge(data, {})
    for name in sorted(env):
        if not name.upper().startswith(D.ENV_PREFIX):
            continue
        parts = name[len(D.ENV_PREFIX) :].lower().split("__")
        value = env[name]
        if parts[0] == "pools":
            if len(parts) != 3 or not (parts[1].isascii() and parts[1].isdigit()):
                errors.append(f"{name}: pool overrides are {D.ENV_PREFIX}POOLS__<index>__<KEY>")
                continue
            index, key = int(parts[1]), parts[2]
            pools = out.get("pools")
            if not isinstance(pools, list):
                pools = []
            pools = [dict(p) if isinstance(p, dict) else p for p in pools]
            if index > len(pools):
                missing = f"pools[{len(pools)}] is not configured"
                errors.append(f"pools[{index}].{key}: set by {name}, but {missing}")
                continue
            if index == len(pools):
                pools.append({})
            if isinstance(pools[index], dict):
                pools[index][key] = _env_value(value, key)
                if key in PASSWORD_KEYS:  # a secret from the environment replaces the file's
                    pools[index].pop(next(iter(PASSWORD_KEYS - {key})), None)
            out["pools"] = pools
            continue
        if len(parts) != 2 or not all(parts):
            errors.append(f"{name}: overrides are {D.ENV_PREFIX}<SECTION>__<KEY>")
            continue
        section, key = parts
        if section not in SCHEMA:
            errors.append(f"{section}.{key}: unknown section (set by {name})")
            continue
        table = out.get(section)
        table = dict(table) if isinstance(table, dict) else {}
        table[key] = _env_value(value, key)
        if key in PASSWORD_KEYS:  # [api] password from the environment replaces the file's
            table.pop(next(iter(PASSWORD_KEYS - {key})), None)
        out[section] = table
    return out


def _gather(path: Path, env: Mapping[str, str]) -> tuple[Config | None, list[str]]:
    data, err = _read_toml(path)
    if data is None:
        return None, [err or f"{path}: cannot read"]
    errors: list[str] = []
    sources = [str(path)]
    # The overlay is picked by the environment as the env variables leave it, then env wins.
    probe = env_overrides(data, env, [])
    agent = probe.get("agent")
    environment = agent.get("environment", D.ENVIRONMENT) if isinstance(agent, dict) else None
    if isinstance(environment, str) and environment in D.ENVIRONMENTS:
        extra = overlay_path(path, environment)
        if extra.exists():
            over, err = _read_toml(extra)
            if over is None:
                return None, [err or f"{extra}: cannot read"]
            over_agent = over.get("agent")
            over_env = environment
            if isinstance(over_agent, dict):
                over_env = over_agent.get("environment", environment)
            if over_env != environment:
                errors.append(f"agent.environment: the overlay {extra.name} cannot change it")
            data = merge(data, over)
            sources.append(str(extra))
    data = env_overrides(data, env, errors)
    config, more = validate(data)
    errors.extend(more)
    if errors:
        return None, errors
    assert config is not None
    return dataclasses.replace(config, sources=tuple(sources)), []


def load(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """The validated Config of a file, its overlay and the environment; ConfigError otherwise."""
    config, errors = _gather(Path(path), os.environ if env is None else env)
    if errors or config is None:
        raise ConfigError(errors)
    return config


def check(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> list[str]:
    """Every error of the config `load` would build (empty when it is valid)."""
    return _gather(Path(path), os.environ if env is None else env)[1]


def loads(text: str, env: Mapping[str, str] | None = None) -> Config:
    """A Config from TOML text (no overlay); ConfigError on any problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"<text>: not valid TOML: {e}"]) from None
    errors: list[str] = []
    data = env_overrides(data, {} if env is None else env, errors)
    config, more = validate(data)
    errors.extend(more)
    if errors or config is None:
        raise ConfigError(errors)
    return config
