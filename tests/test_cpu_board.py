"""The CPU board: correct nonces, every nonce hashed once, clean work, exhaustion, prompt stop."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from agent import scrypt
from agent.hardware import cpu
from agent.hardware.cpu import CpuBoard, Nonce, Work
from agent.mining.targets import difficulty_to_target

EASIEST = 2.0**-16  # nearly every hash meets it: every nonce hashed is reported
WAIT_S = 20.0


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def work(work_id: int, end: int = 1 << 32, clean: bool = True, start: int = 0) -> Work:
    return Work(work_id, os.urandom(76), difficulty_to_target(1), clean, start, end)


class Recorder:
    """Collects what the board reports, with events to await instead of sleeping."""

    def __init__(self) -> None:
        self.nonces: list[Nonce] = []
        self.hashes = 0
        self.exhausted: asyncio.Queue[Work] = asyncio.Queue()
        self.got_nonce = asyncio.Event()
        self.got_hashes = asyncio.Event()

    def on_nonce(self, n: Nonce) -> None:
        self.nonces.append(n)
        self.got_nonce.set()

    def on_hashes(self, chip: int, count: int) -> None:
        self.hashes += count
        self.got_hashes.set()

    def board(self, threads: int, difficulty: float, chunk: int = 64) -> CpuBoard:
        return CpuBoard(
            threads,
            difficulty,
            self.on_nonce,
            on_exhausted=self.exhausted.put_nowait,
            on_hashes=self.on_hashes,
            chunk_nonces=chunk,
        )


def test_finds_exactly_the_nonces_meeting_the_ticket_target() -> None:
    async def main() -> None:
        rec = Recorder()
        board = rec.board(threads=2, difficulty=1 / 1024, chunk=64)
        await board.start()
        w = work(7, end=3000)
        board.set_work(w)
        assert (await asyncio.wait_for(rec.exhausted.get(), WAIT_S)) is w
        await board.stop()

        header80 = w.header76 + bytes(4)
        expected = {n for n, _ in scrypt.scan(header80, 0, 3000, board.ticket_target)}
        assert expected, "1/1024 over 3000 nonces should find some (about 47)"
        assert {n.nonce for n in rec.nonces} == expected
        for n in rec.nonces:
            raw = scrypt.pow_hash(w.header76 + n.nonce.to_bytes(4, "little"))
            assert raw == n.raw_hash
            assert int.from_bytes(raw, "little") <= board.ticket_target
            assert (n.chain, n.work_id) == (0, 7) and n.chip in (0, 1)

    run(main())


def test_threads_never_hash_the_same_nonce_twice() -> None:
    async def main() -> None:
        rec = Recorder()
        board = rec.board(threads=4, difficulty=EASIEST, chunk=16)
        await board.start()
        w = work(1, start=1000, end=1000 + 2048)
        board.set_work(w)
        await asyncio.wait_for(rec.exhausted.get(), WAIT_S)
        await board.stop()
        keys = [(n.work_id, n.nonce) for n in rec.nonces]
        assert len(keys) == len(set(keys)), "a nonce was reported twice"
        assert rec.hashes == 2048 == board.hashes_done(), "every nonce hashed exactly once"
        assert {n for _, n in keys} <= set(range(1000, 3048))
        assert len({n.chip for n in rec.nonces}) > 1, "the work was shared between threads"

    run(main())


def test_clean_work_retires_old_work_at_once() -> None:
    async def main() -> None:
        rec = Recorder()
        # Big chunks and the easiest ticket: chunks of the old work are surely in flight.
        board = rec.board(threads=2, difficulty=EASIEST, chunk=256)
        await board.start()
        board.set_work(work(1))
        await asyncio.wait_for(rec.got_nonce.wait(), WAIT_S)
        board.set_work(work(2, clean=True))
        seen_at_switch = len(rec.nonces)
        rec.got_nonce.clear()
        while not any(n.work_id == 2 for n in rec.nonces[seen_at_switch:]):
            await asyncio.wait_for(rec.got_nonce.wait(), WAIT_S)
            rec.got_nonce.clear()
        hashes_at_new = rec.hashes
        await board.stop()
        after = rec.nonces[seen_at_switch:]
        assert [n for n in after if n.work_id == 1] == []
        assert hashes_at_new > 0

    run(main())


def test_non_clean_work_keeps_old_nonces_valid() -> None:
    async def main() -> None:
        rec = Recorder()
        board = rec.board(threads=1, difficulty=EASIEST, chunk=32)
        await board.start()
        w1 = work(1, end=64)
        board.set_work(w1)
        await asyncio.wait_for(rec.exhausted.get(), WAIT_S)
        board.set_work(work(2, end=64, clean=False))
        await asyncio.wait_for(rec.exhausted.get(), WAIT_S)
        await board.stop()
        assert {n.work_id for n in rec.nonces} == {1, 2}
        with pytest.raises(ValueError, match="still live"):
            board.set_work(w1)
        board.set_work(work(3, end=64, clean=True))
        board.set_work(work(1, end=64))  # retired by the clean work: the id may come back

    run(main())


def test_exhausted_work_waits_for_new_work() -> None:
    async def main() -> None:
        rec = Recorder()
        board = rec.board(threads=3, difficulty=EASIEST, chunk=8)
        await board.start()
        board.set_work(work(1, end=40))
        assert (await asyncio.wait_for(rec.exhausted.get(), WAIT_S)).work_id == 1
        assert rec.hashes == 40 and rec.exhausted.empty()
        board.set_work(work(2, start=(1 << 32) - 24))  # the very end of the nonce space
        assert (await asyncio.wait_for(rec.exhausted.get(), WAIT_S)).work_id == 2
        await board.stop()
        assert rec.hashes == 64
        assert max(n.nonce for n in rec.nonces) == (1 << 32) - 1

    run(main())


def test_stop_is_prompt_and_final() -> None:
    async def main() -> None:
        rec = Recorder()
        board = rec.board(threads=2, difficulty=EASIEST, chunk=256)
        await board.start()
        board.set_work(work(1))
        await asyncio.wait_for(rec.got_hashes.wait(), WAIT_S)
        t0 = time.monotonic()
        await board.stop()
        took = time.monotonic() - t0
        assert took < 1.0, f"stop took {took:.3f} s"
        count, hashes = len(rec.nonces), rec.hashes
        await asyncio.sleep(0)  # let anything still queued on the loop run
        await asyncio.sleep(0.05)
        assert (len(rec.nonces), rec.hashes) == (count, hashes), "reports after stop()"

        idle = rec.board(threads=2, difficulty=EASIEST)  # no work: threads are waiting
        await idle.start()
        t0 = time.monotonic()
        await idle.stop()
        assert time.monotonic() - t0 < 1.0

    run(main())


def test_a_failing_thread_surfaces_in_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> list[tuple[int, bytes]]:
        raise RuntimeError("core broke")

    monkeypatch.setattr(cpu.scrypt, "scan", broken)

    async def main() -> None:
        board = CpuBoard(1, EASIEST)
        await board.start()
        board.set_work(work(1))
        with pytest.raises(RuntimeError, match="core broke"):
            await asyncio.wait_for(board.wait(), WAIT_S)
        with pytest.raises(RuntimeError, match="core broke"):
            await board.stop()

    run(main())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="76 bytes"):
        Work(1, bytes(80), 1)
    with pytest.raises(ValueError, match="nonce range"):
        Work(1, bytes(76), 1, nonce_start=5, nonce_end=5)
    with pytest.raises(ValueError, match="threads"):
        CpuBoard(0)
    with pytest.raises(ValueError, match="difficulty"):
        CpuBoard(1, 0)
