"""Atomic JSON state files that survive SIGKILL and power loss, with the last good copy kept.

save(): the document goes to a temp file in the same folder, is fsynced, renamed over the main
file, and the folder is fsynced: at every instant the main file is either the old or the new
document, never a mix. Before that, the previous good document is written (the same way) to
`<name>.bak`, so a main file damaged later (a bad flash block, an editor, a truncating copy) still
leaves one good generation behind. A failed write (ENOSPC, EROFS, EIO...) is logged, counted and
leaves the old files untouched; it never raises.

load(): the main file, validated (schema, version, checksum, the caller's own check); when it is
missing, empty, truncated or wrong, `<name>.bak` with a warning naming the file and the fault;
None when neither is usable. It never raises on bad content."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT = "doge-agent-state"
MAX_BYTES = 4 * 1024 * 1024  # a state file bigger than this is not ours: refuse to parse it
# a run of failed writes is logged at its start and then every this many failures (not every
# save period: a full disk would otherwise flood the log it also needs space for)
LOG_EVERY_FAILURES = 20

Validator = Callable[[dict[str, Any]], str | None]  # None when good, else what is wrong


def _digest(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def encode(kind: str, version: int, data: dict[str, Any]) -> bytes:
    doc = {"format": FORMAT, "kind": kind, "version": version, "sha256": _digest(data),
           "data": data}  # fmt: skip
    return (json.dumps(doc, sort_keys=True, indent=1, allow_nan=False) + "\n").encode()


def decode(
    raw: bytes, kind: str, version: int, validate: Validator | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """(data, None) for a good document of `kind`, else (None, what is wrong)."""
    if not raw.strip():
        return None, "empty"
    if len(raw) > MAX_BYTES:
        return None, f"too large ({len(raw)} bytes)"
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return None, f"not valid JSON (truncated?): {exc}"
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return None, "not a doge-agent state file"
    if doc.get("kind") != kind:
        return None, f"holds {doc.get('kind')!r}, not {kind!r}"
    v = doc.get("version")
    if not isinstance(v, int) or isinstance(v, bool):
        return None, "no schema version"
    if v != version:
        return None, f"schema version {v}, this agent reads {version}"
    data = doc.get("data")
    if not isinstance(data, dict):
        return None, "no data object"
    try:
        if doc.get("sha256") != _digest(data):
            return None, "checksum mismatch (damaged)"
    except ValueError as exc:  # NaN or infinity slipped in
        return None, f"bad value: {exc}"
    if validate is not None:
        try:
            problem = validate(data)
        except Exception as exc:  # a validator bug must not make a bad file crash the agent
            problem = f"check failed: {type(exc).__name__}: {exc}"
        if problem:
            return None, problem
    return data, None


def _fsync_dir(folder: Path) -> None:
    # The rename is only durable once the folder's entry is on disk; some filesystems refuse
    # to open or fsync a folder, which is then as good as it gets.
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, payload: bytes, mode: int = 0o600) -> None:
    """Write `payload` to `path` so that a reader sees the old or the new bytes, never a mix.
    Raises OSError; the old file is untouched then and the temp file removed."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            view = memoryview(payload)
            while view:
                n = os.write(fd, view)
                if n <= 0:  # a short write that makes no progress: treat as a full disk
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class StateFile:
    """One JSON state file of a given kind and schema version, plus its `.bak`."""

    def __init__(
        self, path: str | os.PathLike[str], kind: str, version: int = 1,
        validate: Validator | None = None,
    ) -> None:  # fmt: skip
        self.path = Path(path)
        self.bak = self.path.with_name(self.path.name + ".bak")
        self.kind = kind
        self.version = version
        self.validate = validate
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()  # a periodic save in a thread and the shutdown save
        self._good: bytes | None = None  # what the main file holds when it is known good
        self._failing = 0

    # ---------------------------------------------------------------------------- load

    def _read(self, path: Path) -> tuple[dict[str, Any] | None, bytes, str | None]:
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return None, b"", "missing"
        except OSError as exc:
            return None, b"", f"cannot read: {exc.strerror or exc}"
        data, problem = decode(raw, self.kind, self.version, self.validate)
        return data, raw, problem

    def load(self) -> dict[str, Any] | None:
        """The saved data, from the main file or else the .bak; None when neither is usable."""
        with self._lock:
            with contextlib.suppress(OSError):  # a temp file a SIGKILL left behind
                os.unlink(self.path.with_name(f".{self.path.name}.tmp"))
            data, raw, problem = self._read(self.path)
            if data is not None:
                self._good = raw
                self.counts["loaded"] += 1
                return data
            bak, _, bak_problem = self._read(self.bak)
            if problem == "missing" and bak_problem == "missing":
                return None  # the first start: nothing saved yet
            if problem != "missing":
                self.counts["main_bad"] += 1
            if bak is not None:
                log.warning("state file %s is unusable (%s): using %s", self.path, problem,
                            self.bak)  # fmt: skip
                self.counts["loaded_bak"] += 1
                # the main file is bad: the next save must not rotate it over the good .bak
                self._good = None
                return bak
            self.counts["lost"] += 1
            log.warning(
                "state file %s is unusable (%s) and so is %s (%s): starting from zero",
                self.path, problem, self.bak, bak_problem,
            )  # fmt: skip
            return None

    # ---------------------------------------------------------------------------- save

    def save(self, data: dict[str, Any]) -> bool:
        """Write `data`; True when it is on disk. A failure is logged (not every time in a run
        of failures), counted, and leaves the old files as they were."""
        try:
            payload = encode(self.kind, self.version, data)
        except (TypeError, ValueError) as exc:
            self.counts["encode_failed"] += 1
            log.error("state file %s: cannot encode the data: %s", self.path, exc)
            return False
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self._good is not None and self._good != payload:
                    # the previous good generation becomes the .bak before the main file moves
                    atomic_write(self.bak, self._good)
                atomic_write(self.path, payload)
            except OSError as exc:
                self._failed(exc)
                return False
            self._good = payload
            self.counts["saved"] += 1
            if self._failing:
                log.info("state file %s: written again after %d failure(s)", self.path,
                         self._failing)  # fmt: skip
                self._failing = 0
            return True

    def _failed(self, exc: OSError) -> None:
        self.counts["write_failed"] += 1
        if exc.errno == errno.ENOSPC:
            self.counts["disk_full"] += 1
        if self._failing % LOG_EVERY_FAILURES == 0:
            what = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            log.error("state file %s not written (%s); the previous copy is kept", self.path, what)
        self._failing += 1
