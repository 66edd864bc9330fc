"""Block templates for the emulated pool (pure): coinbase halves, merkle branch, full block.

The pool sends a miner coinb1/coinb2 around extranonce1 || extranonce2; a share that meets the
network target becomes a block. Facts from reference/stratum-and-regtest.md §5.4:
* scriptSig = BIP34 height || push(extranonce1 || extranonce2) || push(tag), 2..100 bytes;
* outputs: the payout, plus a zero-value output carrying default_witness_commitment;
* the miner hashes the non-witness coinbase (txids exclude witness data), but a block with a
  witness commitment must carry the coinbase in witness form with the 32-byte reserved value
  (submitblock would quietly add it; a P2P peer would reject the block without it);
* block = header || varint(1+n) || coinbase || template tx data in order || (MWEB) 01 || mweb."""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.mining.job import (
    bip34_height,
    merkle_branch,
    merkle_root_of,
    prevhash_from_display,
    sha256d,
)
from agent.mining.targets import nbits_to_target

POOL_TAG = b"/doge-agent-pool/"
OP_TRUE_SCRIPT = b"\x51"  # anyone-can-spend payout when no address is configured (tests only)
WITNESS_RESERVED_VALUE = bytes(32)


class TemplateError(ValueError):
    """A getblocktemplate answer we cannot build a block from; the text names the field."""


def varint(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


def push(data: bytes) -> bytes:
    """A script push of up to 75 bytes (all the coinbase needs)."""
    if len(data) > 75:
        raise ValueError(f"push of {len(data)} bytes: at most 75 supported here")
    return bytes([len(data)]) + data


def coinbase_parts(
    *,
    height: int,
    value: int,
    payout_script: bytes,
    witness_commitment: bytes | None,
    extranonce_size: int,
    tag: bytes = POOL_TAG,
) -> tuple[bytes, bytes]:
    """coinb1, coinb2 of a non-witness coinbase with extranonce_size bytes between them."""
    if not 0 <= value < 21_000_000 * 4 * 10**8:
        raise ValueError(f"coinbase value out of range: {value}")
    if not 1 <= extranonce_size <= 32:
        raise ValueError(f"extranonce size must be in 1..32, got {extranonce_size}")
    script_head = bip34_height(height) + bytes([extranonce_size])  # push opcode of the extranonces
    script_tail = push(tag)
    script_len = len(script_head) + extranonce_size + len(script_tail)
    if not 2 <= script_len <= 100:
        raise ValueError(f"coinbase scriptSig must be 2..100 bytes, would be {script_len}")
    coinb1 = (
        struct.pack("<i", 1)
        + b"\x01"  # one input: the null prevout
        + bytes(32)
        + b"\xff\xff\xff\xff"
        + varint(script_len)
        + script_head
    )
    outputs = [struct.pack("<q", value) + varint(len(payout_script)) + payout_script]
    if witness_commitment is not None:
        outputs.append(struct.pack("<q", 0) + varint(len(witness_commitment)) + witness_commitment)
    coinb2 = (
        script_tail
        + b"\xff\xff\xff\xff"  # sequence
        + varint(len(outputs))
        + b"".join(outputs)
        + struct.pack("<I", 0)  # lock time
    )
    return coinb1, coinb2


def coinbase_witness_form(coinbase: bytes) -> bytes:
    """The coinbase with marker/flag and one witness item: the 32-byte reserved value."""
    return (
        coinbase[:4]
        + b"\x00\x01"
        + coinbase[4:-4]
        + b"\x01"
        + push(WITNESS_RESERVED_VALUE)
        + coinbase[-4:]
    )


def witness_commitment_script(wtxids: Sequence[bytes]) -> bytes:
    """OP_RETURN commitment for non-coinbase wtxids (internal order); the coinbase's counts as 0.

    Used by tests to check the node's default_witness_commitment independently."""
    root = merkle_root_of([bytes(32), *wtxids])
    return bytes.fromhex("6a24aa21a9ed") + sha256d(root + WITNESS_RESERVED_VALUE)


@dataclass(frozen=True)
class Template:
    """What the pool needs to send jobs for one block template and to assemble its block."""

    height: int
    version: int
    prevhash: bytes  # header (internal) order
    nbits: int
    ntime: int
    mintime: int
    coinb1: bytes
    coinb2: bytes
    branch: tuple[bytes, ...]
    tx_data: tuple[bytes, ...]  # serialised transactions after the coinbase, in order
    mweb: bytes | None  # the MWEB block, appended after 01 once MWEB is active
    witness: bool  # the coinbase carries a witness commitment

    @property
    def network_target(self) -> int:
        return nbits_to_target(self.nbits)

    @property
    def prevhash_display(self) -> str:
        return self.prevhash[::-1].hex()

    def block(self, header80: bytes, coinbase: bytes) -> bytes:
        if len(header80) != 80:
            raise ValueError(f"header must be 80 bytes, got {len(header80)}")
        cb = coinbase_witness_form(coinbase) if self.witness else coinbase
        out = header80 + varint(1 + len(self.tx_data)) + cb + b"".join(self.tx_data)
        if self.mweb is not None:
            out += b"\x01" + self.mweb
        return out


def _field(tpl: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in tpl:
        raise TemplateError(f"getblocktemplate answer has no {name!r}")
    value = tpl[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TemplateError(f"getblocktemplate {name!r} has the wrong type: {value!r:.80}")
    return value


def _hex(value: Any, name: str, size: int | None = None) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except (TypeError, ValueError):
        raise TemplateError(f"getblocktemplate {name} is not hex: {value!r:.80}") from None
    if size is not None and len(raw) != size:
        raise TemplateError(f"getblocktemplate {name} must be {size} bytes, got {len(raw)}")
    return raw


def from_gbt(
    tpl: Mapping[str, Any],
    *,
    payout_script: bytes,
    extranonce_size: int,
    tag: bytes = POOL_TAG,
    version: int | None = None,
) -> Template:
    """A Template from a litecoind getblocktemplate answer (rules segwit + mweb)."""
    txs = _field(tpl, "transactions", list)
    txids: list[bytes] = []
    data: list[bytes] = []
    for i, tx in enumerate(txs):
        if not isinstance(tx, dict):
            raise TemplateError(f"getblocktemplate transactions[{i}] is not an object")
        data.append(_hex(tx.get("data"), f"transactions[{i}].data"))
        txids.append(_hex(tx.get("txid"), f"transactions[{i}].txid", 32)[::-1])
    commitment = tpl.get("default_witness_commitment")
    commitment_script = None if commitment is None else _hex(commitment, "witness commitment")
    mweb = tpl.get("mweb")
    height = _field(tpl, "height", int)
    try:
        coinb1, coinb2 = coinbase_parts(
            height=height,
            value=_field(tpl, "coinbasevalue", int),
            payout_script=payout_script,
            witness_commitment=commitment_script,
            extranonce_size=extranonce_size,
            tag=tag,
        )
    except TemplateError:
        raise
    except ValueError as e:  # a negative or huge height or coinbasevalue
        raise TemplateError(f"getblocktemplate height/coinbasevalue: {e}") from None
    try:
        prevhash = prevhash_from_display(_field(tpl, "previousblockhash", str))
        nbits = int(_field(tpl, "bits", str), 16)
    except ValueError as e:
        raise TemplateError(f"getblocktemplate previousblockhash/bits: {e}") from None
    return Template(
        height=height,
        version=_field(tpl, "version", int) if version is None else version,
        prevhash=prevhash,
        nbits=nbits,
        ntime=max(_field(tpl, "curtime", int), _field(tpl, "mintime", int)),
        mintime=_field(tpl, "mintime", int),
        coinb1=coinb1,
        coinb2=coinb2,
        branch=tuple(merkle_branch(txids)),
        tx_data=tuple(data),
        mweb=None if mweb is None else _hex(mweb, "mweb"),
        witness=commitment_script is not None,
    )


def random_template(
    *, nbits: int, extranonce_size: int, ntime: int, height: int = 1000, n_txs: int = 3
) -> Template:
    """A plausible template on a random prevhash, for the pool's random-job mode."""
    coinb1, coinb2 = coinbase_parts(
        height=height,
        value=50 * 10**8,
        payout_script=OP_TRUE_SCRIPT,
        witness_commitment=None,
        extranonce_size=extranonce_size,
    )
    txids = [os.urandom(32) for _ in range(n_txs)]
    return Template(
        height=height,
        version=0x20000000,
        prevhash=os.urandom(32),
        nbits=nbits,
        ntime=ntime,
        mintime=ntime,
        coinb1=coinb1,
        coinb2=coinb2,
        branch=tuple(merkle_branch(txids)),
        tx_data=(),
        mweb=None,
        witness=False,
    )
