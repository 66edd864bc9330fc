"""The systemd notify protocol (sd_notify(3)): READY, STATUS, STOPPING and WATCHDOG datagrams to
the socket systemd names in NOTIFY_SOCKET. Without that variable every call is a no-op, so the
agent runs the same under systemd, in a shell and in tests."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def socket_address(value: str) -> str | bytes:
    """NOTIFY_SOCKET as an AF_UNIX address: '@name' is the abstract namespace."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


class Notifier:
    """Sends notify messages; reads its settings from the environment systemd gives the service."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address: str | bytes | None = None
        raw = env.get("NOTIFY_SOCKET", "")
        if raw.startswith(("/", "@")):
            self.address = socket_address(raw)
        elif raw:
            log.warning("NOTIFY_SOCKET=%r is not a unix socket path; not notifying systemd", raw)
        self.watchdog_usec = 0
        pid = env.get("WATCHDOG_PID", "")
        usec = env.get("WATCHDOG_USEC", "")
        # WATCHDOG_PID names the process the watchdog is meant for; a child must not ping for it
        if usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_usec = int(usec)
        self.sent = 0
        self.failed = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half the watchdog period, as sd_watchdog_enabled(3) advises."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec and self.enabled else None

    def send(self, *fields: str) -> bool:
        """One datagram of newline-separated KEY=VALUE fields; False when it could not be sent."""
        if self.address is None:
            return False
        for field in fields:
            if "=" not in field or "\n" in field:
                raise ValueError(f"notify field must be one KEY=VALUE line, got {field!r}")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            self.failed += 1
            log.warning("systemd notify failed: %s", exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={' '.join(text.split())}")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        return self.send("RELOADING=1")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")
