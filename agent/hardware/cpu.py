"""The CPU board (board.kind = "cpu"): the C scrypt core hashing directly, no chips.

N threads call agent.scrypt.scan (which releases the GIL) on chunks of nonces handed out by one
shared cursor, so no two threads ever hash the same nonce of a work. Results travel to the event
loop with call_soon_threadsafe; the loop drops any nonce whose work was retired by clean work, so
once set_work(clean=True) returns no nonce of older work is reported. Like a chain of chips, it
reports only nonces meeting the ticket difficulty, as Nonce(chain=0, chip=thread index, ...).

Call set_work(), start() and stop() from the event loop's thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agent import defaults as D
from agent import scrypt
from agent.mining.targets import difficulty_to_target

log = logging.getLogger(__name__)

# Non-clean work keeps older work valid for a while (a pool still takes its shares).
LIVE_WORKS = 16


@dataclass(frozen=True)
class Work:
    """What to hash: 76 header bytes (the nonce is appended), a unique id, the share target.

    `target` is the pool's share target, kept for the share checker; the board itself reports
    every nonce meeting its ticket target. nonce_start..nonce_end bounds the nonce space
    (the whole 2**32 by default; tests and split work use less)."""

    work_id: int
    header76: bytes
    target: int
    clean: bool = False
    nonce_start: int = 0
    nonce_end: int = D.NONCE_SPACE

    def __post_init__(self) -> None:
        if len(self.header76) != 76:
            raise ValueError(f"header76 must be 76 bytes, got {len(self.header76)}")
        if not 0 <= self.nonce_start < self.nonce_end <= D.NONCE_SPACE:
            raise ValueError(
                f"nonce range must satisfy 0 <= start < end <= 2**32, "
                f"got {self.nonce_start}..{self.nonce_end}"
            )


@dataclass(frozen=True)
class Nonce:
    """A nonce from the hashing side, as a chain of chips reports it. header80 is the header
    raw_hash was computed over, when the side that hashed it says: the share path then needs no
    second hash to know the hash is that of the share it submits."""

    chain: int
    chip: int
    work_id: int
    nonce: int
    raw_hash: bytes
    header80: bytes | None = None


def synthetic_work(work_id: int, clean: bool = True, target: int | None = None) -> Work:
    """Random 76-byte work for the demo and for running without a pool."""
    return Work(
        work_id=work_id,
        header76=os.urandom(76),
        target=difficulty_to_target(1) if target is None else target,
        clean=clean,
    )


class CpuBoard:
    def __init__(
        self,
        threads: int = D.CPU_THREADS,
        ticket_difficulty: float = D.TICKET_DIFFICULTY,
        on_nonce: Callable[[Nonce], None] | None = None,
        *,
        on_exhausted: Callable[[Work], None] | None = None,
        on_hashes: Callable[[int, int], None] | None = None,
        chunk_nonces: int = D.CPU_CHUNK_NONCES,
        chain: int = 0,
    ) -> None:
        """on_nonce(Nonce), on_exhausted(Work) and on_hashes(chip, count) run on the event loop."""
        if not 1 <= threads <= D.MAX_CPU_THREADS:
            raise ValueError(f"threads must be in 1..{D.MAX_CPU_THREADS}, got {threads}")
        if not 1 <= chunk_nonces <= 1 << 20:
            raise ValueError(f"chunk_nonces must be in 1..2**20, got {chunk_nonces}")
        self.threads = threads
        self.ticket_difficulty = ticket_difficulty
        self.ticket_target = difficulty_to_target(ticket_difficulty)
        self.chain = chain
        self.chunk_nonces = chunk_nonces
        self._on_nonce = on_nonce
        self._on_exhausted = on_exhausted
        self._on_hashes = on_hashes
        self._cond = threading.Condition()
        self._work: Work | None = None
        self._cursor = 0  # next nonce of _work to hand out
        self._busy = 0  # threads still hashing a chunk of _work (for "exhausted")
        self._live: deque[int] = deque(maxlen=LIVE_WORKS)  # read and written on the loop only
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Future[None]] = []
        self.hashes = [0] * threads  # per thread; each thread writes only its own slot
        self.nonces_found = 0

    # ------------------------------------------------------------------ control (event loop)

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not self._stopping

    @property
    def work(self) -> Work | None:
        return self._work

    async def start(self) -> None:
        if self._tasks:
            raise RuntimeError("CpuBoard already started")
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        # Own threads rather than the loop's default executor: they live as long as the board.
        for i in range(self.threads):
            fut: asyncio.Future[None] = self._loop.create_future()
            t = threading.Thread(
                target=self._thread_main, args=(i, fut), name=f"cpu-board-{i}", daemon=True
            )
            self._tasks.append(fut)
            t.start()
        log.info(
            "CPU board: %d thread(s), backend %s, ticket difficulty %g",
            self.threads, scrypt.backend(), self.ticket_difficulty,
        )  # fmt: skip

    async def stop(self) -> None:
        """Stop after each thread's current chunk (a few ms); re-raises a thread's failure."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        tasks, self._tasks = self._tasks, []
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def wait(self) -> None:
        """Return when the board stops; raise at once if a thread fails (for a supervisor)."""
        tasks = list(self._tasks)
        if not tasks:
            return
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for fut in done:
            error = fut.exception()
            if error is not None:
                raise error

    def set_work(self, work: Work) -> None:
        """Hash `work` from now on, on every thread. Clean work retires all older work at once."""
        # an id may come back once its work has left the live window (ids are a bounded table),
        # but never while nonces of its old work could still be reported under it
        if work.work_id in self._live:
            raise ValueError(f"work_id {work.work_id} is still live on this board")
        with self._cond:
            self._work = work
            self._cursor = work.nonce_start
            self._busy = 0
            self._cond.notify_all()
        if work.clean:
            self._live.clear()
        self._live.append(work.work_id)

    def hashes_done(self) -> int:
        return sum(self.hashes)

    # ------------------------------------------------------------------ the threads

    def _next_chunk(self, held: Work | None) -> tuple[Work, int, int] | None:
        """The next (work, start, count) to hash, waiting for work; None when stopping."""
        with self._cond:
            if held is not None and held is self._work:
                self._busy -= 1
                if self._cursor >= held.nonce_end and self._busy == 0:
                    self._post(self._exhausted, held)
            while not self._stopping:
                work = self._work
                if work is not None and self._cursor < work.nonce_end:
                    start = self._cursor
                    count = min(self.chunk_nonces, work.nonce_end - start)
                    self._cursor += count
                    self._busy += 1
                    return work, start, count
                self._cond.wait()
            return None

    def _thread_main(self, index: int, fut: asyncio.Future[None]) -> None:
        error: BaseException | None = None
        try:
            held: Work | None = None
            while (chunk := self._next_chunk(held)) is not None:
                work, start, count = chunk
                held = work
                header80 = work.header76 + b"\0\0\0\0"
                found = scrypt.scan(header80, start, count, self.ticket_target)
                self.hashes[index] += count
                self._post(self._report, index, work, count, found)
        except BaseException as e:  # surfaced by stop(); the board cannot go on without it
            log.exception("CPU board thread %d failed", index)
            error = e
        self._post(self._finish, fut, error)

    def _post(self, fn: Callable[..., None], *args: object) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # The loop may close between the check and the call; then nobody is listening.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)

    # ------------------------------------------------------------------ back on the loop

    def _report(self, index: int, work: Work, count: int, found: list[tuple[int, bytes]]) -> None:
        if self._on_hashes is not None:
            self._on_hashes(index, count)
        if work.work_id not in self._live:
            return  # retired by clean work while this chunk was hashing
        for nonce, raw_hash in found:
            self.nonces_found += 1
            if self._on_nonce is not None:
                self._on_nonce(Nonce(self.chain, index, work.work_id, nonce, raw_hash,
                                    work.header76 + nonce.to_bytes(4, "little")))

    def _exhausted(self, work: Work) -> None:
        log.info("work %d: nonce space exhausted; waiting for new work", work.work_id)
        if self._on_exhausted is not None:
            self._on_exhausted(work)

    @staticmethod
    def _finish(fut: asyncio.Future[None], error: BaseException | None) -> None:
        if fut.done():
            return
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)
