"""The emulated L3+ in its own process: `doge-agent emulate --root DIR`.

On the board the hash chips and the I2C parts are hardware outside the agent's process; in tests
and benchmarks the emulator running inside the agent shares its interpreter, its GIL and its
memory, so the agent's own CPU, RSS and latency cannot be told apart. Here the emulator runs alone:

* the chains answer on pseudo-terminals (agent/emulator/hashboard.py), as in-process;
* the sysfs folder (fans, GPIOs, LEDs) is DIR itself, a folder both processes see;
* the controller's I2C bus (PICs, TMP75) answers on the unix socket DIR/link.sock, which the
  agent opens as `i2c_bus = "unix:DIR/link.sock"` (agent/hardware/linkbus.py);
* the same socket takes fault injection and readings for tests and benchmarks (EmulatorControl);
* DIR/emulator.json says where everything is; `[board] emulator_dir = "DIR"` reads it.

Requests are JSON lines (see linkbus.py). Only the operations named below are served; anything
else gets an error reply naming what was wrong, and the connection stays up."""

from __future__ import annotations

import asyncio
import contextlib
import errno as E
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import defaults as D
from agent.hardware.linkbus import PREFIX, LinkClient

if TYPE_CHECKING:  # the agent reads descriptions (read_description) without the emulator's code
    from agent.emulator.board import EmulatedL3Plus

log = logging.getLogger(__name__)

I2C_CALLS = {  # smbus2 method -> its arguments
    "write_byte": ("address", "value"), "read_byte": ("address",),
    "write_byte_data": ("address", "register", "value"),
    "read_byte_data": ("address", "register"),
    "read_i2c_block_data": ("address", "register", "length"),
    "write_i2c_block_data": ("address", "register", "data"),
}
# fault injection on one chain (EmulatedChain methods) and on the board (EmulatedPeripherals)
CHAIN_CALLS = {
    "vanish", "restore", "corrupt", "lose_bytes", "noise", "bad_nonces", "unknown_work_nonces",
    "stale_nonces", "repeat_nonces", "go_silent", "wake",
}  # fmt: skip
BOARD_CALLS = {"force_chip_sensor", "force_tmp75", "kill_fan", "fail_pic", "unplug"}


class RequestError(ValueError):
    """A request this server does not serve; the text names what was wrong."""


def _int(v: Any, what: str, lo: int = 0, hi: int = 0xFF) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise RequestError(f"{what} must be an integer in {lo}..{hi}, got {v!r}")
    return v


def _args(req: dict[str, Any]) -> list[Any]:
    args = req.get("args", [])
    if not isinstance(args, list) or len(args) > 8:
        raise RequestError(f"args must be a list of at most 8 values, got {args!r}")
    for a in args:
        if isinstance(a, list) and len(a) <= 32 and all(isinstance(b, int) for b in a):
            continue  # a block of bytes
        if a is not None and not isinstance(a, int | float | str | bool):
            raise RequestError(f"args must be numbers, strings, null or byte lists, got {a!r}")
        if isinstance(a, int) and not -1 <= a <= 0xFFFF:  # positions, counts, raw words
            raise RequestError(f"integer args must be in -1..65535, got {a}")
    return args


class EmulatorServer:
    """Serves one EmulatedL3Plus on a unix socket; runs on the emulator's event loop, so the
    peripherals are touched from one thread only (the chains lock themselves)."""

    def __init__(self, board: EmulatedL3Plus, path: str | Path) -> None:
        self.board = board
        self.path = str(path)
        self.requests = 0
        self.errors = 0
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(
            self._serve, self.path, limit=D.EMULATOR_LINK_MAX_LINE_BYTES
        )
        os.chmod(self.path, 0o600)  # the board's owner only, like /dev/i2c-0 (root, 0600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._clients):
                t.cancel()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._clients) >= D.EMULATOR_LINK_MAX_CLIENTS:
            writer.write(b'{"error":"too many clients","errno":%d}\n' % E.EBUSY)
            writer.close()
            return
        assert task is not None
        self._clients.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(self._error("request line too long", E.EMSGSIZE))
                    break
                if not line:
                    break
                writer.write(self.handle_line(line))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()

    def _error(self, text: str, code: int) -> bytes:
        self.errors += 1
        return json.dumps({"error": text, "errno": code}).encode() + b"\n"

    def handle_line(self, line: bytes) -> bytes:
        """One request line -> one reply line; never raises."""
        self.requests += 1
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return self._error("request is not a JSON line", E.EINVAL)
        if not isinstance(req, dict):
            return self._error("request must be a JSON object", E.EINVAL)
        try:
            value = self.handle(req)
        except RequestError as e:
            return self._error(str(e), E.EINVAL)
        except OSError as e:  # the emulated bus: no acknowledgement, closed, a PIC fault
            return self._error(str(e), e.errno or E.EIO)
        except (ValueError, TypeError, IndexError) as e:
            return self._error(f"{req.get('op')}: {e}", E.EINVAL)
        return json.dumps({"ok": value}, separators=(",", ":")).encode() + b"\n"

    def handle(self, req: dict[str, Any]) -> Any:
        op = req.get("op")
        handler: Callable[[dict[str, Any]], Any] | None = {
            "i2c": self._i2c, "chain": self._chain, "board": self._board_call,
            "set": self._set, "stats": self._stats,
        }.get(op)  # type: ignore[arg-type]  # fmt: skip
        if handler is None:
            raise RequestError(f"op must be i2c, chain, board, set or stats, got {op!r}")
        return handler(req)

    def _i2c(self, req: dict[str, Any]) -> Any:
        call, args = req.get("call"), _args(req)
        if call not in I2C_CALLS:
            raise RequestError(f"i2c call must be one of {sorted(I2C_CALLS)}, got {call!r}")
        names = I2C_CALLS[call]
        if len(args) != len(names):
            raise RequestError(f"i2c {call} takes {', '.join(names)}, got {len(args)} arguments")
        ints: list[Any] = []
        for name, a in zip(names, args, strict=True):
            if name == "data":
                if not isinstance(a, list):
                    raise RequestError(f"i2c {call}: data must be a list of <= 32 bytes")
                ints.append([_int(b, "a data byte") for b in a])
            else:
                ints.append(_int(a, f"i2c {call}: {name}", 0, 0x7F if name == "address" else 0xFF))
        return getattr(self.board.peripherals.bus, call)(*ints)

    def _chain(self, req: dict[str, Any]) -> Any:
        call, args = req.get("call"), _args(req)
        chains = self.board.chips.chains
        i = _int(req.get("chain"), "chain", 0, len(chains) - 1)
        if call not in CHAIN_CALLS:
            raise RequestError(f"chain call must be one of {sorted(CHAIN_CALLS)}, got {call!r}")
        return getattr(chains[i], call)(*args)

    def _board_call(self, req: dict[str, Any]) -> Any:
        call, args = req.get("call"), _args(req)
        if call not in BOARD_CALLS:
            raise RequestError(f"board call must be one of {sorted(BOARD_CALLS)}, got {call!r}")
        return getattr(self.board.peripherals, call)(*args)

    def _set(self, req: dict[str, Any]) -> Any:
        lo, hi = D.MIN_TEMP_C, D.MAX_TEMP_C
        for key, value in req.items():
            if key == "op":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RequestError(f"{key} must be a number, got {value!r}")
            if key == "ambient_c" and lo <= value <= hi:
                self.board.peripherals.thermal.ambient_c = float(value)
            elif key == "physics_speed" and 0 < value <= 1000:
                self.board.physics_speed = float(value)
            else:
                raise RequestError(
                    f"set takes ambient_c ({lo:g}..{hi:g}) and physics_speed (0..1000], "
                    f"got {key}={value!r}"
                )
        return None

    def _stats(self, _req: dict[str, Any]) -> Any:
        thermal = self.board.peripherals.thermal
        return {
            "chains": [
                {
                    "path": c.path, "nonces_out": c.stats.nonces_out, "works_in": c.stats.works_in,
                    "hashes": c.stats.hashes, "live_chips": c.live_chips(),
                    "chip_temp_c": thermal.chip_temp_c(i), "board_temp_c": thermal.board_temp_c(i),
                    "power_w": self.board.chain_power_w(i),
                }
                for i, c in enumerate(self.board.chips.chains)
            ],
            "wall_w": self.board.wall_w,
            "requests": self.requests,
        }  # fmt: skip


# ---------------------------------------------------------------------------- the process


def describe(board: EmulatedL3Plus, socket_path: str | Path) -> dict[str, Any]:
    """What DIR/emulator.json holds: everything an agent needs to open this board."""
    return {
        "pid": os.getpid(),
        "uarts": list(board.paths),
        "i2c_bus": PREFIX + str(socket_path),
        "sysfs_root": str(board.root),
        "chains": len(board.chips.chains),
        "chips_per_chain": len(board.chips.chains[0]._chips),
    }


def read_description(root: str | Path) -> dict[str, Any]:
    """DIR/emulator.json of a running `doge-agent emulate --root DIR`; ValueError names what is
    missing or wrong (the emulator not running, a stale file)."""
    path = Path(root) / D.EMULATOR_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(
            f"{path}: not found: start the emulator first (doge-agent emulate --root {root})"
        ) from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read: {e}") from None
    keys = ("pid", "uarts", "i2c_bus", "sysfs_root", "chains", "chips_per_chain")
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise ValueError(f"{path}: not an emulator description (needs {', '.join(keys)})")
    try:
        os.kill(int(data["pid"]), 0)
    except ProcessLookupError:
        raise ValueError(f"{path}: the emulator (pid {data['pid']}) is not running") from None
    except PermissionError:
        pass  # running, as another user
    return data  # type: ignore[no-any-return]


class EmulatorControl(LinkClient):
    """Fault injection and readings on a running emulator, for tests, benchmarks and people."""

    def __init__(self, root: str | Path) -> None:
        super().__init__(str(Path(root) / D.EMULATOR_SOCKET))

    def chain(self, chain: int, call: str, *args: Any) -> Any:
        return self.call({"op": "chain", "chain": chain, "call": call, "args": list(args)})

    def board(self, call: str, *args: Any) -> Any:
        return self.call({"op": "board", "call": call, "args": list(args)})

    def set(self, **values: float) -> None:
        self.call({"op": "set", **values})

    def stats(self) -> dict[str, Any]:
        return self.call({"op": "stats"})  # type: ignore[no-any-return]


async def serve(root: str | Path, stop: asyncio.Event, ready: Callable[[dict[str, Any]], None],
                **board_kwargs: Any) -> None:  # fmt: skip
    """Run an EmulatedL3Plus in `root` until `stop` is set; `ready` gets its description once
    DIR/emulator.json is written (the file goes when the emulator stops)."""
    import sys

    # Hardware answers a bus transaction in microseconds; this process's chip threads hold the
    # GIL between scans, and the default 5 ms switch interval would delay the I2C link's replies
    # (and so the agent's event loop, which waits for them as it waits for an ioctl) by that much.
    sys.setswitchinterval(D.EMULATOR_SWITCH_INTERVAL_S)
    from agent.emulator.board import EmulatedL3Plus

    root = Path(root)
    board = EmulatedL3Plus(root, **board_kwargs)
    await board.start()
    server = EmulatorServer(board, root / D.EMULATOR_SOCKET)
    desc_path = root / D.EMULATOR_FILE
    try:
        await server.start()
        desc = describe(board, server.path)
        tmp = desc_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(desc, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, desc_path)  # an agent never reads half a description
        ready(desc)
        await stop.wait()
    finally:
        with contextlib.suppress(FileNotFoundError):
            desc_path.unlink()
        await server.close()
        await board.stop()


class EmulatorProcess:
    """`doge-agent emulate --root DIR` as a child process, for tests and benchmarks: started,
    waited for (DIR/emulator.json), stopped with SIGTERM. `extra` are more CLI options."""

    def __init__(self, root: str | Path, *extra: str, python: str | None = None,
                 env: dict[str, str] | None = None, timeout_s: float = 30.0) -> None:  # fmt: skip
        import sys

        self.root = Path(root)
        self.argv = [python or sys.executable, "-m", "agent", "emulate", "--root", str(root),
                     *extra]  # fmt: skip
        self.env = env
        self.timeout_s = timeout_s
        self.proc: Any = None
        self.description: dict[str, Any] = {}

    def start(self) -> EmulatorProcess:
        import subprocess
        import time

        self.root.mkdir(parents=True, exist_ok=True)
        log_path = self.root.parent / f"{self.root.name}.log"
        with open(log_path, "wb") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         env=self.env)  # fmt: skip
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the emulator exited ({self.proc.returncode}): "
                                   + log_path.read_text(errors="replace")[-2000:])  # fmt: skip
            try:
                self.description = read_description(self.root)
                if self.description["pid"] == self.proc.pid:
                    return self
            except ValueError:
                pass
            time.sleep(0.05)  # polling a child's start-up file: nothing to wait on
        self.stop()
        raise RuntimeError(f"the emulator did not start within {self.timeout_s:g} s")

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def pin(self, cpus: set[int]) -> None:
        """Keep every thread of the emulator on `cpus` (benchmarks: hardware does not take the
        agent's CPU, and a chip thread woken by the agent's write does not preempt the agent)."""
        for task in os.listdir(f"/proc/{self.pid}/task"):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(task), cpus)

    def control(self) -> EmulatorControl:
        return EmulatorControl(self.root)

    def stop(self) -> int | None:
        import signal
        import subprocess

        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
