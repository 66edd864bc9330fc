"""The systemd notify protocol over a real AF_UNIX datagram socket, and the unit files checked by
systemd-analyze verify."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, require_peer

from agent.sdnotify import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield path, sock
    sock.close()


def test_messages_reach_the_socket(notify_socket) -> None:
    path, sock = notify_socket
    n = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "30000000"})
    assert n.ready("mining on 2 threads")
    assert sock.recv(4096) == b"READY=1\nSTATUS=mining on 2 threads"
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert n.status("pool  down\nretrying")
    assert sock.recv(4096) == b"STATUS=pool down retrying"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    assert n.watchdog_interval_s() == 15.0
    assert n.sent == 4


def test_abstract_namespace_socket() -> None:
    name = f"doge-agent-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(64) == b"READY=1"


def test_without_systemd_nothing_is_sent() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready()
    assert n.watchdog_interval_s() is None


def test_watchdog_meant_for_another_process_is_ignored(notify_socket) -> None:
    path, _ = notify_socket
    n = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval_s() is None


def test_a_vanished_socket_is_counted_not_raised(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert not n.ready()
    assert n.failed == 1


def test_bad_fields_are_refused() -> None:
    n = Notifier({"NOTIFY_SOCKET": "/nonexistent"})
    with pytest.raises(ValueError, match="KEY=VALUE"):
        n.send("READY=1\nMAINPID=1")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        n.send("READY")


def installed_command() -> str:
    """The doge-agent console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "doge-agent"
    if not script.exists():
        pytest.fail(f"{script} is missing: install the package (make test does: pip install -e .)")
    return str(script)


@pytest.mark.peers
def test_unit_files_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """The unit as shipped, with ExecStart pointed at this checkout's installed command (verify
    insists that the program exists)."""
    analyze = require_peer("systemd-analyze")
    unit = (ROOT / "systemd" / "doge-agent.service").read_text()
    assert "/usr/bin/doge-agent" in unit
    target = tmp_path / "doge-agent.service"
    target.write_text(unit.replace("/usr/bin/doge-agent", installed_command()))
    out = subprocess.run(
        [analyze, "verify", str(target)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr


def test_unit_promises() -> None:
    """What the unit must keep: notify with a watchdog, the self-test first, least privilege."""
    unit = (ROOT / "systemd" / "doge-agent.service").read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "ExecStartPre=/usr/bin/doge-agent selftest",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "DevicePolicy=closed",
        "SupplementaryGroups=dialout i2c",
        "CapabilityBoundingSet=\n",
    ):
        assert line in unit, line
    sysusers = (ROOT / "systemd" / "doge-agent.sysusers").read_text()
    assert "m doge-agent dialout" in sysusers and "m doge-agent i2c" in sysusers
    tmpfiles = (ROOT / "systemd" / "doge-agent.tmpfiles").read_text()
    assert "d /var/lib/doge-agent 0700 doge-agent doge-agent" in tmpfiles
