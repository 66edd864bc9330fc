"""stratum.protocol: vectors from the reference, and hostile input (message or ProtocolError)."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import defaults as D
from agent.stratum import protocol as P

# Dogecoin block 3106 prevhash in Stratum order (reference §2.3)
PREVHASH = "89a651fbae28b80ea2eb9d20f164fa8adc33c6c4793470b60f5fcac00fd4ad71"
BRANCH = "ab" * 32


def notify_params(**over: object) -> list[object]:
    p: dict[str, object] = {
        "job_id": "job1",
        "prevhash": PREVHASH,
        "coinb1": "01000000010000",
        "coinb2": "ffffffff0100",
        "branch": [BRANCH],
        "version": "20000000",
        "nbits": "1e0ffff0",
        "ntime": "52a4b2f4",
        "clean": True,
    }
    p.update(over)
    return list(p.values())


def line(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_notify_vector() -> None:
    msg = P.parse_line(line({"id": None, "method": "mining.notify", "params": notify_params()}))
    assert msg == P.Notify(
        job_id="job1",
        prevhash=bytes.fromhex(PREVHASH),
        coinb1=bytes.fromhex("01000000010000"),
        coinb2=bytes.fromhex("ffffffff0100"),
        merkle_branch=(bytes.fromhex(BRANCH),),
        version=0x20000000,
        nbits=0x1E0FFFF0,
        ntime=0x52A4B2F4,
        clean_jobs=True,
    )


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("prevhash", PREVHASH[:-2], "prevhash: expected 32 bytes"),
        ("prevhash", PREVHASH[:-1], "prevhash: not an even-length hex"),
        ("prevhash", "zz" * 32, "prevhash: not an even-length hex"),
        ("branch", ["ab" * 31], "merkle_branch[0]: expected 32 bytes"),
        ("branch", "ab" * 32, "merkle_branch: expected an array"),
        ("version", "2000000", "version: not an even-length hex"),
        ("nbits", "1e0ffff000", "nbits: expected 4 bytes"),
        ("ntime", 1600000000, "ntime: expected a hex string"),
        ("coinb1", "0 1", "coinb1: not an even-length hex"),
        ("clean", "yes", "clean_jobs: expected a boolean"),
        ("job_id", 7, "job_id: expected a non-empty string"),
        ("job_id", "", "job_id: expected a non-empty string"),
    ],
)
def test_notify_rejects_bad_fields(field: str, value: object, words: str) -> None:
    msg = {"id": None, "method": "mining.notify", "params": notify_params(**{field: value})}
    with pytest.raises(P.ProtocolError, match=re.escape(words)):
        P.parse_line(line(msg))


def test_notify_too_few_params() -> None:
    with pytest.raises(P.ProtocolError, match="at least 9 params"):
        P.parse_line(line({"id": None, "method": "mining.notify", "params": notify_params()[:8]}))


@pytest.mark.parametrize(
    ("value", "expected"), [(2, 2.0), (0.5, 0.5), ("16", 16.0), ("0.001", 0.001)]
)
def test_set_difficulty_forms(value: object, expected: float) -> None:
    msg = P.parse_line(line({"id": None, "method": "mining.set_difficulty", "params": [value]}))
    assert msg == P.SetDifficulty(expected)


@pytest.mark.parametrize("value", [0, -1, "abc", True, None, [1], "nan", "inf", "1e400"])
def test_set_difficulty_rejects(value: object) -> None:
    raw = json.dumps({"id": None, "method": "mining.set_difficulty", "params": [value]})
    with pytest.raises(P.ProtocolError, match="difficulty"):
        P.parse_line(raw.encode())


def test_nan_literal_is_not_json() -> None:
    with pytest.raises(P.ProtocolError, match="not JSON"):
        P.parse_line(b'{"id":null,"method":"mining.set_difficulty","params":[NaN]}')


def test_set_extranonce() -> None:
    msg = P.parse_line(
        line({"id": None, "method": "mining.set_extranonce", "params": ["08000002", 4]})
    )
    assert msg == P.SetExtranonce(bytes.fromhex("08000002"), 4)
    for bad in (["08000002", 0], ["08000002", 17], ["0800000", 4], [None, 4]):
        with pytest.raises(P.ProtocolError):
            P.parse_line(line({"id": None, "method": "mining.set_extranonce", "params": bad}))


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (["pool.example", 3333, 5], P.Reconnect("pool.example", 3333, 5.0)),
        (["pool.example", "3334", 0], P.Reconnect("pool.example", 3334, 0.0)),
        ([None, None, None], P.Reconnect(None, None, None)),
        ([], P.Reconnect(None, None, None)),
        (["", 3333], P.Reconnect(None, 3333, None)),
        (["h", 1, 1e9], P.Reconnect("h", 1, D.STRATUM_MAX_RECONNECT_WAIT_S)),
    ],
)
def test_reconnect_forms(params: list[object], expected: P.Reconnect) -> None:
    assert P.parse_line(line({"id": None, "method": "client.reconnect", "params": params})) == (
        expected
    )


@pytest.mark.parametrize(
    "params",
    [["h", 0], ["h", 70000], ["h", "33a"], ["h", "\u00b2"], ["bad host", 1], [5, 1], ["h", 1, -1]],
)
def test_reconnect_rejects(params: list[object]) -> None:
    with pytest.raises(P.ProtocolError, match=r"client\.reconnect"):
        P.parse_line(line({"id": None, "method": "client.reconnect", "params": params}))


def test_other_server_methods() -> None:
    assert P.parse_line(line({"id": 5, "method": "client.get_version", "params": []})) == (
        P.GetVersion(5)
    )
    assert P.parse_line(line({"id": "p", "method": "mining.ping"})) == P.Ping("p")
    assert P.parse_line(line({"id": 6, "method": "client.show_message", "params": ["hi"]})) == (
        P.ShowMessage("hi", 6)
    )
    assert P.parse_line(line({"id": 7, "method": "mining.fancy", "params": []})) == (
        P.UnknownMethod("mining.fancy", 7)
    )


def test_method_first_then_id() -> None:
    # a notify carrying an id of its own is still a notify
    msg = P.parse_line(line({"id": 2, "method": "mining.notify", "params": notify_params()}))
    assert isinstance(msg, P.Notify)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (None, None),
        ([21, "Job not found", None], P.StratumError(21, "Job not found", None)),
        ([23, "Low difficulty"], P.StratumError(23, "Low difficulty", None)),
        ("stale share", P.StratumError(None, "stale share", None)),
        ({"code": 22, "message": "Duplicate"}, P.StratumError(22, "Duplicate", None)),
        (["x", 5], P.StratumError(None, "5", None)),
        (["\u00b2", "m"], P.StratumError(None, "m", None)),
        (["22", "dup"], P.StratumError(22, "dup", None)),
        ([], P.StratumError(None, "", None)),
    ],
)
def test_reply_errors_parsed_defensively(error: object, expected: object) -> None:
    msg = P.parse_line(line({"id": 4, "result": None, "error": error}))
    assert msg == P.Reply(4, None, expected)


def test_reply_needs_id_and_a_body() -> None:
    with pytest.raises(P.ProtocolError, match="neither a method nor an id"):
        P.parse_line(line({"id": None, "result": True, "error": None}))
    with pytest.raises(P.ProtocolError, match="no result and no error"):
        P.parse_line(line({"id": 3}))
    with pytest.raises(P.ProtocolError, match="id: expected"):
        P.parse_line(line({"id": [1], "result": True}))


def test_subscribe_result_forms() -> None:
    full = [[["mining.set_difficulty", "d1"], ["mining.notify", "n1"]], "f000000f", 4]
    assert P.parse_subscribe_result(full) == P.Subscription(bytes.fromhex("f000000f"), 4, "n1")
    bare = [["mining.notify", "n2"], "08", 8]
    assert P.parse_subscribe_result(bare) == P.Subscription(b"\x08", 8, "n2")
    odd = [None, "", 2]
    assert P.parse_subscribe_result(odd) == P.Subscription(b"", 2, None)
    for bad in ([full[0], "f0", 0], [full[0], "f0", 17], [full[0], "f0x", 4], "x", [1, 2]):
        with pytest.raises(P.ProtocolError, match=r"mining\.subscribe"):
            P.parse_subscribe_result(bad)


def test_encoders() -> None:
    assert json.loads(P.subscribe(1)) == {
        "id": 1,
        "method": "mining.subscribe",
        "params": [P.CLIENT_VERSION],
    }
    assert json.loads(P.subscribe(1, "n1"))["params"] == [P.CLIENT_VERSION, "n1"]
    assert P.CLIENT_VERSION.startswith("doge-agent/")
    assert json.loads(P.authorize(2, "w.1", "pw"))["params"] == ["w.1", "pw"]
    assert json.loads(P.extranonce_subscribe(3))["method"] == "mining.extranonce.subscribe"
    assert json.loads(P.suggest_difficulty(4, 0.5))["params"] == [0.5]
    assert json.loads(P.reply_get_version(9)) == {
        "id": 9,
        "result": P.CLIENT_VERSION,
        "error": None,
    }
    assert json.loads(P.reply_ping("a"))["id"] == "a"
    assert json.loads(P.reply_show_message(3))["result"] is True
    assert P.submit(1, "u", "j", b"", 0, 0).endswith(b"\n")


def test_submit_byte_order() -> None:
    # reference §2.4: nonce is "%08x" of the header value = header bytes 76..80 reversed
    header_nonce_bytes = bytes.fromhex("cd513f7c")  # Litecoin genesis, LE in the header
    nonce = int.from_bytes(header_nonce_bytes, "little")
    assert nonce == 2084524493
    params = json.loads(P.submit(7, "w", "j1", bytes.fromhex("00000001"), 0x4E8EAAB9, nonce))[
        "params"
    ]
    assert params == ["w", "j1", "00000001", "4e8eaab9", header_nonce_bytes[::-1].hex()]
    assert params[4] == "7c3f51cd"
    with pytest.raises(ValueError, match="nonce"):
        P.submit(1, "u", "j", b"", 0, 1 << 32)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b"not json",
        b"[1,2,3]",
        b'"str"',
        b"\xff\xfe",
        b'{"id":1,',
        b'{"method": 5}',
        b'{"method":"mining.notify","params":{"a":1}}',
        b"[" * 100000,
        b'{"id":' + b"9" * 5000 + b', "result": true}',
    ],
)
def test_garbage_raises_protocol_error(raw: bytes) -> None:
    with pytest.raises(P.ProtocolError):
        P.parse_line(raw)


def test_huge_line_refused() -> None:
    big = line({"id": 1, "result": "a" * (D.STRATUM_MAX_LINE_BYTES + 10), "error": None})
    with pytest.raises(P.ProtocolError, match="longer than"):
        P.parse_line(big)


OK_TYPES = (
    P.Notify,
    P.SetDifficulty,
    P.SetExtranonce,
    P.Reconnect,
    P.ShowMessage,
    P.GetVersion,
    P.Ping,
    P.UnknownMethod,
    P.Reply,
)


def _parse_or_error(raw: bytes) -> None:
    try:
        msg = P.parse_line(raw)
    except P.ProtocolError:
        return
    assert isinstance(msg, OK_TYPES)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
METHODS = [
    "mining.notify",
    "mining.set_difficulty",
    "mining.set_extranonce",
    "client.reconnect",
    "client.show_message",
    "client.get_version",
    "mining.ping",
    "mining.unknown",
]


@given(st.binary(max_size=300))
def test_property_random_bytes(raw: bytes) -> None:
    _parse_or_error(raw)


@given(
    st.sampled_from(METHODS),
    st.one_of(st.none(), st.integers(), st.text(max_size=5), json_values),
    json_values,
)
def test_property_wrong_types(method: str, msg_id: object, params: object) -> None:
    _parse_or_error(line({"id": msg_id, "method": method, "params": params}))


@given(
    st.lists(st.sampled_from(["", "0", "ab", "zz", "g1", PREVHASH, BRANCH, 5, None]), max_size=12)
)
def test_property_notify_fields(params: list[object]) -> None:
    _parse_or_error(line({"id": None, "method": "mining.notify", "params": params}))


@given(st.integers(min_value=0, max_value=8), st.integers(min_value=0, max_value=120))
def test_property_hex_of_wrong_length(which: int, n: int) -> None:
    fields = ["job_id", "prevhash", "coinb1", "coinb2", "branch", "version", "nbits", "ntime"]
    name = fields[which % len(fields)]
    value: object = "a" * n if name != "branch" else ["a" * n]
    raw = line({"id": None, "method": "mining.notify", "params": notify_params(**{name: value})})
    _parse_or_error(raw)


@given(st.data())
def test_property_truncated_lines(data: st.DataObject) -> None:
    full = line({"id": None, "method": "mining.notify", "params": notify_params()})
    cut = data.draw(st.integers(min_value=0, max_value=len(full)))
    _parse_or_error(full[:cut])


@given(json_values, json_values, st.one_of(st.integers(), st.text(max_size=4)))
def test_property_replies(result: object, error: object, msg_id: object) -> None:
    _parse_or_error(line({"id": msg_id, "result": result, "error": error}))


@given(json_values)
def test_property_subscribe_result(result: object) -> None:
    try:
        sub = P.parse_subscribe_result(result)
    except P.ProtocolError:
        return
    assert 1 <= sub.extranonce2_size <= 16
