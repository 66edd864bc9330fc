"""The C scrypt core through agent.scrypt: public vectors on every backend, a differential test
against hashlib.scrypt, argument errors, and the GIL being released while hashing."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import scrypt

BACKENDS = scrypt.backends()
MAX = scrypt.MAX_TARGET


def reference_pow(header: bytes) -> bytes:
    return hashlib.scrypt(header, salt=header, n=1024, r=1, p=1, dklen=32)


def with_nonce(header: bytes, nonce: int) -> bytes:
    return header[:76] + nonce.to_bytes(4, "little")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest):
    """Runs a test once per backend this CPU has, restoring the default afterwards."""
    before = scrypt.backend()
    scrypt.set_backend(request.param)
    yield request.param
    scrypt.set_backend(before)


def header_vectors(vectors: dict) -> list[tuple[bytes, bytes]]:
    rows = [(r["header"], r["pow_hash_raw"]) for r in vectors["scrypt_header_vectors"]]
    for block in vectors["real_blocks"]:
        # real blocks give the display (byte-reversed) form of the PoW hash
        rows.append((block["header"], bytes.fromhex(block["pow_hash"])[::-1].hex()))
    return [(bytes.fromhex(h), bytes.fromhex(p)) for h, p in rows]


def test_this_machine_has_the_expected_backends() -> None:
    assert BACKENDS[-1] == "portable"
    assert scrypt.backend() == BACKENDS[0]
    for name in BACKENDS:
        assert scrypt.lanes(name) in (1, 4, 8, 16)


def test_header_vectors_pow_hash(vectors: dict, backend: str) -> None:
    for header, expected in header_vectors(vectors):
        assert scrypt.pow_hash(header) == expected, f"{backend}: {header.hex()[:16]}"


def test_header_vectors_scan(vectors: dict, backend: str) -> None:
    """scan() around each vector's own nonce finds it with the right hash at every lane."""
    for header, expected in header_vectors(vectors):
        nonce = int.from_bytes(header[76:], "little")
        lanes = scrypt.lanes()
        for offset in range(min(lanes, 3)):
            start = (nonce - offset) % 2**32
            found = dict(scrypt.scan(header, start, lanes + 1, MAX))
            assert found[nonce] == expected, f"{backend}: lane {offset}"


def test_real_blocks_meet_their_targets(vectors: dict) -> None:
    for block in vectors["real_blocks"]:
        header = bytes.fromhex(block["header"])
        target = int(block["target"], 16)
        nonce = block["nonce"]
        assert scrypt.scan(header, nonce, 1, target) == [(nonce, scrypt.pow_hash(header))]
        assert scrypt.hash_meets(scrypt.pow_hash(header), target)


def test_rfc7914_vectors(vectors: dict) -> None:
    for row in vectors["rfc7914_scrypt"]:
        if row["slow"]:
            continue
        got = scrypt.scrypt(
            row["password"].encode(), row["salt"].encode(), row["N"], row["r"], row["p"],
            row["dklen"],
        )
        assert got.hex() == row["expected"]


@pytest.mark.slow
def test_rfc7914_one_gib_vector(vectors: dict) -> None:
    row = next(r for r in vectors["rfc7914_scrypt"] if r["slow"])
    got = scrypt.scrypt(
        row["password"].encode(), row["salt"].encode(), row["N"], row["r"], row["p"], row["dklen"]
    )
    assert got.hex() == row["expected"]


@given(
    password=st.binary(max_size=200),
    salt=st.binary(max_size=200),
    log_n=st.integers(1, 8),
    r=st.integers(1, 4),
    p=st.integers(1, 3),
    dklen=st.integers(1, 100),
)
def test_property_general_scrypt_matches_hashlib(
    password: bytes, salt: bytes, log_n: int, r: int, p: int, dklen: int
) -> None:
    n = 1 << log_n
    expected = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen)
    assert scrypt.scrypt(password, salt, n, r, p, dklen) == expected


@given(header=st.binary(min_size=80, max_size=80))
def test_property_pow_hash_matches_hashlib(header: bytes) -> None:
    assert scrypt.pow_hash(header) == reference_pow(header)


@given(
    header=st.binary(min_size=80, max_size=80),
    start=st.one_of(st.integers(0, 2**32 - 1), st.integers(2**32 - 20, 2**32 - 1)),
    count=st.integers(1, 40),
    backend_name=st.sampled_from(BACKENDS),
)
def test_property_scan_matches_hashlib(
    header: bytes, start: int, count: int, backend_name: str
) -> None:
    """Every lane of every backend, any start (wrapping past 2**32), any count."""
    before = scrypt.backend()
    scrypt.set_backend(backend_name)
    try:
        found = scrypt.scan(header, start, count, MAX)
    finally:
        scrypt.set_backend(before)
    nonces = [(start + i) % 2**32 for i in range(count)]
    assert [n for n, _ in found] == nonces
    for nonce, raw in found:
        assert raw == reference_pow(with_nonce(header, nonce))


def test_scan_returns_exactly_the_nonces_meeting_the_target(backend: str) -> None:
    header = os.urandom(80)
    every = scrypt.scan(header, 1000, 100, MAX)
    hashes = sorted(int.from_bytes(h, "little") for _, h in every)
    target = hashes[9]  # the tenth-smallest hash: exactly ten meet it
    found = scrypt.scan(header, 1000, 100, target)
    assert len(found) == 10
    assert all(int.from_bytes(h, "little") <= target for _, h in found)
    assert scrypt.scan(header, 1000, 100, hashes[0] - 1) == []


def test_scan_ignores_the_nonce_bytes_of_the_header() -> None:
    header = os.urandom(80)
    other = header[:76] + b"\xff\xff\xff\xff"
    assert scrypt.scan(header, 7, 5, MAX) == scrypt.scan(other, 7, 5, MAX)


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda: scrypt.pow_hash(b"x" * 79), ValueError, "80 bytes, got 79"),
        (lambda: scrypt.pow_hash("x" * 80), TypeError, "bytes-like"),
        (lambda: scrypt.scan(b"x" * 81, 0, 1, 1), ValueError, "80 bytes, got 81"),
        (lambda: scrypt.scan(b"x" * 80, 0, 0, 1), ValueError, "count must be in 1..2**32"),
        (lambda: scrypt.scan(b"x" * 80, 0, 2**32 + 1, 1), ValueError, "count"),
        (lambda: scrypt.scan(b"x" * 80, -1, 1, 1), ValueError, "start_nonce"),
        (lambda: scrypt.scan(b"x" * 80, 2**32, 1, 1), ValueError, "start_nonce"),
        (lambda: scrypt.scan(b"x" * 80, 0, 1, -1), ValueError, "target"),
        (lambda: scrypt.scan(b"x" * 80, 0, 1, 2**256), ValueError, "target"),
        (lambda: scrypt.scan(b"x" * 80, 0, 1, 1.5), TypeError, "target must be an int"),
        (lambda: scrypt.scrypt(b"", b"", 1000, 1, 1, 32), ValueError, "power of 2"),
        (lambda: scrypt.scrypt(b"", b"", 1, 1, 1, 32), ValueError, "power of 2"),
        (lambda: scrypt.scrypt(b"", b"", 16, 0, 1, 32), ValueError, "r and p"),
        (lambda: scrypt.scrypt(b"", b"", 16, 1, 0, 32), ValueError, "r and p"),
        (lambda: scrypt.scrypt(b"", b"", 16, 1, 1, 0), ValueError, "dklen"),
        (lambda: scrypt.scrypt(b"", b"", 2**40, 1, 1, 32), ValueError, "4 GiB"),
        (lambda: scrypt.set_backend("quantum"), ValueError, "this CPU has"),
    ],
)
def test_bad_arguments_are_named(call, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words.replace("*", r"\*").replace(".", r"\.")):
        call()


def test_scan_releases_the_gil() -> None:
    """While one thread hashes a long scan, the interpreter keeps running Python code."""
    header = os.urandom(80)
    started = threading.Event()
    done = threading.Event()
    ticks = 0

    def hash_long() -> None:
        started.set()
        scrypt.scan(header, 0, 64 * scrypt.lanes(), 0)
        done.set()

    worker = threading.Thread(target=hash_long)
    worker.start()
    assert started.wait(10)
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)  # yields to the worker; we count how often we got the GIL back
    worker.join(10)
    assert ticks >= 5, "the main thread was starved: scan held the GIL"


def test_threads_get_their_own_scratchpads() -> None:
    """Concurrent scans on every backend give the same answers as sequential ones."""
    header = os.urandom(80)
    expected = scrypt.scan(header, 0, 48, MAX)
    results: list[list] = []
    lock = threading.Lock()

    def work() -> None:
        got = scrypt.scan(header, 0, 48, MAX)
        with lock:
            results.append(got)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [expected] * 4


def test_portable_sha256_gives_the_same_hashes() -> None:
    from agent import _scrypt

    header = os.urandom(80)
    best = scrypt.scan(header, 0, 20, MAX)
    _scrypt.set_sha256("portable")
    try:
        assert _scrypt.sha256_impl() == "portable"
        assert scrypt.scan(header, 0, 20, MAX) == best
        assert scrypt.pow_hash(header) == reference_pow(header)
    finally:
        _scrypt.set_sha256("best")


def test_backend_from_environment() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, DOGE_AGENT_SCRYPT_BACKEND="portable", PYTHONPATH=str(root))
    out = subprocess.run(
        [sys.executable, "-c", "from agent import scrypt; print(scrypt.backend())"],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )
    assert out.stdout.strip() == "portable"
    env["DOGE_AGENT_SCRYPT_BACKEND"] = "nonsense"
    bad = subprocess.run(
        [sys.executable, "-c", "import agent.scrypt"], env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert bad.returncode != 0
    assert "nonsense" in bad.stderr and "portable" in bad.stderr
