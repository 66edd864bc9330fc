"""The Python face of the C scrypt core (agent._scrypt).

pow_hash(header80)          scrypt(N=1024, r=1, p=1, dkLen=32) of an 80-byte header (salt = header)
scrypt(pw, salt, n, r, p, dk)
                            general RFC 7914 scrypt
scan(header80, start, count, target)
                            hashes nonces start..start+count-1 (bytes 76..79, little-endian) of
                            one header, lanes interleaved; returns [(nonce, raw_hash)] whose hash,
                            read little-endian, is <= target
backends(), backend()       the SIMD paths this CPU can run, and the one in use
Verifier(threads=1, lazy_s=0.0)
                            pow_hash on the core's own threads, which never take the GIL:
                            submit(header80, tag, urgent_target=None), take() -> [(tag,
                            raw_hash)], fileno() readable while results wait (with lazy_s, once
                            a result has waited that long or meets its urgent target: 32 bytes,
                            little-endian), set_lazy(s), pending(), close()
                            (agent.hardware.verifier)

DOGE_AGENT_SCRYPT_BACKEND=<name> picks a backend at import (tests use it); set_backend() at run
time. Every call releases the GIL while hashing, so threads scale across cores.
"""

from __future__ import annotations

import os

from agent import _scrypt

POW_N = 1024
HEADER_BYTES = 80
HASH_BYTES = 32
MAX_SCAN_COUNT = _scrypt.MAX_SCAN_COUNT
MAX_TARGET = (1 << 256) - 1
Verifier = _scrypt.Verifier
VERIFIER_MAX_THREADS = _scrypt.VERIFIER_MAX_THREADS
BACKEND_ENV = "DOGE_AGENT_SCRYPT_BACKEND"


def backends() -> list[str]:
    """Backends this CPU can run, fastest first (the first is the default)."""
    return list(_scrypt.backends())


def backend() -> str:
    """The backend scan() and pow_hash() use now."""
    return str(_scrypt.backend())


def set_backend(name: str) -> None:
    """Switch backend for the whole process; ValueError names the ones available."""
    _scrypt.set_backend(name)


def lanes(name: str | None = None) -> int:
    """Hashes computed side by side by one call of a backend's kernel."""
    return int(_scrypt.lanes(name if name is not None else backend()))


def pow_hash(header80: bytes) -> bytes:
    """Raw 32-byte scrypt PoW hash of an 80-byte block header (compare it little-endian)."""
    return bytes(_scrypt.pow_hash(header80))


def scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    """RFC 7914 scrypt(P, S, N, r, p, dkLen)."""
    return bytes(_scrypt.scrypt(password, salt, n, r, p, dklen))


def scan(header80: bytes, start_nonce: int, count: int, target: int) -> list[tuple[int, bytes]]:
    """Nonces in [start_nonce, start_nonce + count) whose raw hash, little-endian, is <= target.

    Bytes 76..79 of header80 are ignored and replaced by each nonce. Nonces wrap past 2**32 - 1.
    """
    if not isinstance(target, int) or isinstance(target, bool):
        raise TypeError(f"target must be an int, not {type(target).__name__}")
    if not 0 <= target <= MAX_TARGET:
        raise ValueError(f"target must be in 0..2**256-1, got {target}")
    return _scrypt.scan(header80, start_nonce, count, target.to_bytes(32, "little"))


def hash_meets(raw_hash: bytes, target: int) -> bool:
    """True when a raw scrypt hash, read little-endian, is <= target."""
    return int.from_bytes(raw_hash, "little") <= target


_wanted = os.environ.get(BACKEND_ENV, "").strip()
if _wanted:
    set_backend(_wanted)
