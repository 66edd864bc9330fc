"""agent.logs: JSON lines, rotation at exactly the size limit with N backups kept, a full disk
counted and never raised, secrets masked in the file, and the reader robust to bad lines."""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
from pathlib import Path

import pytest

from agent import logs
from agent.config import loads
from agent.security.secrets import SecretFilter, install_secret_filter


@pytest.fixture
def root() -> logging.Logger:
    """An isolated logger tree: the real root is left to pytest."""
    logger = logging.getLogger("test-logs-root")
    logger.propagate = False
    yield logger
    logs.teardown_logging(logger)
    for f in list(logger.filters):
        logger.removeFilter(f)


def conf(tmp_path: Path, **logging_keys: object) -> object:
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in logging_keys.items())
    return loads(f'[agent]\nstate_dir = "{tmp_path}"\n[logging]\n{lines}')


def test_every_line_is_a_json_object(tmp_path: Path, root: logging.Logger) -> None:
    setup = logs.setup_logging(conf(tmp_path, console="off"), root=root)
    log = root.getChild("agent.thing")
    log.info("hello %s", "world", extra={"chain": 2, "temps": [60.5, 61.0], "obj": object()})
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        log.exception("it failed")
    log.warning("line\nbreak and \x1b[31m escape")
    assert setup.path == tmp_path / "agent.log"
    lines = setup.path.read_text().splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(x) for x in lines)
    assert first["message"] == "hello world" and first["level"] == "info"
    assert first["logger"] == "test-logs-root.agent.thing"
    assert first["chain"] == 2 and first["temps"] == [60.5, 61.0]
    assert first["obj"].startswith("<object object")
    when = dt.datetime.fromisoformat(first["time"].replace("Z", "+00:00"))
    assert when.utcoffset() == dt.timedelta(0) and first["time"].endswith("Z")
    assert second["level"] == "error" and "ValueError: bad" in second["exc"]
    assert third["message"] == "line\nbreak and \x1b[31m escape"
    shown = logs.render(logs.parse_line(lines[2]))  # type: ignore[arg-type]
    assert "\x1b" not in shown and "\\x1b" in shown


def test_rotation_at_exactly_the_size_limit_keeps_n_backups(
    tmp_path: Path, root: logging.Logger
) -> None:
    limit, backups = 1024, 3
    setup = logs.setup_logging(
        conf(tmp_path, console="off", max_bytes=limit, backups=backups), root=root
    )
    assert setup.file_handler is not None and setup.path is not None
    log = root.getChild("r")
    path = setup.path

    def size_of(message: str) -> int:
        rec = logging.LogRecord(log.name, logging.INFO, __file__, 1, message, None, None)
        return len((setup.file_handler.format(rec) + "\n").encode())  # type: ignore[union-attr]

    # Fill the file to exactly the limit: no rollover at == limit.
    base = size_of("x")
    n = 0
    while path.stat().st_size + 2 * base + 20 < limit:
        log.info("x")
        n += 1
    pad = limit - path.stat().st_size - size_of("")
    log.info("y" * pad)  # a message of exactly the bytes left (same time width every record)
    assert path.stat().st_size == limit
    assert not path.with_name("agent.log.1").exists()
    # One more byte would cross it: the next record opens a fresh file.
    log.info("z")
    assert path.with_name("agent.log.1").stat().st_size == limit
    assert path.stat().st_size == size_of("z")
    # Retention: never more than `backups` old files, and no file ever past the limit.
    for i in range(200):
        log.info("filler %d %s", i, "f" * 50)
    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("agent.log"))
    assert files == ["agent.log", "agent.log.1", "agent.log.2", "agent.log.3"]
    assert all((tmp_path / f).stat().st_size <= limit for f in files)
    # The newest lines are in agent.log, the oldest surviving in agent.log.3, all parse.
    entries = logs.tail(path, None)
    assert entries[-1].data["message"] == "filler 199 " + "f" * 50  # type: ignore[index]
    assert all(e.data is not None for e in entries)
    assert setup.errors == 0


def test_full_disk_is_counted_not_raised(
    tmp_path: Path, root: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging, "raiseExceptions", True)  # the strictest setting
    setup = logs.setup_logging(conf(tmp_path, console="off"), root=root)
    handler = setup.file_handler
    assert handler is not None
    log = root.getChild("disk")
    log.info("before")
    assert handler.stream is not None

    def no_space(_data: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(handler.stream, "write", no_space)
    for i in range(5):
        log.error("lost %d", i)  # never raises
    assert handler.write_errors == 5 and setup.errors == 5
    assert "No space left" in handler.last_error
    monkeypatch.undo()
    log.info("after")
    messages = [e.data["message"] for e in logs.tail(tmp_path / "agent.log", None)]  # type: ignore[index]
    assert messages[0] == "before" and messages[-1] == "after"


def test_unwritable_log_file_falls_back_to_the_console(
    tmp_path: Path, root: logging.Logger
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    c = loads(f'[agent]\nstate_dir = "{tmp_path}"\n[logging]\nfile = "{blocker}/agent.log"\n')
    import io

    out = io.StringIO()
    setup = logs.setup_logging(c, console=out, root=root)
    assert setup.path is None and setup.file_handler is None and setup.problems
    root.getChild("x").info("still here")
    assert "still here" in out.getvalue() and "cannot write the log file" in out.getvalue()


def test_secrets_are_masked_in_the_file_and_the_console(
    tmp_path: Path, root: logging.Logger
) -> None:
    import io

    out = io.StringIO()
    c = conf(tmp_path, console="json")
    logs.setup_logging(c, console=out, root=root)
    secret = "hunter2-pool-pass"
    f = SecretFilter([secret])
    install_secret_filter(f, root)  # as the service does, after logging is set up
    log = root.getChild("s")
    log.info("connecting with %s", secret, extra={"password": secret})
    try:
        raise RuntimeError(f"auth failed for {secret}")
    except RuntimeError:
        log.exception("oops")
    # A second setup (a reload) keeps the filter on the new handlers.
    logs.setup_logging(c, console=out, root=root)
    log.warning("again %s", secret)
    text = (tmp_path / "agent.log").read_text()
    assert secret not in text and secret not in out.getvalue()
    assert text.count("***") >= 4
    assert all(isinstance(json.loads(x), dict) for x in text.splitlines())


def test_reader_survives_partial_and_corrupt_lines(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    good = {"time": "2026-01-01T00:00:00.000Z", "level": "info", "logger": "a", "message": "m1"}
    late = dict(good, time="2026-01-02T00:00:00.000Z", level="error", message="m2")
    path.with_name("agent.log.1").write_text(json.dumps(good) + "\n")
    path.write_bytes(
        b"\x00\xff garbage\n[1, 2]\n\n" + json.dumps(late).encode() + b'\n{"time": "2026-01-0'
    )
    entries = logs.tail(path, None)
    assert [e.data and e.data["message"] for e in entries] == ["m1", None, None, "m2", None]
    assert [e.data["message"] for e in logs.tail(path, 5, min_level="warning")] == ["m2"]  # type: ignore[index]
    since = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    assert [e.data["message"] for e in logs.tail(path, 5, since=since)] == ["m2"]  # type: ignore[index]
    assert len(logs.tail(path, 2)) == 2
    for e in entries:
        logs.render(e, colour=True)  # never raises


def test_follower_sees_new_lines_across_rotation(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    path.write_text("old\n")
    follower = logs.Follower(path)
    assert follower.poll() == []
    with path.open("a") as f:
        f.write("one\ntw")
    assert follower.poll() == ["one"]
    with path.open("a") as f:
        f.write("o\n")
    assert follower.poll() == ["two"]
    path.rename(path.with_name("agent.log.1"))
    path.write_text("fresh\n")
    assert follower.poll() == ["fresh"]
    follower.close()
