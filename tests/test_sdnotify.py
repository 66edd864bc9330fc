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


CONFIRM_SCRIPT = ROOT / "board" / "l3plus" / "rootfs-overlay" / "usr" / "libexec" / "doge-agent"
CONFIRM_SCRIPT = CONFIRM_SCRIPT / "confirm-slot"


@pytest.mark.peers
def test_confirm_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """The slot-confirm service and its timer, verified together with the agent's unit (the
    service's ExecStart pointed at the script in this checkout's rootfs overlay)."""
    analyze = require_peer("systemd-analyze")
    units = []
    for name in ("doge-agent.service", "doge-agent-confirm.service", "doge-agent-confirm.timer"):
        text = (ROOT / "systemd" / name).read_text()
        text = text.replace("/usr/bin/doge-agent", installed_command())
        text = text.replace("/usr/libexec/doge-agent/confirm-slot", str(CONFIRM_SCRIPT))
        (tmp_path / name).write_text(text)
        units.append(str(tmp_path / name))
    out = subprocess.run(
        [analyze, "verify", *units], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr


def test_confirm_unit_promises() -> None:
    """The confirm unit runs the overlay's script after the agent, on a timer that retries."""
    service = (ROOT / "systemd" / "doge-agent-confirm.service").read_text()
    for line in (
        "Type=oneshot",
        "RemainAfterExit=yes",
        "After=doge-agent.service",
        "ExecStart=/usr/libexec/doge-agent/confirm-slot",
        "ConditionPathExists=/etc/fw_env.config",
        "NoNewPrivileges=yes",
    ):
        assert line in service, line
    timer = (ROOT / "systemd" / "doge-agent-confirm.timer").read_text()
    for line in ("OnBootSec=", "OnUnitInactiveSec=", "Unit=doge-agent-confirm.service"):
        assert line in timer, line
    assert "WantedBy=timers.target" in timer
    assert os.access(CONFIRM_SCRIPT, os.X_OK)


def _fake_env(tmp_path: Path, env: dict[str, str], *, active: str, since_s: int) -> dict:
    """fw_printenv / fw_setenv over a key=value file, and a systemctl that answers from args."""
    store = tmp_path / "uboot.env"
    store.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    printenv = tmp_path / "fw_printenv"
    printenv.write_text(
        "#!/usr/bin/env bash\nset -euo pipefail\n"
        f'f={store}\nif [[ $# -eq 0 ]]; then cat "$f"; exit 0; fi\n'
        "[[ $1 == -n ]] || exit 9\n"
        'line=$(grep "^$2=" "$f") || { echo "## Error: \\"$2\\" not defined" >&2; exit 1; }\n'
        'echo "${line#*=}"\n'
    )
    setenv = tmp_path / "fw_setenv"
    setenv.write_text(
        "#!/usr/bin/env bash\nset -euo pipefail\n"
        f"f={store}\n[[ $1 == -s ]] || exit 9\n"
        'while read -r k v; do grep -v "^$k=" "$f" >"$f.new" || true; '
        'echo "$k=$v" >>"$f.new"; mv "$f.new" "$f"; done <"$2"\n'
    )
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(
        "#!/usr/bin/env bash\n"
        f"case $1 in is-active) echo {active}; [[ {active} == active ]];; "
        f"show) echo {since_s * 1000000};; *) exit 9;; esac\n"
    )
    uptime = tmp_path / "uptime"
    uptime.write_text("1000.25 3000.00\n")
    for f in (printenv, setenv, systemctl):
        f.chmod(0o755)
    return {
        **os.environ,
        "FW_PRINTENV": str(printenv),
        "FW_SETENV": str(setenv),
        "SYSTEMCTL": str(systemctl),
        "UPTIME_FILE": str(uptime),
        "PYTHON": sys.executable,
        "DOGE_AGENT_CONFIRM_MIN_ACTIVE_S": "600",
    }


def _health_server(status: int, body: bytes):
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.mark.parametrize(
    ("active", "since_s", "status", "body", "rc", "confirmed"),
    [
        ("active", 100, 200, b'{"status": "ok"}', 0, True),  # 900 s healthy: confirm
        ("active", 700, 200, b'{"status": "ok"}', 1, False),  # only 300 s so far
        ("active", 100, 503, b'{"status": "degraded", "reasons": ["hot"]}', 1, False),
        ("failed", 100, 200, b'{"status": "ok"}', 1, False),  # agent not running
    ],
)
def test_confirm_slot_marks_good_only_when_healthy(
    tmp_path: Path, active: str, since_s: int, status: int, body: bytes, rc: int, confirmed: bool
) -> None:
    env = _fake_env(
        tmp_path,
        {"boot_slot": "B", "upgrade_available": "1", "bootcount": "2"},
        active=active,
        since_s=since_s,
    )
    srv = _health_server(status, body)
    try:
        env["DOGE_AGENT_HEALTH_URL"] = f"http://127.0.0.1:{srv.server_address[1]}/api/health"
        res = subprocess.run(
            ["bash", str(CONFIRM_SCRIPT)], capture_output=True, text=True, env=env, timeout=30
        )
    finally:
        srv.shutdown()
    assert res.returncode == rc, res.stdout + res.stderr
    stored = (tmp_path / "uboot.env").read_text()
    if confirmed:
        assert "slot B confirmed" in res.stdout
        assert "upgrade_available=0" in stored and "bootcount=0" in stored
    else:
        assert "not confirmed" in res.stdout
        assert "upgrade_available=1" in stored and "bootcount=2" in stored


def test_confirm_slot_without_a_pending_update_does_nothing(tmp_path: Path) -> None:
    env = _fake_env(
        tmp_path, {"boot_slot": "A", "upgrade_available": "0"}, active="failed", since_s=0
    )
    res = subprocess.run(
        ["bash", str(CONFIRM_SCRIPT)], capture_output=True, text=True, env=env, timeout=30
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "slot A already confirmed" in res.stdout
