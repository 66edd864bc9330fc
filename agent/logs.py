"""Structured logs: one JSON object per line in a size-rotated file, a readable console, and the
reader `doge-agent logs` uses.

    setup = setup_logging(conf)        # replaces any handlers an earlier setup installed
    setup.file_handler.write_errors          # write failures (a full disk): counted, never raised

Every line of the file is {"time": ISO-8601 UTC, "level", "logger", "message", ...extra fields,
"exc": traceback text}. Rotation: the file is never grown past `max_bytes` by a record (a record
that would cross the limit goes to a fresh file; agent.log.1 is the newest backup) and `backups`
old files are kept. The secret filter (agent.security.secrets.install_secret_filter) is added to
every root handler, so it applies to the file and the console alike; setup_logging carries a
filter already installed over to the new handlers."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import logging.handlers
import math
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from agent import defaults as D

# Attributes every LogRecord has: anything else on a record is an `extra` field.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName",
}  # fmt: skip
_OURS = "_doge_agent_handler"  # marks the handlers setup_logging installed
HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _iso(created: float) -> str:
    stamp = dt.datetime.fromtimestamp(created, dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    """A JSON-ready copy: numbers, strings, bools, None, lists and dicts; str() for the rest."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return str(value)


def extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside strings are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # bad %-args must not lose the line
            message = f"{record.msg!s} {record.args!r}"
        out: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        for key, value in extras(record).items():
            if key not in out:
                out[key] = _plain(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


class HumanFormatter(logging.Formatter):
    """`2026-01-02 03:04:05,678 INFO agent.service: message key=value` for a terminal."""

    def __init__(self) -> None:
        super().__init__(HUMAN_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        more = extras(record)
        if more:
            first, nl, rest = text.partition("\n")
            shown = " ".join(f"{k}={_plain(v)}" for k, v in more.items())
            text = f"{first} [{shown}]{nl}{rest}"
        return text


class _CountingErrors:
    """handleError that counts instead of printing a traceback per record (a full disk would
    otherwise flood stderr, or raise with logging.raiseExceptions)."""

    write_errors: int = 0
    last_error: str = ""

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        self.write_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}" if exc else "unknown error"
        if self.write_errors == 1:  # say it once, on stderr, without going through logging again
            with contextlib.suppress(Exception):
                sys.stderr.write(f"doge-agent: cannot write a log record: {self.last_error}\n")


class RotatingJsonFileHandler(_CountingErrors, logging.handlers.RotatingFileHandler):
    """RotatingFileHandler that rolls over before a record would take the file past max_bytes
    (so a file may reach exactly max_bytes, never more, unless one record alone is bigger),
    never rolls an empty file, and counts write errors instead of raising them."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int, backups: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8",
                         delay=True)  # fmt: skip
        self.setFormatter(JsonFormatter())

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        if self.maxBytes <= 0:
            return False
        if self.stream is None:
            self.stream = self._open()
        size = self.stream.tell()
        if size == 0:
            return False
        line = self.format(record) + self.terminator
        return size + len(line.encode("utf-8")) > self.maxBytes


class ConsoleHandler(_CountingErrors, logging.StreamHandler):  # type: ignore[type-arg]
    pass


@dataclass
class LogSetup:
    path: Path | None
    file_handler: RotatingJsonFileHandler | None
    console_handler: logging.Handler | None
    problems: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(h.write_errors for h in (self.file_handler, self.console_handler)
                   if isinstance(h, _CountingErrors))  # fmt: skip


def log_path(conf: Any) -> Path:
    """The log file of a Config: [logging] file, relative to [agent] state_dir unless absolute."""
    name = Path(conf.logging.file)
    return name if name.is_absolute() else Path(conf.agent.state_dir) / name


def setup_logging(
    conf: Any, *, console: TextIO | None = None, root: logging.Logger | None = None
) -> LogSetup:
    """Install the file and console handlers on the root logger (replacing earlier ones of ours).
    Never raises: a log file that cannot be opened leaves the console, and says why."""
    root = root or logging.getLogger()
    lc = conf.logging
    level = (lc.level or conf.agent.log_level).upper()
    carried: list[logging.Filter] = []
    for handler in list(root.handlers):
        if getattr(handler, _OURS, False):
            carried.extend(f for f in handler.filters if isinstance(f, logging.Filter)
                           and f not in carried)  # fmt: skip
            root.removeHandler(handler)
            handler.close()
    problems: list[str] = []
    path: Path | None = log_path(conf)
    file_handler: RotatingJsonFileHandler | None = None
    try:
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = RotatingJsonFileHandler(path, lc.max_bytes, lc.backups)
        with open(path, "a", encoding="utf-8"):  # fail now, not at the first record
            pass
    except OSError as exc:
        problems.append(f"cannot write the log file {path}: {exc.strerror or exc}")
        file_handler, path = None, None
    console_handler: logging.Handler | None = None
    if lc.console != "off":
        console_handler = ConsoleHandler(console or sys.stderr)
        console_handler.setFormatter(JsonFormatter() if lc.console == "json" else HumanFormatter())
    for handler in (file_handler, console_handler):
        if handler is not None:
            setattr(handler, _OURS, True)
            for f in carried:
                handler.addFilter(f)
            root.addHandler(handler)
    root.setLevel(level)
    log = root.getChild("agent.logs")
    for problem in problems:
        log.warning("%s; logging to the console only", problem)
    return LogSetup(path, file_handler, console_handler, problems)


def teardown_logging(root: logging.Logger | None = None) -> None:
    root = root or logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OURS, False):
            root.removeHandler(handler)
            handler.close()


# ---------------------------------------------------------------------------- reading


LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


@dataclass(frozen=True)
class Entry:
    """One line of the log file: parsed when it is a JSON object, else kept as raw text."""

    raw: str
    data: dict[str, Any] | None

    @property
    def level(self) -> str:
        value = self.data.get("level") if self.data else None
        return value.lower() if isinstance(value, str) else ""

    @property
    def time(self) -> dt.datetime | None:
        value = self.data.get("time") if self.data else None
        return parse_time(value) if isinstance(value, str) else None


def parse_time(text: str) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def parse_line(line: str) -> Entry | None:
    """An Entry for a line (None for a blank one); a corrupt or partial line is kept raw."""
    text = line.rstrip("\r\n")
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return Entry(text, None)
    return Entry(text, data) if isinstance(data, dict) else Entry(text, None)


def _safe(text: str) -> str:
    """No terminal escapes from a log line: control characters shown as \\xNN."""
    return "".join(c if c == "\n" or c.isprintable() else f"\\x{ord(c):02x}" for c in text)


COLOURS = {"debug": "2", "info": "", "warning": "33", "error": "31", "critical": "1;31"}


def render(entry: Entry, colour: bool = False) -> str:
    """A readable line: `time LEVEL logger: message key=value`, the traceback indented below."""
    if entry.data is None:
        return _safe("? " + entry.raw)
    d = entry.data
    when = entry.time
    stamp = when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if when else "?"
    level = entry.level or "?"
    core = {"time", "level", "logger", "message", "exc", "stack"}
    rest = " ".join(f"{k}={json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v}"
                    for k, v in d.items() if k not in core)  # fmt: skip
    line = f"{stamp} {level.upper():<7} {d.get('logger', '?')}: {d.get('message', '')}"
    if rest:
        line += f" [{rest}]"
    for key in ("exc", "stack"):
        if isinstance(d.get(key), str):
            line += "\n" + "\n".join("    " + x for x in str(d[key]).splitlines())
    line = _safe(line)
    code = COLOURS.get(level, "")
    return f"\x1b[{code}m{line}\x1b[0m" if colour and code else line


def wanted(entry: Entry, min_level: str | None, since: dt.datetime | None) -> bool:
    if min_level is not None and (
        entry.data is None or LEVELS.get(entry.level, 0) < LEVELS[min_level]
    ):
        return False
    if since is not None:
        when = entry.time
        if when is None or when < since:
            return False
    return True


def files_oldest_first(path: Path, backups: int = D.LOG_MAX_BACKUPS) -> list[Path]:
    """agent.log.N ... agent.log.1, agent.log: the ones that exist."""
    out = [path.with_name(f"{path.name}.{i}") for i in range(backups, 0, -1)]
    return [p for p in (*out, path) if p.is_file()]


def read_lines(paths: Iterable[Path]) -> Iterator[str]:
    for p in paths:
        try:
            with open(p, encoding="utf-8", errors="replace", newline="") as f:
                yield from f
        except OSError:
            continue


def tail(path: Path, n: int | None, min_level: str | None = None,
         since: dt.datetime | None = None) -> list[Entry]:  # fmt: skip
    """The last n wanted entries across the file and its backups (all of them for None)."""
    entries: list[Entry] = []
    for line in read_lines(files_oldest_first(path)):
        entry = parse_line(line)
        if entry is not None and wanted(entry, min_level, since):
            entries.append(entry)
            if n is not None and len(entries) > 4 * n + 1024:
                del entries[:-n]
    return entries if n is None else entries[-n:] if n else []


class Follower:
    """New complete lines of a growing log, surviving rotation (a new inode or a shrunk file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: io.TextIOWrapper | None = None
        self._ino: int | None = None
        self._partial = ""
        self._open(at_end=True)

    def _open(self, at_end: bool) -> None:
        try:
            f = open(self.path, encoding="utf-8", errors="replace", newline="")  # noqa: SIM115
        except OSError:
            self._f, self._ino = None, None
            return
        if at_end:
            f.seek(0, os.SEEK_END)
        self._f, self._ino = f, os.fstat(f.fileno()).st_ino

    def poll(self) -> list[str]:
        lines: list[str] = []
        if self._f is not None:
            lines += self._drain()
        try:
            st = os.stat(self.path)
        except OSError:
            return lines
        rotated = self._f is None or st.st_ino != self._ino
        if not rotated and self._f is not None and st.st_size < self._f.tell():
            rotated = True  # truncated in place
        if rotated:
            if self._f is not None:
                self._f.close()
            self._partial = ""
            self._open(at_end=False)
            if self._f is not None:
                lines += self._drain()
        return lines

    def _drain(self) -> list[str]:
        assert self._f is not None
        data = self._partial + self._f.read()
        *complete, self._partial = data.split("\n")
        return complete

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
