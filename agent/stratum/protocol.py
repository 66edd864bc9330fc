"""Stratum V1 messages: parsing and validation of what pools send, encoding of what we send.

Pure: no sockets. Everything from the pool is checked here; a bad message raises ProtocolError
naming what was wrong."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from agent import __version__
from agent import defaults as D


class ProtocolError(ValueError):
    """A pool message that breaks the protocol; the text says what was wrong."""


@dataclass(frozen=True)
class Notify:
    """A validated mining.notify, byte strings decoded from hex as sent."""

    job_id: str
    prevhash: bytes  # 32 bytes in Stratum order (each 4-byte word of the header field reversed)
    coinb1: bytes
    coinb2: bytes
    merkle_branch: tuple[bytes, ...]  # each 32 bytes, internal byte order, used as is
    version: int  # block version (notify sends its big-endian hex)
    nbits: int  # compact network target
    ntime: int  # seconds since the epoch
    clean_jobs: bool


# ---------------------------------------------------------------------------------------------
# Messages from the pool. Notify (above) is what mining.notify parses into; the rest follow.

JsonId = int | str | None


@dataclass(frozen=True)
class StratumError:
    """An error a pool sent: [code, message, data], a bare string or an object, normalised."""

    code: int | None
    message: str
    data: Any = None

    def __str__(self) -> str:
        return f"{self.code} {self.message}" if self.code is not None else self.message


@dataclass(frozen=True)
class Reply:
    """A reply to one of our requests, matched by id."""

    id: int | str
    result: Any
    error: StratumError | None


@dataclass(frozen=True)
class SetDifficulty:
    difficulty: float


@dataclass(frozen=True)
class SetExtranonce:
    extranonce1: bytes
    extranonce2_size: int


@dataclass(frozen=True)
class Reconnect:
    """client.reconnect; None means "unchanged" for host and port, "now" for wait_s."""

    host: str | None
    port: int | None
    wait_s: float | None
    id: JsonId = None


@dataclass(frozen=True)
class ShowMessage:
    text: str
    id: JsonId = None


@dataclass(frozen=True)
class GetVersion:
    id: JsonId


@dataclass(frozen=True)
class Ping:
    id: JsonId


@dataclass(frozen=True)
class UnknownMethod:
    """A method we do not implement: the client logs it and, when it has an id, says so."""

    method: str
    id: JsonId


Message = (
    Notify
    | SetDifficulty
    | SetExtranonce
    | Reconnect
    | ShowMessage
    | GetVersion
    | Ping
    | UnknownMethod
    | Reply
)

_HEX = re.compile(r"[0-9a-fA-F]*")
_HOST = re.compile(r"[A-Za-z0-9.\-:\[\]_]{1,255}")


def _shown(value: Any, limit: int = 40) -> str:
    """A short repr of pool input for error text: bounded, so a huge value cannot flood a log."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hex(value: Any, what: str, size: int | None = None, max_size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError(f"{what}: expected a hex string, got {type(value).__name__}")
    if not _HEX.fullmatch(value) or len(value) % 2:
        raise ProtocolError(f"{what}: not an even-length hex string: {_shown(value)}")
    raw = bytes.fromhex(value)
    if size is not None and len(raw) != size:
        raise ProtocolError(f"{what}: expected {size} bytes, got {len(raw)}")
    if max_size is not None and len(raw) > max_size:
        raise ProtocolError(f"{what}: at most {max_size} bytes, got {len(raw)}")
    return raw


def _word(value: Any, what: str) -> int:
    return int.from_bytes(_hex(value, what, 4), "big")


def _params(msg: dict[str, Any], method: str, least: int) -> list[Any]:
    params = msg.get("params")
    if params is None:
        params = []
    if not isinstance(params, list):
        raise ProtocolError(f"{method}: params must be an array, got {type(params).__name__}")
    if len(params) < least:
        raise ProtocolError(f"{method}: expected at least {least} params, got {len(params)}")
    return params


def parse_difficulty(value: Any, what: str = "difficulty") -> float:
    """int, float or numeric string; finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ProtocolError(f"{what}: expected a number, got {type(value).__name__}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise ProtocolError(f"{what}: not a number: {_shown(value)}") from None
    if not math.isfinite(number) or number <= 0:
        raise ProtocolError(f"{what}: must be finite and > 0, got {_shown(value)}")
    return number


def _extranonce2_size(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{what}: expected an integer, got {type(value).__name__}")
    lo, hi = D.STRATUM_MIN_EXTRANONCE2_SIZE, D.STRATUM_MAX_EXTRANONCE2_SIZE
    if not lo <= value <= hi:
        raise ProtocolError(f"{what}: must be {lo}..{hi}, got {value}")
    return value


def _notify(params: list[Any]) -> Notify:
    job_id = params[0]
    if not isinstance(job_id, str) or not job_id:
        raise ProtocolError(
            f"mining.notify job_id: expected a non-empty string, got {_shown(job_id)}"
        )
    if len(job_id) > D.STRATUM_MAX_JOB_ID_CHARS or not job_id.isprintable():
        raise ProtocolError(f"mining.notify job_id: too long or not printable: {_shown(job_id)}")
    branch = params[4]
    if not isinstance(branch, list):
        raise ProtocolError(
            f"mining.notify merkle_branch: expected an array, got {type(branch).__name__}"
        )
    if len(branch) > D.STRATUM_MAX_MERKLE_BRANCH:
        raise ProtocolError(f"mining.notify merkle_branch: {len(branch)} entries is too many")
    clean = params[8]
    # Some pools send 0/1 for the flag; anything else is not a boolean.
    if isinstance(clean, int) and clean in (0, 1):
        clean = bool(clean)
    if not isinstance(clean, bool):
        raise ProtocolError(f"mining.notify clean_jobs: expected a boolean, got {_shown(clean)}")
    return Notify(
        job_id=job_id,
        prevhash=_hex(params[1], "mining.notify prevhash", 32),
        coinb1=_hex(params[2], "mining.notify coinb1"),
        coinb2=_hex(params[3], "mining.notify coinb2"),
        merkle_branch=tuple(
            _hex(b, f"mining.notify merkle_branch[{i}]", 32) for i, b in enumerate(branch)
        ),
        version=_word(params[5], "mining.notify version"),
        nbits=_word(params[6], "mining.notify nbits"),
        ntime=_word(params[7], "mining.notify ntime"),
        clean_jobs=clean,
    )


def _reconnect(params: list[Any], msg_id: JsonId) -> Reconnect:
    host = params[0] if len(params) > 0 else None
    port = params[1] if len(params) > 1 else None
    wait = params[2] if len(params) > 2 else None
    if host == "":
        host = None
    if host is not None and (not isinstance(host, str) or not _HOST.fullmatch(host)):
        raise ProtocolError(f"client.reconnect host: not a host name: {_shown(host)}")
    if port is not None:
        if isinstance(port, str) and port.isascii() and port.isdigit() and len(port) <= 5:
            port = int(port)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ProtocolError(f"client.reconnect port: expected 1..65535, got {_shown(port)}")
    if wait is not None:
        if isinstance(wait, str):
            try:
                wait = float(wait)
            except ValueError:
                raise ProtocolError(
                    f"client.reconnect wait: not a number: {_shown(wait)}"
                ) from None
        if isinstance(wait, bool) or not isinstance(wait, int | float):
            raise ProtocolError(f"client.reconnect wait: expected a number, got {_shown(wait)}")
        if not math.isfinite(wait) or wait < 0:
            raise ProtocolError(f"client.reconnect wait: must be finite and >= 0, got {wait}")
        wait = min(float(wait), D.STRATUM_MAX_RECONNECT_WAIT_S)
    return Reconnect(host=host, port=port, wait_s=wait, id=msg_id)


def _request(method: str, msg: dict[str, Any], msg_id: JsonId) -> Message:
    if method == "mining.notify":
        return _notify(_params(msg, method, 9))
    if method == "mining.set_difficulty":
        return SetDifficulty(parse_difficulty(_params(msg, method, 1)[0], f"{method} difficulty"))
    if method == "mining.set_extranonce":
        p = _params(msg, method, 2)
        return SetExtranonce(
            extranonce1=_hex(
                p[0], f"{method} extranonce1", max_size=D.STRATUM_MAX_EXTRANONCE1_BYTES
            ),
            extranonce2_size=_extranonce2_size(p[1], f"{method} extranonce2_size"),
        )
    if method == "client.reconnect":
        return _reconnect(_params(msg, method, 0), msg_id)
    if method == "client.show_message":
        text = _params(msg, method, 1)[0]
        if not isinstance(text, str):
            raise ProtocolError(f"{method}: expected a string, got {type(text).__name__}")
        return ShowMessage(text=text, id=msg_id)
    if method == "client.get_version":
        return GetVersion(id=msg_id)
    if method == "mining.ping":
        return Ping(id=msg_id)
    return UnknownMethod(method=method, id=msg_id)


def parse_error(error: Any) -> StratumError | None:
    """[code, message, data], a bare string, or an object; None when there is no error."""
    if error is None or error is False:
        return None
    if isinstance(error, list):
        code = error[0] if error else None
        message = error[1] if len(error) > 1 else ""
        data = error[2] if len(error) > 2 else None
    elif isinstance(error, dict):
        code = error.get("code")
        message = error.get("message", error.get("msg", ""))
        data = error.get("data")
    else:
        code, message, data = None, error, None
    if isinstance(code, bool) or not isinstance(code, int):
        if (
            isinstance(code, str)
            and code.isascii()
            and code.lstrip("-").isdigit()
            and len(code) < 10
        ):
            code = int(code)
        else:
            code = None
    if not isinstance(message, str):
        message = _shown(message, 200)
    return StratumError(code=code, message=message[:500], data=data)


def _id(value: Any) -> JsonId:
    if value is None or isinstance(value, str):
        if isinstance(value, str) and len(value) > 128:
            raise ProtocolError(f"id: too long ({len(value)} characters)")
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"id: expected a number, a string or null, got {_shown(value)}")
    return value


def parse_line(line: bytes | str, max_bytes: int = D.STRATUM_MAX_LINE_BYTES) -> Message:
    """One line from the pool -> a message; anything wrong raises ProtocolError saying what.

    Dispatch is by method first and by id second: a pool may push notify or set_difficulty
    (id null, or even an id of its own) before it answers our authorize."""
    if isinstance(line, str):
        line = line.encode("utf-8", "surrogatepass")
    if not isinstance(line, bytes | bytearray):
        raise ProtocolError(f"line: expected bytes, got {type(line).__name__}")
    if len(line) > max_bytes:
        raise ProtocolError(f"line: {len(line)} bytes is longer than the {max_bytes} allowed")
    try:
        text = bytes(line).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"line: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise ProtocolError("line: empty")
    try:
        msg = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ProtocolError("line: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, too-long integers, NaN/Infinity
        raise ProtocolError(f"line: not JSON ({exc})") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"line: expected a JSON object, got {type(msg).__name__}")
    msg_id = _id(msg.get("id"))
    method = msg.get("method")
    if method is not None:
        if not isinstance(method, str):
            raise ProtocolError(f"method: expected a string, got {type(method).__name__}")
        return _request(method, msg, msg_id)
    if msg_id is None:
        raise ProtocolError("message has neither a method nor an id")
    if "result" not in msg and "error" not in msg:
        raise ProtocolError(f"reply to id {_shown(msg_id)}: no result and no error")
    return Reply(id=msg_id, result=msg.get("result"), error=parse_error(msg.get("error")))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# ---------------------------------------------------------------------------------------------
# Results of our requests


@dataclass(frozen=True)
class Subscription:
    """The result of mining.subscribe."""

    extranonce1: bytes
    extranonce2_size: int
    session_id: str | None  # what we send to resume: the notify subscription id, if any


def _subscription_pairs(subs: Any) -> list[tuple[str, str]]:
    """[["mining.notify", id], ...] or a bare ["mining.notify", id]; other shapes give []."""
    if (
        isinstance(subs, list)
        and len(subs) == 2
        and isinstance(subs[0], str)
        and not isinstance(subs[1], list)
    ):
        subs = [subs]
    pairs: list[tuple[str, str]] = []
    if isinstance(subs, list):
        for item in subs:
            if isinstance(item, list) and len(item) >= 2 and isinstance(item[0], str):
                sub_id = item[1]
                if isinstance(sub_id, int) and not isinstance(sub_id, bool):
                    sub_id = str(sub_id)
                if isinstance(sub_id, str) and 0 < len(sub_id) <= 128 and sub_id.isprintable():
                    pairs.append((item[0], sub_id))
    return pairs


def parse_subscribe_result(result: Any) -> Subscription:
    if not isinstance(result, list) or len(result) < 3:
        raise ProtocolError(
            f"mining.subscribe result: expected [subscriptions, extranonce1, extranonce2_size], "
            f"got {_shown(result)}"
        )
    pairs = _subscription_pairs(result[0])
    session = next((sid for name, sid in pairs if name == "mining.notify"), None)
    if session is None and pairs:
        session = pairs[0][1]
    return Subscription(
        extranonce1=_hex(
            result[1], "mining.subscribe extranonce1", max_size=D.STRATUM_MAX_EXTRANONCE1_BYTES
        ),
        extranonce2_size=_extranonce2_size(result[2], "mining.subscribe extranonce2_size"),
        session_id=session,
    )


# ---------------------------------------------------------------------------------------------
# What we send. Each encoder returns one line, newline included.

CLIENT_VERSION = f"doge-agent/{__version__}"


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def encode_request(msg_id: int, method: str, params: list[Any]) -> bytes:
    return _line({"id": msg_id, "method": method, "params": params})


def encode_reply(msg_id: JsonId, result: Any, error: list[Any] | None = None) -> bytes:
    return _line({"id": msg_id, "result": result, "error": error})


def subscribe(msg_id: int, session_id: str | None = None, agent: str = CLIENT_VERSION) -> bytes:
    params: list[Any] = [agent] if session_id is None else [agent, session_id]
    return encode_request(msg_id, "mining.subscribe", params)


def authorize(msg_id: int, user: str, password: str) -> bytes:
    return encode_request(msg_id, "mining.authorize", [user, password])


def extranonce_subscribe(msg_id: int) -> bytes:
    return encode_request(msg_id, "mining.extranonce.subscribe", [])


def suggest_difficulty(msg_id: int, difficulty: float) -> bytes:
    return encode_request(msg_id, "mining.suggest_difficulty", [difficulty])


def submit(
    msg_id: int, user: str, job_id: str, extranonce2: bytes, ntime: int, nonce: int
) -> bytes:
    """ntime and nonce as the big-endian hex of the header's uint32 values ("%08x"): the nonce is
    header bytes 76..80 reversed (reference §2.4)."""
    for what, value in (("ntime", ntime), ("nonce", nonce)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 32:
            raise ValueError(f"{what} must be a uint32, got {value!r}")
    return encode_request(
        msg_id,
        "mining.submit",
        [user, job_id, extranonce2.hex(), f"{ntime:08x}", f"{nonce:08x}"],
    )


def reply_get_version(msg_id: JsonId, agent: str = CLIENT_VERSION) -> bytes:
    return encode_reply(msg_id, agent)


def reply_ping(msg_id: JsonId) -> bytes:
    return encode_reply(msg_id, "pong")


def reply_show_message(msg_id: JsonId) -> bytes:
    return encode_reply(msg_id, True)


def reply_unknown_method(msg_id: JsonId, method: str) -> bytes:
    return encode_reply(msg_id, None, [20, f"Unknown method {method[:64]}", None])


# Error codes pools use in replies (reference §1)
ERR_OTHER = 20
ERR_JOB_NOT_FOUND = 21  # stale
ERR_DUPLICATE = 22
ERR_LOW_DIFFICULTY = 23
ERR_UNAUTHORIZED = 24
ERR_NOT_SUBSCRIBED = 25
