"""Boot self-test: the C scrypt core against known vectors, on every backend this CPU runs.

The board runs it at boot: a core that hashes wrongly would waste every watt, so any mismatch
makes `doge-agent selftest` exit non-zero. Vectors ship with the package (selftest_vectors.json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from agent import scrypt

VECTORS = "selftest_vectors.json"


def load_vectors() -> dict[str, Any]:
    # Beside this file (as the board profiles are): importlib.resources would cost the agent,
    # which runs this at every start, ~1 MB of RSS (it imports tempfile, zipfile, shutil...).
    return json.loads(Path(__file__).with_name(VECTORS).read_text(encoding="utf-8"))


def check_backend(vectors: dict[str, Any]) -> tuple[int, list[str]]:
    """(checks run, failures) for the backend in use, through pow_hash and scan."""
    failures: list[str] = []
    checks = 0
    everything = scrypt.MAX_TARGET
    for i, v in enumerate(vectors["headers"]):
        header = bytes.fromhex(v["header"])
        want = bytes.fromhex(v["pow_hash_raw"])
        nonce = int.from_bytes(header[76:], "little")
        checks += 2
        if scrypt.pow_hash(header) != want:
            failures.append(f"pow_hash of headers[{i}] ({v['source']})")
        if scrypt.scan(header, nonce, 1, everything) != [(nonce, want)]:
            failures.append(f"scan of headers[{i}] ({v['source']})")
    for i, b in enumerate(vectors["blocks"]):
        header = bytes.fromhex(b["header"])
        target = int(b["target"], 16)
        want = bytes.fromhex(b["pow_hash_raw"])
        # A window wider than any backend's lane count, off-aligned, so the real nonce sits
        # in a lane other than the first and the filter must keep it while dropping the rest.
        start = (b["nonce"] - 21) % (1 << 32)
        found = dict(scrypt.scan(header, start, 40, target))
        checks += 2
        if found.get(b["nonce"]) != want:
            failures.append(f"scan of blocks[{i}] missed its nonce ({b['source']})")
        for nonce, raw in found.items():
            h = header[:76] + nonce.to_bytes(4, "little")
            wrong = not scrypt.hash_meets(raw, target) or scrypt.pow_hash(h) != raw
            if nonce != b["nonce"] and wrong:
                failures.append(f"scan of blocks[{i}] returned a wrong nonce {nonce}")
        full = scrypt.scan(header, start, 40, everything)
        checks += 1
        if [n for n, _ in full] != [(start + k) % (1 << 32) for k in range(40)] or any(
            scrypt.pow_hash(header[:76] + n.to_bytes(4, "little")) != raw for n, raw in full[::7]
        ):
            failures.append(f"scan of blocks[{i}] with the easiest target disagrees with pow_hash")
    return checks, failures


def check_general(vectors: dict[str, Any]) -> tuple[int, list[str]]:
    """RFC 7914 vectors through the general scrypt()."""
    failures = []
    for i, v in enumerate(vectors["rfc7914_scrypt"]):
        got = scrypt.scrypt(
            v["password"].encode(), v["salt"].encode(), v["N"], v["r"], v["p"], v["dklen"]
        )
        if got.hex() != v["expected"]:
            failures.append(f"scrypt rfc7914[{i}] (N={v['N']}, r={v['r']}, p={v['p']})")
    return len(vectors["rfc7914_scrypt"]), failures


def run(out: TextIO | None = None, vectors: dict[str, Any] | None = None) -> int:
    """Print one line per backend (and one for general scrypt); 0 if all pass, 1 otherwise."""
    out = out or sys.stdout
    vectors = vectors if vectors is not None else load_vectors()
    failed = False
    before = scrypt.backend()
    try:
        for name in scrypt.backends():
            scrypt.set_backend(name)
            try:
                checks, failures = check_backend(vectors)
            except Exception as e:  # a crashing backend is a failed backend, not a traceback
                checks, failures = 0, [f"raised {type(e).__name__}: {e}"]
            failed |= bool(failures)
            lanes = scrypt.lanes(name)
            _line(out, f"{name} ({lanes} lane{'' if lanes == 1 else 's'})", checks, failures)
        checks, failures = check_general(vectors)
        failed |= bool(failures)
        _line(out, "scrypt RFC 7914", checks, failures)
    finally:
        scrypt.set_backend(before)
    print("selftest: " + ("FAILED" if failed else "passed"), file=out)
    return 1 if failed else 0


def _line(out: TextIO, what: str, checks: int, failures: list[str]) -> None:
    if failures:
        detail = "; ".join(failures)
        print(f"{what}: FAIL ({len(failures)} of {checks} checks): {detail}", file=out)
    else:
        print(f"{what}: ok ({checks} checks)", file=out)
