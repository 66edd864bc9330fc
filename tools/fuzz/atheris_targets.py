"""Coverage-guided atheris harnesses for the byte-level parsers of outside input.

Each harness takes the fuzzer's bytes as what a peer sent and lets only the parser's own
refusal through (FrameError, ProtocolError, an HTTP 4xx/5xx rejection, ...); anything else
escapes and atheris reports it as a crash with the input that caused it.

Run one: .venv/bin/python tools/fuzz/atheris_targets.py <target> [libFuzzer flags, corpus dirs]
(make fuzz runs them all through bench/fuzz_report.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import atheris

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

with atheris.instrument_imports():
    from agent.api import cgminer
    from agent.api.httpserver import HTTPError, HTTPServer, _Reject
    from agent.hardware import bm1485 as bm
    from agent.stratum import protocol as P

# ---------------------------------------------------------------------------- BM1485


def bm1485_stream(data: bytes) -> None:
    """The chip byte stream: cut at fuzzer-chosen points, fed, flushed; every byte accounted."""
    fdp = atheris.FuzzedDataProvider(data)
    cuts = fdp.ConsumeIntListInRange(fdp.ConsumeIntInRange(0, 8), 1, 32)
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    dec = bm.StreamDecoder()
    out: list[bm.Response] = []
    i = 0
    for n in [*cuts, len(stream)]:
        out += dec.feed(stream[i : i + n])
        i = min(i + n, len(stream))
    out += dec.flush()
    if dec.frames != len(out) or dec.frames * 7 + dec.skipped_bytes + dec.pending != len(stream):
        raise AssertionError(f"bytes unaccounted: {dec} for {len(stream)} bytes")
    for decode in (bm.decode_response, bm.decode_command, bm.decode_work_frame):
        with contextlib.suppress(bm.FrameError):
            decode(stream)


# ---------------------------------------------------------------------------- Stratum


def stratum_line(data: bytes) -> None:
    try:
        msg = P.parse_line(data)
    except P.ProtocolError:
        return
    if isinstance(msg, P.Reply):
        with contextlib.suppress(P.ProtocolError):
            P.parse_subscribe_result(msg.result)


# ---------------------------------------------------------------------------- HTTP

_loop = asyncio.new_event_loop()
_server = HTTPServer()


class _Writer:
    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass


async def _read(data: bytes) -> Any:
    reader = asyncio.StreamReader(limit=_server.limits.max_header_bytes + 1024)
    reader.feed_data(data[1:])
    reader.feed_eof()
    return await _server._read_request(data[:1], reader, _Writer(), "10.0.0.1")  # type: ignore[arg-type]


def http_request(data: bytes) -> None:
    if not data:
        return
    try:
        req = _loop.run_until_complete(_read(data))
    except _Reject as r:
        if not 400 <= r.status < 600:
            raise AssertionError(f"rejected with status {r.status}") from None
        return
    except asyncio.IncompleteReadError:
        return  # the peer closed mid-request: the server just closes too
    for parse in (req.json, req.form):
        try:
            parse()
        except HTTPError as e:
            if not 400 <= e.status < 500:
                raise AssertionError(f"body refused with {e.status}") from None


# ---------------------------------------------------------------------------- cgminer API

_api: Any = None


def cgminer_request(data: bytes) -> None:
    global _api
    if _api is None:
        from fleet_fakes import FakeControls, l3plus_state

        from agent.security.access import AccessPolicy

        loopback = ("127.0.0.0/8", "::1/128")
        _api = cgminer.CgminerAPI(l3plus_state(), FakeControls(), AccessPolicy(loopback, loopback))
    cgminer._complete(data)
    reply, _after = _loop.run_until_complete(_api.answer(data, "10.1.2.3"))
    if not reply.endswith(b"\x00") or reply.count(b"\x00") != 1:
        raise AssertionError(f"reply not one NUL-terminated message: {reply[:80]!r}")
    if data.strip().startswith(b"{") and not isinstance(json.loads(reply[:-1]), dict):
        raise AssertionError("JSON request without a JSON object reply")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "bm1485_stream": bm1485_stream,
    "stratum_line": stratum_line,
    "http_request": http_request,
    "cgminer_request": cgminer_request,
}


def seeds() -> dict[str, list[bytes]]:
    """A few well-formed inputs per target, so the fuzzer starts from the real grammar."""
    header = bytes(range(76))
    notify = {"id": None, "method": "mining.notify", "params": [
        "j1", "00" * 32, "01000000" + "00" * 20, "ffffffff", ["11" * 32], "20000000", "1e0ffff0",
        "65000000", True]}  # fmt: skip
    return {
        "bm1485_stream": [
            bm.nonce_response(0x12345678, 5, 1) * 3 + b"\x00" + bm.register_response(1, 2, b"abcd"),
            bm.read_register(0x1C, 0x04) + bm.work_frame(7, header),
        ],
        "stratum_line": [
            json.dumps(notify).encode(),
            b'{"id":1,"result":[[["mining.notify","ae6812eb4cd7735a302a8a9dd95cf71f"]],'
            b'"08000002",4],"error":null}',
            b'{"id":null,"method":"mining.set_difficulty","params":[0.0009765625]}',
            b'{"id":4,"result":null,"error":[21,"Job not found",null]}',
        ],
        "http_request": [
            b"GET /api/status?x=1 HTTP/1.1\r\nHost: miner\r\n\r\n",
            b"POST /api/control/pause HTTP/1.1\r\nHost: m\r\nContent-Type: application/json\r\n"
            b"Content-Length: 13\r\nAuthorization: Bearer tok\r\n\r\n{\"seconds\":5}",
            b"POST /cgi-bin/set_miner_conf.cgi HTTP/1.0\r\nContent-Length: 22\r\n\r\n"
            b"_ant_pool1url=x&a=%20b",
        ],
        "cgminer_request": [
            b'{"command":"summary+pools","parameter":"0"}',
            b"stats|0",
            b'{"command":"addpool","parameter":"stratum+tcp://a:1,u,p"}\x00',
            b"version",
        ],
    }


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer flags] [corpus dirs]")
    name = sys.argv.pop(1)
    if name == "cgminer_request":
        cgminer_request(b"version")  # build the API (and import what it needs) before instrumenting
    atheris.instrument_all()  # (instrument_imports misses modules the editable install finds)
    atheris.Setup(sys.argv, TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
