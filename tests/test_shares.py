"""agent.mining.shares: a share is submitted on the chain's own hash when the chain says which 80
bytes it hashed; hashed again when it does not say, or for a block; a header or hash that does not
match its job is a HW error, never submitted. Every nonce is counted once."""

from __future__ import annotations

import asyncio

from agent import scrypt
from agent.hardware.cpu import Nonce
from agent.mining.shares import SharePath, work_pool_id
from agent.mining.work import WorkSource
from agent.state import State
from agent.stratum.client import Job as PoolJob
from agent.stratum.pools import ShareResult
from agent.stratum.protocol import Notify

EASY = 2**-16  # nearly every hash is a share
NO_BLOCK = 0x1D00FFFF  # a network target no test hash meets
ANY_BLOCK = 0x207FFFFF  # regtest's: every share is a block candidate


class Rig:
    def __init__(self, nbits: int = NO_BLOCK) -> None:
        self.work = WorkSource(id_space=128, works_per_job=1)
        self.state = State()
        self.hashed: list[bytes] = []
        self.submitted: list[int] = []
        self.shares = SharePath(self.work, self.state, 1.0, self._submit, verify=self._verify)
        notify = Notify(job_id="j1", prevhash=bytes(range(32)), coinb1=b"\x01\x00",
                        coinb2=b"\xff\xff", merkle_branch=(), version=0x20000000, nbits=nbits,
                        ntime=1_700_000_000, clean_jobs=True)  # fmt: skip
        job = PoolJob(notify, EASY, b"\xaa\xbb", 4, "pool", 1)
        pool_id = self.shares.note_job(job)
        assert pool_id == work_pool_id(job)
        [self.w] = self.work.on_job(pool_id, notify, EASY, b"\xaa\xbb", 4)
        target = min(self.w.target, 2**254)  # under regtest's network target too
        found = scrypt.scan(self.w.header76 + bytes(4), 0, 256, target)
        assert found, "difficulty 2**-16: nearly every hash is a share"
        self.nonce, self.raw = found[0]
        self.header80 = self.w.header76 + self.nonce.to_bytes(4, "little")

    def _verify(self, header80: bytes) -> bytes:
        self.hashed.append(header80)
        return scrypt.pow_hash(header80)

    async def _submit(self, job: PoolJob, e2: bytes, ntime: int, nonce: int) -> ShareResult:
        self.submitted.append(nonce)
        return ShareResult("accepted", job.pool)

    def found(self, *, header80: bytes | None = None, raw: bytes | None = None) -> Nonce:
        return Nonce(0, 3, self.w.work_id, self.nonce, raw or self.raw, header80)

    def settle(self, found: Nonce) -> dict[str, int]:
        async def main() -> None:
            self.shares.on_nonce(found)
            assert await self.shares.drain(10.0) == 0

        asyncio.run(main())
        b = self.state.snapshot()["shares"]
        assert self.state.nonces == 1 and b["pending"] == 0  # counted once, settled
        return b


def test_a_share_hashed_over_its_own_header_is_submitted_without_a_second_hash() -> None:
    rig = Rig()
    b = rig.settle(rig.found(header80=rig.header80))
    assert rig.submitted == [rig.nonce] and rig.hashed == []
    assert b["accepted"] == 1 and b["hw_errors"] == 0


def test_a_nonce_without_its_header_is_hashed_again_before_it_is_submitted() -> None:
    rig = Rig()
    b = rig.settle(rig.found())
    assert rig.hashed == [rig.header80] and rig.submitted == [rig.nonce]
    assert b["accepted"] == 1


def test_a_block_candidate_is_hashed_again_even_with_its_header() -> None:
    rig = Rig(ANY_BLOCK)
    b = rig.settle(rig.found(header80=rig.header80))
    assert rig.hashed == [rig.header80] and rig.submitted == [rig.nonce]
    assert b["accepted"] == 1 and rig.shares.counts["blocks"] == 1


def test_a_chain_that_hashed_other_bytes_than_the_job_is_a_hw_error_never_submitted() -> None:
    rig = Rig()
    other = bytes([rig.header80[0] ^ 1]) + rig.header80[1:]
    b = rig.settle(rig.found(header80=other))
    assert rig.submitted == [] and rig.hashed == []
    assert b["hw_errors"] == 1 and b["accepted"] == 0


def test_a_hash_that_is_not_the_headers_is_a_hw_error_never_submitted() -> None:
    rig = Rig()
    b = rig.settle(rig.found(raw=bytes(32)))  # meets every target; not this header's hash
    assert rig.hashed == [rig.header80] and rig.submitted == []
    assert b["hw_errors"] == 1


def test_a_nonce_back_after_its_job_died_is_stale_only_if_it_was_a_share() -> None:
    """Nonces that are no share are verified lazily and may come back after a clean job: below
    the pool's target either way, nothing was lost. A share of a dead job is stale."""
    rig = Rig()
    rig.work.retire(reason="clean_jobs")
    share = rig.settle(rig.found(header80=rig.header80))
    assert share["stale"] == 1 and rig.submitted == []

    rig = Rig()
    rig.work.retire(reason="clean_jobs")
    miss = rig.settle(rig.found(header80=rig.header80, raw=b"\xff" * 32))  # over every target
    assert miss["below_target"] == 1 and miss["stale"] == 0
