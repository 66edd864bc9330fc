"""The I2C bus of an emulated board that runs in another process (`doge-agent emulate --root`).

A real controller reaches its PICs and TMP75s through /dev/i2c-0; an emulator in its own process
cannot create that device without a kernel module, so it answers the same transactions on a unix
socket, and `i2c_bus = "unix:PATH"` makes the agent's bus an `LinkBus` there. Everything above the
bus (agent/hardware/pic.py, sensors.py) is the code that runs on the board.

Wire format: one JSON object per line each way. A request names an operation; the reply is
{"ok": value} or {"error": text, "errno": n}. A bus error becomes the OSError smbus2 would raise
(EREMOTEIO for a missing acknowledgement), so the drivers see what they see on the board."""

from __future__ import annotations

import errno as E
import json
import socket
import threading
from collections.abc import Sequence
from typing import Any

from agent import defaults as D

PREFIX = "unix:"



class LinkError(OSError):
    """The emulator could not be reached or answered with something that is not a reply."""


class LinkClient:
    """A blocking JSON-lines client on a unix socket, one request at a time (any thread)."""

    def __init__(self, path: str, timeout_s: float = D.EMULATOR_LINK_TIMEOUT_S) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._buf = b""

    def _connect(self) -> socket.socket:
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout_s)
            try:
                s.connect(self.path)
            except OSError as e:
                s.close()
                raise LinkError(
                    e.errno or E.ECONNREFUSED, f"emulator link {self.path}: {e.strerror or e}"
                ) from None
            self._sock, self._buf = s, b""
        return self._sock

    def call(self, request: dict[str, Any]) -> Any:
        """Send one request and return its "ok" value; OSError(errno) for an error reply."""
        line = json.dumps(request, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            sock = self._connect()
            try:
                sock.sendall(line)
                while b"\n" not in self._buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise LinkError(E.ECONNRESET, f"emulator link {self.path}: closed")
                    self._buf += chunk
                    if len(self._buf) > D.EMULATOR_LINK_MAX_LINE_BYTES:
                        raise LinkError(E.EPROTO, f"emulator link {self.path}: reply too long")
            except OSError as e:
                self._drop()
                if isinstance(e, LinkError):
                    raise
                raise LinkError(e.errno or E.EIO, f"emulator link {self.path}: {e}") from None
            raw, self._buf = self._buf.split(b"\n", 1)
        try:
            reply = json.loads(raw)
        except ValueError:
            raise LinkError(E.EPROTO, f"emulator link {self.path}: reply is not JSON") from None
        if not isinstance(reply, dict) or not ("ok" in reply or "error" in reply):
            raise LinkError(E.EPROTO, f"emulator link {self.path}: not a reply: {raw[:80]!r}")
        if "error" in reply:
            code = reply.get("errno")
            raise OSError(code if isinstance(code, int) else E.EIO, str(reply["error"]))
        return reply["ok"]

    def _drop(self) -> None:  # with the lock held
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        with self._lock:
            self._drop()


class LinkBus:
    """smbus2.SMBus-shaped (the methods our drivers call), answered by the emulator's bus."""

    def __init__(self, spec: str, timeout_s: float = D.EMULATOR_LINK_TIMEOUT_S) -> None:
        if not spec.startswith(PREFIX) or len(spec) == len(PREFIX):
            raise ValueError(f'an emulator link is "unix:/path/to/socket", got {spec!r}')
        self.name = spec
        self.link = LinkClient(spec[len(PREFIX):], timeout_s)

    def _i2c(self, call: str, *args: Any) -> Any:
        return self.link.call({"op": "i2c", "call": call, "args": list(args)})

    def write_byte(self, i2c_addr: int, value: int, force: bool | None = None) -> None:
        self._i2c("write_byte", i2c_addr, value)

    def read_byte(self, i2c_addr: int, force: bool | None = None) -> int:
        return int(self._i2c("read_byte", i2c_addr))

    def write_byte_data(
        self, i2c_addr: int, register: int, value: int, force: bool | None = None
    ) -> None:
        self._i2c("write_byte_data", i2c_addr, register, value)

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        return int(self._i2c("read_byte_data", i2c_addr, register))

    def read_i2c_block_data(
        self, i2c_addr: int, register: int, length: int, force: bool | None = None
    ) -> list[int]:
        return [int(b) for b in self._i2c("read_i2c_block_data", i2c_addr, register, length)]

    def write_i2c_block_data(
        self, i2c_addr: int, register: int, data: Sequence[int], force: bool | None = None
    ) -> None:
        self._i2c("write_i2c_block_data", i2c_addr, register, list(data))

    def close(self) -> None:
        self.link.close()

    def __enter__(self) -> LinkBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
