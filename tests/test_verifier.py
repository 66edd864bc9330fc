"""The nonce verifier: headers hashed on the C core's own threads, results back on the event loop.

Every chip nonce goes through it (agent.hardware.chain), so it must return exactly pow_hash of
each header, each result once and with its own context, under load and at close; bad input gets
an error naming what was wrong."""

from __future__ import annotations

import asyncio
import os
import select
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import scrypt
from agent.hardware.verifier import NonceVerifier

HEADER = bytes(range(80))


def _collect(v: scrypt.Verifier, n: int, timeout_s: float = 20.0) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    while len(out) < n:
        ready, _, _ = select.select([v.fileno()], [], [], timeout_s)
        assert ready, f"only {len(out)} of {n} results within {timeout_s} s"
        out += v.take()
    return out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(min_size=80, max_size=80), min_size=1, max_size=12),
       st.integers(1, 3))  # fmt: skip
def test_every_header_comes_back_once_with_its_pow_hash(headers: list[bytes], threads: int) -> None:
    v = scrypt.Verifier(threads)
    try:
        for tag, h in enumerate(headers):
            v.submit(h, tag)
        got = _collect(v, len(headers))
        assert sorted(t for t, _ in got) == list(range(len(headers)))
        assert {t: raw for t, raw in got} == {t: scrypt.pow_hash(h) for t, h in enumerate(headers)}
        assert v.pending() == 0 and v.take() == []
    finally:
        v.close()


def test_every_backend_gives_the_same_hash() -> None:
    want = scrypt.pow_hash(HEADER)
    before = scrypt.backend()
    try:
        for name in scrypt.backends():
            scrypt.set_backend(name)  # the kernel is chosen when the header is submitted
            v = scrypt.Verifier()
            v.submit(HEADER, 7)
            assert _collect(v, 1) == [(7, want)], name
            v.close()
    finally:
        scrypt.set_backend(before)


@pytest.mark.parametrize(
    ("args", "exc", "words"),
    [
        ((b"\0" * 79, 1), ValueError, "header must be 80 bytes, got 79"),
        (("x" * 80, 1), TypeError, "header must be a bytes-like object, not str"),
        ((HEADER, -1), OverflowError, "tag must be in 0..2**64-1, got -1"),
        ((HEADER, 2**64), OverflowError, "tag must be in 0..2**64-1"),
        ((HEADER, 1.0), TypeError, "tag must be an int, not float"),
        ((HEADER, 1, b"\xff" * 31), ValueError, "urgent_target must be 32 little-endian bytes, "
         "got 31"),
        ((HEADER, 1, 5), TypeError, "urgent_target must be 32 little-endian bytes or None, not "
         "int"),
    ],
)
def test_bad_submissions_are_named_and_queue_nothing(args: tuple, exc: type, words: str) -> None:
    v = scrypt.Verifier()
    try:
        with pytest.raises(exc, match=words.replace("*", r"\*").replace(".", r"\.")):
            v.submit(*args)
        assert v.pending() == 0
    finally:
        v.close()


@pytest.mark.parametrize("lazy_s", [-0.001, 61.0, float("nan")])
def test_a_lazy_time_out_of_range_is_refused(lazy_s: float) -> None:
    with pytest.raises(ValueError, match=r"lazy_s must be in 0\.\.60 seconds, got"):
        scrypt.Verifier(1, lazy_s)
    v = scrypt.Verifier(1)
    with pytest.raises(ValueError, match=r"lazy_s must be in 0\.\.60 seconds, got"):
        v.set_lazy(lazy_s)
    v.close()


def _readable(v: scrypt.Verifier, timeout_s: float) -> bool:
    return bool(select.select([v.fileno()], [], [], timeout_s)[0])


def test_a_lazy_verifier_wakes_for_a_share_at_once_and_for_the_rest_when_asked() -> None:
    """Lazy (as each chain runs it): a hash that meets its urgent target makes the fd readable
    at once, and brings the results finished before it; the others wait for take() (which the
    loop calls whenever it is awake), their due time, or set_lazy(0)."""
    v = scrypt.Verifier(1, 30.0)
    try:
        never = bytes(32)  # no hash is at or under 0
        v.submit(HEADER, 1)
        v.submit(bytes(80), 2, never)
        v.submit(HEADER[::-1], 3, b"\xff" * 32)  # every hash is: a share
        assert _readable(v, 20.0)  # long before the 30 s
        assert v.take() == [(1, scrypt.pow_hash(HEADER)), (2, scrypt.pow_hash(bytes(80))),
                            (3, scrypt.pow_hash(HEADER[::-1]))]  # fmt: skip
        v.submit(HEADER, 4, never)
        assert not _readable(v, 0.3)  # hashed in 0.2 ms, held for the loop's next wake-up
        v.set_lazy(0.0)  # from now on at once, and what waits too
        assert _readable(v, 20.0) and v.take() == [(4, scrypt.pow_hash(HEADER))]
        assert not _readable(v, 0.0)  # take() emptied the pipe
    finally:
        v.close()


def test_a_lazy_result_wakes_the_loop_once_it_is_due() -> None:
    v = scrypt.Verifier(1, 0.05)
    try:
        t0 = time.monotonic()
        v.submit(HEADER, 9)
        assert _readable(v, 20.0)
        assert time.monotonic() - t0 >= 0.05
        assert v.take() == [(9, scrypt.pow_hash(HEADER))]
    finally:
        v.close()


@pytest.mark.parametrize("threads", [0, -1, scrypt.VERIFIER_MAX_THREADS + 1])
def test_thread_count_out_of_range_is_refused(threads: int) -> None:
    with pytest.raises(ValueError, match=f"threads must be in 1..16, got {threads}"):
        scrypt.Verifier(threads)


def test_a_closed_verifier_says_so_and_close_is_idempotent() -> None:
    v = scrypt.Verifier(2)
    fd = v.fileno()
    v.close()
    v.close()
    assert v.closed and v.pending() == 0
    with pytest.raises(ValueError, match="the verifier is closed"):
        v.submit(HEADER, 1)
    with pytest.raises(ValueError, match="the verifier is closed"):
        v.take()
    with pytest.raises(OSError):
        os.fstat(fd)  # its pipe is closed with it: no descriptor leaks per chain restart


def test_a_full_queue_refuses_with_a_clear_error_and_close_drops_the_backlog() -> None:
    v = scrypt.Verifier(1)
    accepted = 0
    with pytest.raises(OverflowError, match="verifier queue full: 65536 headers waiting"):
        for tag in range(70_000):
            v.submit(HEADER, tag)
            accepted += 1
    assert 65_536 - 8 <= accepted <= 65_536  # a few may have been hashed meanwhile
    v.close()  # joins the thread after the hash in progress, not after the whole backlog


def test_results_arrive_on_the_loop_and_drain_waits_for_them() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        got: list[tuple[str, bytes]] = []
        v: NonceVerifier[str] = NonceVerifier(loop, lambda ctx, raw: got.append((ctx, raw)))
        headers = {f"n{i}": bytes([i]) * 80 for i in range(20)}
        for ctx, h in headers.items():
            v.submit(h, ctx)
        assert v.pending == 20
        assert await v.drain(20.0) == 0
        assert sorted(got) == sorted((c, scrypt.pow_hash(h)) for c, h in headers.items())
        assert v.pending == 0
        v.close()
        v.close()

    asyncio.run(main())


def test_a_failing_handler_loses_none_of_the_other_results(caplog: pytest.LogCaptureFixture
                                                          ) -> None:  # fmt: skip
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        got: list[int] = []

        def on_result(ctx: int, _raw: bytes) -> None:
            if ctx == 3:
                raise RuntimeError("handler bug")
            got.append(ctx)

        v: NonceVerifier[int] = NonceVerifier(loop, on_result, threads=2)
        for i in range(8):
            v.submit(HEADER, i)
        assert await v.drain(20.0) == 0
        v.close()
        return got

    got = asyncio.run(main())
    assert sorted(got) == [0, 1, 2, 4, 5, 6, 7]
    assert "handling the result for 3 failed" in caplog.text


def test_drain_times_out_and_reports_what_is_left() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        v: NonceVerifier[int] = NonceVerifier(loop, lambda *_: None)
        for i in range(2000):  # ~0.2 ms each on one thread: far longer than the timeout
            v.submit(HEADER, i)
        left = await v.drain(0.01)
        assert 0 < left <= 2000 and v.pending == left
        v.close()
        assert v.pending == 0

    asyncio.run(main())


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="per-thread nice is Linux's")
def test_hashing_threads_run_below_the_event_loops_priority() -> None:
    """A hash woken by a nonce must not preempt the loop (a notify may be coming in): the
    verifier's threads are niced (10) and the calling thread is left as it was."""
    before = set(os.listdir("/proc/self/task"))
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    v = scrypt.Verifier(2)
    try:
        v.submit(HEADER, 1)
        _collect(v, 1)  # the threads have surely started
        new = set(os.listdir("/proc/self/task")) - before
        assert len(new) == 2
        assert {os.getpriority(os.PRIO_PROCESS, int(t)) for t in new} == {max(mine, 10)}
        assert os.getpriority(os.PRIO_PROCESS, 0) == mine
    finally:
        v.close()


def test_lazy_results_come_with_collect_and_drain_waits_for_none_of_the_delay() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        got: list[int] = []
        two = asyncio.Event()

        def on_result(ctx: int, _raw: bytes) -> None:
            got.append(ctx)
            if len(got) == 2:
                two.set()

        v: NonceVerifier[int] = NonceVerifier(loop, on_result, lazy_s=30.0)
        v.submit(HEADER, 1, urgent_target=0)  # no share: held
        v.submit(HEADER, 2, urgent_target=2**300)  # a share at any hash (capped at 2**256-1)
        await asyncio.wait_for(two.wait(), 20.0)  # the share woke the loop; 1 came along
        assert got == [1, 2]
        for i in range(3, 8):
            v.submit(HEADER, i)  # no urgent target: held
        t0 = loop.time()
        assert await v.drain(20.0) == 0  # drain stops holding: well before 30 s
        assert loop.time() - t0 < 10.0 and got == list(range(1, 8))
        v.submit(HEADER, 8)  # lazy again after drain
        v.collect()  # nothing finished yet, or 8: either way no error, no loss
        assert await v.drain(20.0) == 0 and got[-1] == 8
        v.close()

    asyncio.run(main())
