"""Jobs -> pieces of work for the hashing side, and nonces back -> share candidates.

Three guarantees:
* No two pieces of work overlap: no header is handed out twice. The allocator keeps one
  extranonce2 counter per coinbase layout (coinb1 || extranonce1, coinb2, extranonce2 size),
  which survives job-id changes, resends of the same job, pool switches and extranonce changes.
  A counter alone is not enough: two layouts can spell the same coinbase (set_extranonce moving
  a byte from extranonce2 into extranonce1 does exactly that), so every header handed out is
  also remembered, per prevhash (the last few), and a value whose header was already used is
  skipped. When a layout has used up its extranonce2 space the job is exhausted and no more
  work is made for it.
* Work ids are a bounded table (a chip's 7-bit id field: 128 slots; the CPU board can use more).
  Ids are handed out round-robin, so a retired id is reused as late as possible, and never while
  its work is still live: when every slot is live the oldest work is evicted first.
* clean_jobs retires every older work at once; a nonce for retired work resolves to Stale and
  is never submitted.

Pure state machine: no I/O, the clock is injected."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from agent import defaults as D
from agent.hardware.cpu import Work
from agent.mining.job import MAX_NTIME_ROLL_S, Job, hex_u32, sha256d, with_nonce
from agent.stratum.protocol import Notify

log = logging.getLogger(__name__)

CHIP_WORK_IDS = D.CHIP_WORK_IDS  # BM1485 work id field is 7 bits
MAX_LAYOUTS = 4096  # remembered coinbase layouts (one per job, roughly); oldest forgotten first
# Headers remembered per prevhash, for the last few prevhashes: a block's worth of work is far
# below this (65536 works is 2**48 hashes); headers under different prevhashes can't collide.
MAX_SEEN_PER_PREVHASH = 1 << 16
SEEN_PREVHASHES = 4
MAX_SKIPS = 1024  # consecutive already-used extranonce2 values before calling the job exhausted


@dataclass(frozen=True)
class WorkEntry:
    """What a work id stands for: enough to rebuild the header and the submit params."""

    work_id: int
    job: Job
    extranonce2: bytes
    ntime: int
    header76: bytes
    serial: int  # allocation order, for eviction and debugging

    @property
    def share_target(self) -> int:
        return self.job.share_target


@dataclass(frozen=True)
class ShareCandidate:
    """A nonce resolved to its work: header to verify, parameters to submit."""

    work_id: int
    pool_id: str
    job_id: str
    extranonce2: bytes
    ntime: int
    nonce: int
    header80: bytes
    share_target: int
    network_target: int
    difficulty: float

    def submit_params(self, worker: str) -> list[str]:
        """[worker, job_id, extranonce2_hex, ntime_hex, nonce_hex] for mining.submit."""
        return [
            worker,
            self.job_id,
            self.extranonce2.hex(),
            hex_u32(self.ntime),
            hex_u32(self.nonce),
        ]

    def classify(self, raw_hash: bytes) -> str:
        """'block', 'share' or 'below_target' for the nonce's raw scrypt hash (little-endian)."""
        value = int.from_bytes(raw_hash, "little")
        if value <= self.network_target and value <= self.share_target:
            return "block"
        if value <= self.share_target:
            return "share"
        return "below_target"


@dataclass(frozen=True)
class Stale:
    """A nonce for work that is no longer valid (retired by clean_jobs, evicted, or unknown)."""

    work_id: int
    nonce: int
    reason: str
    pool_id: str | None = None
    job_id: str | None = None
    share_target: int | None = None  # its job's, when known: a nonce above it was no share


def _retired(reason: str, entry: WorkEntry) -> tuple[str, str, str, int]:
    return reason, entry.job.pool_id, entry.job.notify.job_id, entry.job.share_target


class WorkSource:
    """Hands out work for the current job and resolves nonces back to share candidates.

    The mining service calls on_job() for every notify (with the difficulty latched for it and
    the extranonce values in force), next_work() when the hashing side wants more, and
    resolve() for every nonce. Not thread-safe: call it from the event loop."""

    def __init__(
        self,
        *,
        id_space: int = CHIP_WORK_IDS,
        works_per_job: int = 1,
        ntime_roll_s: int = D.NTIME_ROLL_S,
        nonce_start: int = 0,
        nonce_end: int = D.NONCE_SPACE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 2 <= id_space <= 1 << 32:
            raise ValueError(f"id_space must be in 2..2**32, got {id_space}")
        if not 1 <= works_per_job <= id_space // 2:
            raise ValueError(f"works_per_job must be in 1..id_space/2, got {works_per_job}")
        if not 0 <= ntime_roll_s <= MAX_NTIME_ROLL_S:
            raise ValueError(f"ntime_roll_s must be in 0..{MAX_NTIME_ROLL_S}, got {ntime_roll_s}")
        if not 0 <= nonce_start < nonce_end <= D.NONCE_SPACE:
            raise ValueError(f"nonce range must be within 0..2**32, got {nonce_start}..{nonce_end}")
        self.id_space = id_space
        self.works_per_job = works_per_job
        self.ntime_roll_s = ntime_roll_s
        self.nonce_start = nonce_start
        self.nonce_end = nonce_end
        self._clock = clock
        self._live: OrderedDict[int, WorkEntry] = OrderedDict()  # oldest first
        # id -> (reason, pool id, job id) until reuse: only what a late nonce's Stale names, so a
        # retired id does not keep its header and pool job alive (up to id_space of them)
        self._retired: dict[int, tuple[str, str, str, int]] = {}
        self._next_id = 0
        self._serial = 0
        self._layouts: OrderedDict[tuple[bytes, bytes, int], int] = OrderedDict()
        self._seen: OrderedDict[bytes, OrderedDict[bytes, None]] = OrderedDict()
        self._job: Job | None = None
        self._job_received = 0.0
        self.exhausted_jobs = 0
        self.evicted = 0

    # ----------------------------------------------------------------------------- jobs

    @property
    def current_job(self) -> Job | None:
        return self._job

    @property
    def live_ids(self) -> list[int]:
        return list(self._live)

    def on_job(
        self,
        pool_id: str,
        notify: Notify,
        difficulty: float,
        extranonce1: bytes,
        extranonce2_size: int,
    ) -> list[Work]:
        """A new notify: make it the current job and return the work to dispatch.

        With clean_jobs every older work is retired first, and the returned work carries
        clean=True so the hashing side drops what it was doing."""
        job = Job(pool_id, notify, difficulty, bytes(extranonce1), extranonce2_size)
        if notify.clean_jobs:
            self.retire(reason="clean_jobs")
        self._job = job
        self._job_received = self._clock()
        works: list[Work] = []
        for i in range(self.works_per_job):
            w = self._make_work(clean=notify.clean_jobs and i == 0)
            if w is None:
                break
            works.append(w)
        return works

    def next_work(self) -> Work | None:
        """Fresh work (a new extranonce2) for the current job; None with no job or exhausted."""
        return self._make_work(clean=False)

    def retire(self, *, pool_id: str | None = None, reason: str = "retired") -> int:
        """Retire every live work (or only one pool's); returns how many were retired."""
        ids = [i for i, e in self._live.items() if pool_id is None or e.job.pool_id == pool_id]
        for i in ids:
            self._retired[i] = _retired(reason, self._live.pop(i))
        if self._job is not None and (pool_id is None or self._job.pool_id == pool_id):
            self._job = None  # no more work for it until the next notify
        return len(ids)

    # ---------------------------------------------------------------------------- nonces

    def resolve(self, work_id: int, nonce: int) -> ShareCandidate | Stale:
        """Turn a nonce from the hashing side back into a share candidate, or Stale."""
        entry = self._live.get(work_id)
        if entry is None:
            retired = self._retired.get(work_id)
            if retired is None:
                return Stale(work_id, nonce, "unknown work id")
            return Stale(work_id, nonce, *retired)
        if isinstance(nonce, bool) or not isinstance(nonce, int) or not 0 <= nonce < 1 << 32:
            raise ValueError(f"nonce must be a 32-bit unsigned int, got {nonce!r}")
        job = entry.job
        return ShareCandidate(
            work_id=work_id,
            pool_id=job.pool_id,
            job_id=job.notify.job_id,
            extranonce2=entry.extranonce2,
            ntime=entry.ntime,
            nonce=nonce,
            header80=with_nonce(entry.header76, nonce),
            share_target=job.share_target,
            network_target=job.network_target,
            difficulty=job.difficulty,
        )

    def entry(self, work_id: int) -> WorkEntry | None:
        return self._live.get(work_id)

    # -------------------------------------------------------------------------- internals

    def _ntime(self, job: Job) -> int:
        """The job's ntime, or rolled forward with the wall clock up to ntime_roll_s."""
        if not self.ntime_roll_s:
            return job.notify.ntime
        elapsed = max(0, int(self._clock() - self._job_received))
        return min(job.notify.ntime + min(elapsed, self.ntime_roll_s), 0xFFFFFFFF)

    def _allocate_extranonce2(self, job: Job) -> bytes | None:
        key = (job.notify.coinb1 + job.extranonce1, job.notify.coinb2, job.extranonce2_size)
        counter = self._layouts.pop(key, 0)
        if counter >= 1 << (8 * job.extranonce2_size):
            self._layouts[key] = counter
            return None
        self._layouts[key] = counter + 1  # most recently used last
        while len(self._layouts) > MAX_LAYOUTS:
            self._layouts.popitem(last=False)
        return counter.to_bytes(job.extranonce2_size, "little")

    def _allocate_id(self) -> int:
        if len(self._live) >= self.id_space:
            oldest_id, oldest = self._live.popitem(last=False)
            self._retired[oldest_id] = _retired("evicted", oldest)
            self.evicted += 1
        # Round-robin from the last id handed out: a freed id comes round again last.
        for _ in range(self.id_space):
            candidate = self._next_id
            self._next_id = (self._next_id + 1) % self.id_space
            if candidate not in self._live:
                self._retired.pop(candidate, None)
                return candidate
        raise AssertionError("no free work id although one was just freed")  # pragma: no cover

    def _make_work(self, *, clean: bool) -> Work | None:
        job = self._job
        if job is None:
            return None
        ntime = self._ntime(job)
        seen = self._seen.pop(job.notify.prevhash, None)
        if seen is None:
            seen = OrderedDict()
        self._seen[job.notify.prevhash] = seen  # most recent last
        while len(self._seen) > SEEN_PREVHASHES:
            self._seen.popitem(last=False)
        header76 = b""
        en2: bytes | None = None
        for _ in range(MAX_SKIPS):
            en2 = self._allocate_extranonce2(job)
            if en2 is None:
                break
            header76 = job.header76(en2, ntime)
            digest = sha256d(header76)[:16]
            if digest not in seen:
                seen[digest] = None
                if len(seen) > MAX_SEEN_PER_PREVHASH:
                    seen.popitem(last=False)
                break
            en2 = None
        if en2 is None:
            self.exhausted_jobs += 1
            log.warning(
                "job %s of pool %s: extranonce2 space (%d bytes) used up; waiting for a new job",
                job.notify.job_id, job.pool_id, job.extranonce2_size,
            )  # fmt: skip
            self._job = None
            return None
        work_id = self._allocate_id()
        self._serial += 1
        self._live[work_id] = WorkEntry(work_id, job, en2, ntime, header76, self._serial)
        return Work(
            work_id=work_id,
            header76=header76,
            target=job.share_target,
            clean=clean,
            nonce_start=self.nonce_start,
            nonce_end=self.nonce_end,
        )
