"""Job maths (pure): notify + extranonces -> coinbase -> merkle root -> 80-byte header.

Byte orders (reference/stratum-and-regtest.md §2): notify's prevhash is the header field with the
bytes of each 4-byte word reversed (a word swap, its own inverse); merkle branch entries and the
merkle root are internal order, used as is; version, nbits, ntime and the nonce are little-endian
in the header and go over the wire as big-endian hex. The coinbase the miner sees is the
non-witness serialisation, because txids exclude witness data.

The helpers that do not take a Notify (sha256d, merkle_root, merkle_branch, header80, ...) are
shared with the emulated pool, which builds the same headers to validate shares."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from agent import _scrypt
from agent.mining.targets import difficulty_to_target, nbits_to_target
from agent.stratum.protocol import Notify

MAX_EXTRANONCE2_SIZE = 16  # pools use 2..8; anything larger is a misconfigured pool
MAX_NTIME_ROLL_S = 7200  # consensus: a block time may be at most 2 h in the future


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def _u32(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{what} must be a 32-bit unsigned int, got {value!r}")
    return value


def _bytes(value: bytes, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
    if size is not None and len(value) != size:
        raise ValueError(f"{what} must be {size} bytes, got {len(value)}")
    return bytes(value)


def swap_words(data32: bytes) -> bytes:
    """Reverse the bytes inside each 4-byte word: Stratum prevhash <-> header prevhash."""
    data32 = _bytes(data32, "prevhash", 32)
    return b"".join(data32[i : i + 4][::-1] for i in range(0, 32, 4))


def prevhash_from_display(display_hex: str) -> bytes:
    """Header-order prevhash from the RPC/explorer hex (byte-reversed)."""
    raw = bytes.fromhex(display_hex)
    return _bytes(raw, "prevhash (display hex)", 32)[::-1]


def coinbase(coinb1: bytes, extranonce1: bytes, extranonce2: bytes, coinb2: bytes) -> bytes:
    return (
        _bytes(coinb1, "coinb1")
        + _bytes(extranonce1, "extranonce1")
        + _bytes(extranonce2, "extranonce2")
        + _bytes(coinb2, "coinb2")
    )


def merkle_root(coinbase_txid: bytes, branch: Sequence[bytes]) -> bytes:
    """Fold the coinbase txid (internal order) up the branch; the coinbase is always leftmost."""
    root = _bytes(coinbase_txid, "coinbase txid", 32)
    for i, b in enumerate(branch):
        root = sha256d(root + _bytes(b, f"merkle_branch[{i}]", 32))
    return root


def merkle_branch(txids: Sequence[bytes]) -> list[bytes]:
    """The branch a pool sends for a block whose coinbase is followed by `txids` (internal order).

    At each level the coinbase's sibling is recorded; an odd level duplicates its last hash,
    as Bitcoin's merkle tree does."""
    level: list[bytes | None] = [None, *(_bytes(t, "txid", 32) for t in txids)]
    branch: list[bytes] = []
    while len(level) > 1:
        branch.append(level[1])  # type: ignore[arg-type]  # only index 0 is the placeholder
        if len(level) % 2:
            level.append(level[-1])
        level = [None] + [
            sha256d(level[i] + level[i + 1])  # type: ignore[operator]
            for i in range(2, len(level), 2)
        ]
    return branch


def merkle_root_of(txids: Sequence[bytes]) -> bytes:
    """Merkle root of a full list of txids (internal order), for checking branches."""
    if not txids:
        raise ValueError("merkle_root_of needs at least one txid")
    return merkle_root(txids[0], merkle_branch(txids[1:]))


def header80(
    version: int, prevhash: bytes, root: bytes, ntime: int, nbits: int, nonce: int
) -> bytes:
    """The 80-byte header; prevhash and root in header (internal) order."""
    return (
        struct.pack("<I", _u32(version, "version"))
        + _bytes(prevhash, "prevhash", 32)
        + _bytes(root, "merkle root", 32)
        + struct.pack("<III", _u32(ntime, "ntime"), _u32(nbits, "nbits"), _u32(nonce, "nonce"))
    )


def with_nonce(header76: bytes, nonce: int) -> bytes:
    return _bytes(header76, "header76", 76) + struct.pack("<I", _u32(nonce, "nonce"))


def block_hash(header: bytes) -> bytes:
    """sha256d of the header: the block id, raw (internal) order."""
    return sha256d(_bytes(header, "header", 80))


def block_hash_hex(header: bytes) -> str:
    """The block id as RPCs and explorers show it (byte-reversed)."""
    return block_hash(header)[::-1].hex()


def hex_u32(value: int) -> str:
    """Big-endian hex of a uint32, the wire format of version, nbits, ntime and nonce."""
    return f"{_u32(value, 'value'):08x}"


def bip34_height(height: int) -> bytes:
    """The coinbase scriptSig prefix for a block height (BIP34, CScript number rules).

    0 is OP_0 and 1..16 are OP_1..OP_16 (not pushes); larger heights are a minimal little-endian
    push with a sign byte added when the top bit is set."""
    if isinstance(height, bool) or not isinstance(height, int) or not 0 <= height < 1 << 31:
        raise ValueError(f"block height must be in 0..2**31-1, got {height!r}")
    if height == 0:
        return b"\x00"
    if height <= 16:
        return bytes([0x50 + height])
    body = height.to_bytes((height.bit_length() + 7) // 8, "little")
    if body[-1] & 0x80:
        body += b"\x00"
    return bytes([len(body)]) + body


@dataclass(frozen=True)
class Job:
    """A notify bound to what the miner needs to build headers for it.

    extranonce1/extranonce2_size are the values in force when the notify arrived, and difficulty
    is the share difficulty latched at that notify (set_difficulty applies from the next one)."""

    pool_id: str
    notify: Notify
    difficulty: float
    extranonce1: bytes
    extranonce2_size: int

    def __post_init__(self) -> None:
        _bytes(self.extranonce1, "extranonce1")
        size = self.extranonce2_size
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"extranonce2_size must be an int, not {type(size).__name__}")
        if not 1 <= size <= MAX_EXTRANONCE2_SIZE:
            raise ValueError(f"extranonce2_size must be in 1..{MAX_EXTRANONCE2_SIZE}, got {size}")
        for what in ("version", "nbits", "ntime"):
            _u32(getattr(self.notify, what), f"notify.{what}")
        _bytes(self.notify.prevhash, "notify.prevhash", 32)
        _bytes(self.notify.coinb1, "notify.coinb1")
        _bytes(self.notify.coinb2, "notify.coinb2")
        for i, b in enumerate(self.notify.merkle_branch):
            _bytes(b, f"notify.merkle_branch[{i}]", 32)
        difficulty_to_target(self.difficulty)  # validates the difficulty

    # cached: every nonce of the job is classified against both, and the exact (Fraction)
    # difficulty arithmetic was a tenth of the agent's CPU at the real nonce rate
    @cached_property
    def share_target(self) -> int:
        return difficulty_to_target(self.difficulty)

    @cached_property
    def network_target(self) -> int:
        return nbits_to_target(self.notify.nbits)

    @cached_property
    def prevhash(self) -> bytes:
        """Header-order prevhash."""
        return swap_words(self.notify.prevhash)

    @cached_property
    def _head(self) -> bytes:
        """Header bytes 0..35 (version, prevhash): the same for every work of the job."""
        return struct.pack("<I", self.notify.version) + self.prevhash

    def coinbase(self, extranonce2: bytes) -> bytes:
        _bytes(extranonce2, "extranonce2", self.extranonce2_size)
        return coinbase(self.notify.coinb1, self.extranonce1, extranonce2, self.notify.coinb2)

    @cached_property
    def _branch(self) -> bytes:
        return b"".join(self.notify.merkle_branch)

    def merkle_root(self, extranonce2: bytes) -> bytes:
        # The work for every chain is built here at each notify, on the event loop: the fold is
        # in the C core (the branch was checked once, in __post_init__). merkle_root() below is
        # the reference it is tested against.
        return _scrypt.merkle_root(self.coinbase(extranonce2), self._branch)

    def header76(self, extranonce2: bytes, ntime: int | None = None) -> bytes:
        """The header without its nonce; ntime defaults to the job's."""
        n = self.notify
        t = n.ntime if ntime is None else _u32(ntime, "ntime")
        return self._head + self.merkle_root(extranonce2) + struct.pack("<II", t, n.nbits)

    def header80(self, extranonce2: bytes, nonce: int, ntime: int | None = None) -> bytes:
        return with_nonce(self.header76(extranonce2, ntime), nonce)

    def submit_params(self, worker: str, extranonce2: bytes, ntime: int, nonce: int) -> list[str]:
        """mining.submit params: [worker, job_id, extranonce2_hex, ntime_hex, nonce_hex]."""
        return [worker, self.notify.job_id, extranonce2.hex(), hex_u32(ntime), hex_u32(nonce)]
