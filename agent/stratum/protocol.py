"""Stratum V1 messages: parsing and validation of what pools send, encoding of what we send.

Pure: no sockets. Everything from the pool is checked here; a bad message raises ProtocolError
naming what was wrong."""

from __future__ import annotations

from dataclasses import dataclass


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
