"""The share path: every nonce from the hashing side is counted once, classified, and, when it is
a share, verified and submitted to the pool that issued its job.

    nonce -> State.record_nonce (pending) -> WorkSource.resolve
        Stale                    -> stale (below_target if its hash missed its job's target)
        hash above share target  -> below_target
        share or block           -> the hash is that of the share's header: the hashing side
                                    says it hashed the same 80 bytes (a block, or a side that
                                    does not say, is hashed again off the loop) -> else hw_errors
                                 -> PoolManager.submit -> accepted | rejected | stale (or lost)

A nonce leaves `pending` exactly once, so nonces = accepted + rejected + stale + below_target +
hw_errors + pending holds at every moment."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from agent import scrypt
from agent.hardware.cpu import Nonce
from agent.mining.work import ShareCandidate, Stale, WorkSource
from agent.state import State
from agent.stratum.client import Job as PoolJob
from agent.stratum.pools import ShareResult

log = logging.getLogger(__name__)

MAX_JOBS = 1024  # pool jobs remembered for submitting; far more than any live work can refer to

Submit = Callable[[PoolJob, bytes, int, int], Awaitable[ShareResult]]


def work_pool_id(job: PoolJob) -> str:
    """The pool id WorkSource keys work by: one per connection, since a job id is only valid on
    the session that issued it."""
    return f"{job.pool}@{job.connection}"


class SharePath:
    """Owner: the mining service. note_job() for every pool job before its work is dispatched,
    on_nonce() for every nonce, drain() at shutdown."""

    def __init__(
        self,
        work: WorkSource,
        state: State,
        ticket_difficulty: float,
        submit: Submit | None,
        *,
        verify: Callable[[bytes], bytes] = scrypt.pow_hash,
    ) -> None:
        self.work = work
        self.state = state
        self.ticket_difficulty = ticket_difficulty
        self._submit = submit
        self._verify = verify
        self._jobs: OrderedDict[tuple[str, str], PoolJob] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self.counts: Counter[str] = Counter()  # outcome -> nonces, plus blocks and lost

    def note_job(self, job: PoolJob) -> str:
        """Remember a pool job so its shares can be submitted; returns its work pool id."""
        key = (work_pool_id(job), job.notify.job_id)
        self._jobs[key] = job
        self._jobs.move_to_end(key)
        while len(self._jobs) > MAX_JOBS:
            self._jobs.popitem(last=False)
        return key[0]

    def on_nonce(self, found: Nonce) -> None:
        """Called on the event loop for every nonce the hashing side reports."""
        self.state.record_nonce(found.chain, self.ticket_difficulty)
        try:
            res = self.work.resolve(found.work_id, found.nonce)
        except ValueError as exc:  # a nonce the hashing side should never have produced
            log.warning("chain %d chip %d: bad nonce dropped: %s", found.chain, found.chip, exc)
            self._final("hw_errors", found.chain)
            return
        if isinstance(res, Stale):
            if res.share_target is not None and not scrypt.hash_meets(found.raw_hash,
                                                                       res.share_target):
                # no share even when its job was live: nothing was lost (a lazily verified
                # nonce may come back after a clean job retired the work it was found on)
                self._final("below_target", found.chain)
                return
            log.debug("stale nonce %08x for work %d: %s", found.nonce, found.work_id, res.reason)
            self._final("stale", found.chain)
            return
        kind = res.classify(found.raw_hash)
        if kind == "below_target":
            self._final("below_target", found.chain)
            return
        task = asyncio.create_task(self._share(found, res, kind == "block"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout_s: float) -> int:
        """Wait for shares in flight (verification and the pool's answer); returns how many were
        still unanswered at the timeout. Those stay pending: nothing is miscounted."""
        if not self._tasks:
            return 0
        _, waiting = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        return len(waiting)

    async def _share(self, found: Nonce, cand: ShareCandidate, block: bool) -> None:
        try:
            if found.header80 is not None and found.header80 != cand.header80:
                digest = None  # the chip's work and the pool's job disagree: not this share
            elif found.header80 is None or block:  # a block is worth a second look
                loop = asyncio.get_running_loop()
                digest = await loop.run_in_executor(None, self._verify, cand.header80)
            else:
                digest = found.raw_hash  # hashed over these very 80 bytes by the chain
            if digest != found.raw_hash:
                why = ("its chain hashed a header other than its job's" if digest is None
                       else "its hash differs from the chain's")  # fmt: skip
                log.warning(
                    "chain %d chip %d: nonce %08x does not verify (work %d, %s): counted as HW "
                    "error", found.chain, found.chip, found.nonce, found.work_id, why,
                )  # fmt: skip
                self._final("hw_errors", found.chain)
                return
            if block:
                self.counts["blocks"] += 1
                log.info("block candidate: nonce %08x of job %s", cand.nonce, cand.job_id)
            job = self._jobs.get((cand.pool_id, cand.job_id))
            if job is None or self._submit is None:
                why = "no pool client" if self._submit is None else "its pool job is forgotten"
                log.warning("share %08x not submitted: %s; counted stale", cand.nonce, why)
                self._final("stale", found.chain)
                return
            result = await self._submit(job, cand.extranonce2, cand.ntime, cand.nonce)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never lose the nonce's accounting to a bug downstream
            log.exception("share %08x failed unexpectedly: %s; counted rejected", found.nonce, exc)
            self._final("rejected", found.chain)
            return
        outcome = result.outcome
        if outcome == "lost":
            self.counts["lost"] += 1
            outcome = "stale"  # the job died with its pool: the same loss as a stale share
        self._final(outcome, found.chain, pool=result.pool)
        if outcome == "accepted" and self.counts["accepted"] == 1:
            log.info("first share accepted by %s", result.pool)
        elif result.outcome != "accepted":
            log.info("share %08x %s by %s: %s", cand.nonce, result.outcome, result.pool,
                     result.reason)  # fmt: skip

    def _final(self, outcome: str, chain: int, pool: str | None = None) -> None:
        self.counts[outcome] += 1
        self.state.resolve(outcome, pool=pool, chain=chain)

    def stats(self) -> dict[str, Any]:
        return {"in_flight": len(self._tasks), **self.counts}
