"""Property tests for the parsers of outside input that had none of their own.

Each says: whatever arrives, the parser answers or refuses with its own error that names what
was wrong; nothing else escapes. They run with 100 cases in make test and with FUZZ_EXAMPLES
cases in make fuzz (tests/conftest.py lists them in FUZZ_TARGETS)."""

from __future__ import annotations

import importlib
import json
import string
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from conftest import FUZZ_TARGETS
from hypothesis import given
from hypothesis import strategies as st

from agent.api import cgminer, stock_cgi
from agent.api.http import parse_listen
from agent.api.httpserver import Headers, HTTPError, HTTPServer, Request, _Reject
from agent.emulator import gbt
from agent.hardware import bm1485 as bm
from agent.hardware import profile as hw_profile
from agent.hardware.fans import parse_interrupts
from agent.hardware.remote import RemoteReading, reading_from_data
from agent.logs import parse_line as parse_log_line
from agent.persist import decode as persist_decode
from agent.persist import encode as persist_encode
from agent.security.access import AccessConfigError, _parse_networks, parse_ip
from agent.stratum import protocol as P

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    | st.integers(min_value=-(10**30), max_value=10**30)
)  # fmt: skip
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
# deep nesting: what a hostile peer sends to blow the JSON parser's recursion
deep_json = st.builds(
    lambda n, open_, tail: open_ * n + tail,
    st.integers(1, 5000), st.sampled_from(["[", '{"a":', "[{\"a\":"]), st.text(max_size=5),
)  # fmt: skip


def test_every_fuzz_target_is_a_hypothesis_test() -> None:
    """The inventory in conftest.py names tests that exist (a rename would drop a target)."""
    for key in FUZZ_TARGETS:
        file, name = key.split("::")
        module = importlib.import_module(Path(file).stem)
        fn = getattr(module, name, None)
        assert fn is not None, f"FUZZ_TARGETS names a missing test: {key}"
        assert hasattr(fn, "hypothesis"), f"FUZZ_TARGETS names a non-Hypothesis test: {key}"


# ---------------------------------------------------------------------------- Stratum


@given(json_values, json_values)
def test_fuzz_stratum_difficulty_and_error(difficulty: Any, error: Any) -> None:
    try:
        d = P.parse_difficulty(difficulty)
        assert d > 0 and d != float("inf")
    except P.ProtocolError as e:
        assert str(e).startswith("difficulty")
    try:
        P.parse_error(error)
    except P.ProtocolError as e:
        assert str(e)


# ---------------------------------------------------------------------------- BM1485


def _frames(data: st.DataObject, n: int) -> bytes:
    out = b""
    for _ in range(n):
        if data.draw(st.booleans()):
            out += bm.nonce_response(
                data.draw(st.integers(0, 2**32 - 1)), data.draw(st.integers(0, 127)),
                data.draw(st.integers(0, 63)))  # fmt: skip
        else:
            out += bm.register_response(
                data.draw(st.integers(0, 255)), data.draw(st.integers(0, 255)),
                data.draw(st.binary(min_size=4, max_size=4)))  # fmt: skip
    return out


@given(st.data())
def test_fuzz_bm1485_stream_chunking_does_not_matter(data: st.DataObject) -> None:
    """Frames fed in any chunking come out whole and in order. With noise between them, any
    chunking still accounts for every byte (a frame byte, a skipped byte or still pending); which
    frames survive may then depend on the chunking (in sync, a short buffer cannot look ahead)."""
    noisy = data.draw(st.booleans())
    stream = b""
    want: list[bm.Response] = []
    for _ in range(data.draw(st.integers(0, 6))):
        frames = _frames(data, data.draw(st.integers(0, 4)))
        stream += (data.draw(st.binary(max_size=12)) if noisy else b"") + frames
        want += [bm.decode_response(frames[i : i + 7]) for i in range(0, len(frames), 7)]
    dec = bm.StreamDecoder()
    got: list[bm.Response] = []
    i = 0
    while i < len(stream):
        n = data.draw(st.integers(1, 16))
        got += dec.feed(stream[i : i + n])
        i = min(i + n, len(stream))
        assert dec.frames * 7 + dec.skipped_bytes + dec.pending == i
    got += dec.flush()
    assert dec.frames == len(got)
    assert dec.frames * 7 + dec.skipped_bytes + dec.pending == len(stream)
    if not noisy:
        assert got == want and dec.crc_errors == 0 and dec.skipped_bytes == 0


def _mutated(frame: bytes, data: st.DataObject) -> bytes:
    b = bytearray(frame)
    for _ in range(data.draw(st.integers(0, 3))):
        if b and data.draw(st.booleans()):
            b[data.draw(st.integers(0, len(b) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        else:
            b[data.draw(st.integers(0, len(b))) :] = data.draw(st.binary(max_size=3))
    return bytes(b)


@given(st.data())
def test_fuzz_bm1485_frame_decoders(data: st.DataObject) -> None:
    """Random or mutated response, command and work frames: decoded, or FrameError."""
    header = data.draw(st.binary(min_size=76, max_size=76))
    seeds = [
        bm.nonce_response(data.draw(st.integers(0, 2**32 - 1)), 5, 1),
        bm.register_response(1, 2, b"\x01\x02\x03\x04"),
        bm.read_register(data.draw(st.integers(0, 255)), data.draw(st.integers(0, 255))),
        bm.work_frame(data.draw(st.integers(0, 127)), header),
    ]
    raw = data.draw(st.binary(max_size=100) | st.sampled_from(seeds).map(
        lambda f: _mutated(f, data)))  # fmt: skip
    for decode in (bm.decode_response, bm.decode_command, bm.decode_work_frame):
        try:
            decode(raw)
        except bm.FrameError as e:
            assert str(e)


# ---------------------------------------------------------------------------- cgminer API


@given(st.binary(max_size=200) | deep_json.map(str.encode)
       | json_values.map(lambda v: json.dumps({"command": v}).encode()))  # fmt: skip
def test_fuzz_cgminer_request_framing(data: bytes) -> None:
    """The 'is this request complete yet' check of the TCP reader never raises."""
    assert cgminer._complete(data) in (True, False)


# ---------------------------------------------------------------------------- HTTP

_target_text = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=string.printable + "%\x00", max_size=60).map(lambda t: "/" + t),
    st.builds(lambda s, t: f"{s}{t}", st.sampled_from(["http://", "https://", "http://[", "/?"]),
              st.text(alphabet=string.printable + "%[]:@", max_size=60)),
)  # fmt: skip


@given(_target_text)
def test_fuzz_http_request_target(target: str) -> None:
    try:
        path, query = HTTPServer._parse_target(target)
    except _Reject as e:
        assert e.status == 400 and str(e)
        return
    assert path.startswith("/") or path == "" or target.startswith("http")
    assert "\x00" not in path and ".." not in path.split("/")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in query.items())


_ctypes = st.sampled_from(["", "application/json", "application/x-www-form-urlencoded",
                           "text/plain", "application/json; charset=utf-8", "APPLICATION/JSON"])
_bodies = st.one_of(
    st.binary(max_size=200),
    deep_json.map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["_ant_pool1url", "_ant_pool1user", "_ant_pool2url", "pools",
                                     "_ant_pool3pw", "x"]), json_values, max_size=4)
    .map(lambda d: json.dumps(d).encode()),
    st.text(alphabet=string.printable + "%&=", max_size=120).map(str.encode),
)  # fmt: skip


@given(_bodies, _ctypes)
def test_fuzz_http_bodies_and_stock_cgi_forms(body: bytes, ctype: str) -> None:
    """A request body as JSON, as a form, and through the stock CGI's pool form: the value or an
    HTTPError with a 4xx status, never anything else."""
    headers = Headers([("Content-Type", ctype)] if ctype else [])
    req = Request("POST", "/x", {}, headers, body, "10.0.0.1")
    for parse in (req.json, req.form):
        try:
            parse()
        except HTTPError as e:
            assert 400 <= e.status < 500
    try:
        form = stock_cgi._body(req)
    except HTTPError as e:
        assert 400 <= e.status < 500
        return
    for url, user, password in stock_cgi._wanted_pools(form):
        assert url and isinstance(user, str) and isinstance(password, str)


@given(st.text(max_size=80) | st.sampled_from(["::ffff:10.0.0.1", "[::1]", "fe80::1%eth0"]),
       st.lists(st.text(alphabet="0123456789abcdef.:/[]% ", max_size=45) | st.integers(),
                max_size=4))  # fmt: skip
def test_fuzz_peer_addresses_and_allow_lists(ip: str, entries: list[Any]) -> None:
    parse_ip(ip)
    try:
        _parse_networks("api.read_allow", entries)
    except AccessConfigError as e:
        assert str(e).startswith("api.read_allow")


# ---------------------------------------------------------------------------- config


_ports = st.text(alphabet="0123456789-+ ²٣", max_size=8)  # (² and ٣ are isdigit(), not ASCII)


@given(st.text(max_size=60) | st.builds(lambda h, p: f"{h}:{p}", st.text(max_size=20), _ports))
def test_fuzz_listen_address(listen: str) -> None:
    try:
        host, port = parse_listen(listen)
    except ValueError as e:
        assert "listen" in str(e)
        return
    assert host and 0 <= port <= 65535


_profile_keys = st.sampled_from(
    ["name", "chains", "uarts", "uart_baud", "chips_per_chain", "i2c_bus", "pic_addresses",
     "gpio_dir", "pwm_dir", "interrupts_path", "sysfs_root", "fans", "x", ""]
)  # fmt: skip
_profile_docs = st.dictionaries(
    st.sampled_from(["board", "chains", "i2c", "fans", "gpio", "sensors", "x"]) | _profile_keys,
    st.dictionaries(_profile_keys, json_values, max_size=6) | json_values,
    max_size=6,
)


@given(_profile_docs, st.dictionaries(_profile_keys, json_values, max_size=3))
def test_fuzz_board_profile(doc: dict[str, Any], overrides: dict[str, Any]) -> None:
    """A hand-edited board profile: a Profile, or ProfileError naming each bad key."""
    try:
        hw_profile.build(doc, overrides)
    except hw_profile.ProfileError as e:
        assert e.errors and all(isinstance(x, str) and x for x in e.errors)


# ---------------------------------------------------------------------------- files read back


@given(st.binary(max_size=300) | deep_json.map(str.encode)
       | st.builds(lambda kind, version, data: persist_encode(kind, version, data),
                   st.sampled_from(["pools", "tuner", "x"]), st.integers(0, 3),
                   st.dictionaries(st.text(max_size=5), json_scalars.filter(
                       lambda v: not (isinstance(v, float) and v != v) and v not in
                       (float("inf"), float("-inf"))), max_size=4))
       .map(lambda raw: raw if len(raw) % 3 else raw[: len(raw) // 2]))  # fmt: skip
def test_fuzz_state_file(raw: bytes) -> None:
    """A state file that is damaged, truncated, of another kind or version: (None, why)."""
    data, why = persist_decode(raw, "pools", 1)
    assert (data is None) == (why is not None)
    assert data is None or isinstance(data, dict)


@given(st.text(max_size=200) | deep_json | json_values.map(json.dumps))
def test_fuzz_log_lines(line: str) -> None:
    entry = parse_log_line(line)
    if entry is not None:
        _ = (entry.time, entry.level)


_interrupt_lines = st.lists(
    st.text(max_size=60)
    | st.builds(lambda n, counts, name: f" {n}: {' '.join(counts)}  GIC  {name}",
                st.integers(0, 300), st.lists(st.text(alphabet="0123456789x-", max_size=12),
                                              max_size=4), st.sampled_from(["fan", "fan1", "x"])),
    max_size=10,
).map("\n".join)  # fmt: skip


@given(_interrupt_lines, st.sampled_from(["fan", "fan1", ""]))
def test_fuzz_proc_interrupts(text: str, match: str) -> None:
    counts = parse_interrupts(text, match)
    assert all(isinstance(c, int) and c >= 0 for c in counts)


# ---------------------------------------------------------------------------- other peers

_odd = (
    json_scalars | st.sampled_from([float("nan"), float("inf"), -1, 1e300, "12 TH/s", "x"])
    | st.builds(SimpleNamespace, rate=json_scalars, unit=json_scalars)
)  # fmt: skip


def _ns(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[SimpleNamespace]:
    return st.fixed_dictionaries({}, optional=fields).map(lambda d: SimpleNamespace(**d))


_miner_data = _ns(
    hashboards=st.lists(_ns(slot=_odd, chips=_odd, hashrate=_odd, temp=_odd, chip_temp=_odd,
                            missing=_odd), max_size=4) | _odd,
    fans=st.lists(_ns(speed=_odd), max_size=4),
    pools=st.lists(_ns(url=_odd, user=_odd, accepted=_odd, rejected=_odd, active=_odd,
                       alive=_odd), max_size=3),
    uptime=_odd, raw_hashrate=_odd, hashrate=_odd, is_mining=_odd,
    device_info=_ns(model=_odd) | st.none(),
)  # fmt: skip


@given(_miner_data)
def test_fuzz_remote_miner_data(data: SimpleNamespace) -> None:
    """Whatever a remote miner reports through pyasic becomes a reading (odd values None)."""
    try:
        reading = reading_from_data(data)
    except TypeError:
        # a non-list `hashboards` that is not iterable is pyasic breaking its own types
        assert not isinstance(getattr(data, "hashboards", None), list)
        return
    assert isinstance(reading, RemoteReading)


_tpl_fields = {
    "transactions": st.lists(
        st.fixed_dictionaries({}, optional={"data": st.text(alphabet="0123456789abcdefg",
                                                            max_size=20),
                                            "txid": st.text(alphabet="0123456789abcdef",
                                                            min_size=62, max_size=66)}),
        max_size=3) | json_values,
    "default_witness_commitment": st.text(alphabet="0123456789abcdefz", max_size=80) | json_values,
    "mweb": st.none() | st.text(alphabet="0123456789abcdef", max_size=10) | json_values,
    "height": st.integers(-5, 2**40) | json_values,
    "coinbasevalue": st.integers(-5, 2**70) | json_values,
    "previousblockhash": st.text(alphabet="0123456789abcdefx", min_size=60, max_size=66)
    | json_values,
    "bits": st.text(alphabet="0123456789abcdefx", max_size=10) | json_values,
    "version": st.integers(-(2**40), 2**40) | json_values,
    "curtime": st.integers(-(2**40), 2**40) | json_values,
    "mintime": st.integers(-(2**40), 2**40) | json_values,
}  # fmt: skip


@given(st.fixed_dictionaries({}, optional=_tpl_fields), st.integers(2, 16))
def test_fuzz_getblocktemplate(tpl: dict[str, Any], extranonce_size: int) -> None:
    """litecoind's getblocktemplate answer: a Template, or TemplateError naming the field."""
    try:
        gbt.from_gbt(tpl, payout_script=gbt.OP_TRUE_SCRIPT, extranonce_size=extranonce_size)
    except gbt.TemplateError as e:
        assert "getblocktemplate" in str(e) or str(e)
