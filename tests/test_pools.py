"""stratum.pools: failover, fail-back, queued shares, accounting, backoff (loopback pools)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

import pytest
from stratum_fake_pool import FakePool, notify

from agent.state import State
from agent.stratum.client import ClientOptions, Job
from agent.stratum.pools import (
    TRANSITIONS,
    PoolManager,
    PoolOptions,
    PoolSpec,
    PoolStatus,
    backoff_delay,
)

FAST = PoolOptions(
    backoff_base_s=0.05,
    backoff_cap_s=0.4,
    backoff_jitter=0.25,
    circuit_failures=3,
    stability_s=1.0,
    queued_share_max_age_s=10.0,
    client=ClientOptions(connect_timeout_s=1.0, request_timeout_s=2.0, submit_timeout_s=2.0),
)


def run(coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class Owner:
    """What the mining service would be: collects jobs and active-pool changes."""

    def __init__(self) -> None:
        self.jobs: asyncio.Queue[Job] = asyncio.Queue()
        self.actives: asyncio.Queue[str | None] = asyncio.Queue()

    def on_job(self, job: Job) -> None:
        self.jobs.put_nowait(job)

    def on_active(self, label: str | None) -> None:
        self.actives.put_nowait(label)

    async def job_from(self, url: str, timeout: float = 5.0) -> Job:
        async with asyncio.timeout(timeout):
            while True:
                job = await self.jobs.get()
                if job.pool == url:
                    return job

    async def active_is(self, url: str | None, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while (await self.actives.get()) != url:
                pass


class StatusLog:
    """A State-shaped recorder: every status a pool goes through, as an awaitable stream."""

    def __init__(self) -> None:
        self.seen: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def set_pool(self, url: str, *, status: str | None = None, latency_ms: Any = None) -> None:
        if status is not None:
            self.seen.put_nowait((url, status))

    async def reaches(self, url: str, status: PoolStatus, timeout: float = 5.0) -> float:
        async with asyncio.timeout(timeout):
            while (await self.seen.get()) != (url, status.value):
                pass
        return time.monotonic()


def manager(pools: list[FakePool], owner: Owner, state: Any = None, **opts: Any) -> PoolManager:
    specs = [PoolSpec(p.url, "w.1", "secret-pw", priority=i) for i, p in enumerate(pools)]
    options = PoolOptions(**{**FAST.__dict__, **opts})
    return PoolManager(specs, options, on_job=owner.on_job, on_active=owner.on_active, state=state)


def share(mgr: PoolManager, job: Job, nonce: int = 1) -> asyncio.Future[Any]:
    return mgr.submit(job, b"\x00\x00\x00\x01", job.notify.ntime, nonce)


def test_backoff_grows_and_is_capped() -> None:
    delays = [backoff_delay(n, 0.5, 8.0, 0.0) for n in range(1, 10)]
    assert delays[:5] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert delays[5:] == [8.0] * 4
    assert backoff_delay(10_000, 0.5, 8.0, 0.0) == 8.0  # no overflow
    jittered = [backoff_delay(4, 0.5, 60.0, 0.25, rand=lambda r=r: r) for r in (0.0, 0.5, 1.0)]
    assert jittered == [4.0, 3.5, 3.0]


def test_transitions_table_is_the_documented_machine() -> None:
    S = PoolStatus
    assert TRANSITIONS[S.ALIVE] >= {S.FAILING}
    assert S.ALIVE not in TRANSITIONS[S.FAILING]  # a failing pool reconnects first
    assert TRANSITIONS[S.CIRCUIT_OPEN] == {S.PROBING, S.STOPPED}
    assert TRANSITIONS[S.PROBING] >= {S.ALIVE, S.CIRCUIT_OPEN}
    assert all(S.STOPPED in t for s, t in TRANSITIONS.items() if s is not S.STOPPED)


def test_failover_and_failback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def main() -> dict[str, float]:
        primary, backup = await FakePool().start(), await FakePool().start()
        primary.job_prefix, backup.job_prefix = "p", "b"
        owner, log = Owner(), StatusLog()
        mgr = manager([primary, backup], owner, state=log)
        await mgr.start()
        await owner.active_is(primary.url)
        job = await owner.job_from(primary.url)
        assert (await share(mgr, job)).outcome == "accepted"
        # the backup is a hot standby: connected and subscribed, not active
        if mgr.status(backup.url) is not PoolStatus.ALIVE:
            await log.reaches(backup.url, PoolStatus.ALIVE)

        port = primary.port
        t_kill = time.monotonic()
        await primary.kill()
        job = await owner.job_from(backup.url)
        assert job.notify.clean_jobs  # a switch of pool retires all old work
        result = await share(mgr, job)
        t_share = time.monotonic()
        assert result.outcome == "accepted" and result.pool == backup.url
        failover_s = t_share - t_kill
        assert failover_s < 2.0, f"failover took {failover_s:.3f}s"
        assert mgr.active == backup.url

        # the primary comes back: fail-back only after its stability window (1 s here)
        revived = FakePool()
        revived.job_prefix = "r"
        await revived.start(port)
        t_alive = await log.reaches(primary.url, PoolStatus.ALIVE, timeout=5)
        assert mgr.active == backup.url
        await owner.active_is(primary.url, timeout=5)
        t_back = time.monotonic()
        assert t_back - t_alive >= 0.99
        assert t_back - t_alive < 2.0
        job = await owner.job_from(primary.url)
        assert (await share(mgr, job)).outcome == "accepted"
        stats = {s.url: s for s in mgr.stats()}
        assert stats[primary.url].accepted == 2 and stats[backup.url].accepted == 1
        assert stats[primary.url].active and stats[primary.url].disconnects == 1
        assert stats[primary.url].latency_ms is not None
        await mgr.stop()
        await revived.kill()
        await backup.kill()
        return {"failover_s": failover_s, "failback_after_alive_s": t_back - t_alive}

    timings = run(main())
    print(f"measured: {timings}")
    assert "alive -> failing" in caplog.text  # the log tells the story...
    assert "secret-pw" not in caplog.text  # ...without the password


def test_queued_share_submitted_after_reconnect() -> None:
    async def main() -> None:
        pool = await FakePool().start()
        owner, log = Owner(), StatusLog()
        mgr = manager([pool], owner, state=log)
        await mgr.start()
        job = await owner.job_from(pool.url)
        port = pool.port
        await pool.kill()
        await owner.active_is(None)
        fut = share(mgr, job, nonce=7)
        await asyncio.sleep(0)
        assert not fut.done()
        assert mgr.stats()[0].queued == 1
        # same pool back, same session (FakePool resumes by session id): the job survives
        back = FakePool()
        back.sessions = dict(pool.sessions)
        await back.start(port)
        result = await asyncio.wait_for(fut, 5)
        assert result.outcome == "accepted"
        sub = await back.submits.get()
        assert sub["params"][1] == "j1" and sub["params"][4] == "00000007"
        assert back.conns[0].all[0]["params"][1] == "sf000000f"  # resume asked for
        assert mgr.stats()[0].queued == 0
        await mgr.stop()
        await back.kill()

    run(main())


def test_queued_share_lost_when_session_changes() -> None:
    async def main() -> None:
        pool = await FakePool().start()
        owner = Owner()
        mgr = manager([pool], owner)
        await mgr.start()
        job = await owner.job_from(pool.url)
        port = pool.port
        await pool.kill()
        await owner.active_is(None)
        fut = share(mgr, job)
        back = FakePool()
        back.extranonce1 = "0badf00d"  # a new session: the old coinbase is worthless
        await back.start(port)
        result = await asyncio.wait_for(fut, 5)
        assert result.outcome == "lost" and "no longer valid" in (result.reason or "")
        assert back.submits.empty()
        assert mgr.stats()[0].lost == 1
        fresh = await owner.job_from(pool.url)
        assert fresh.extranonce1 == bytes.fromhex("0badf00d")
        assert mgr.current_job is not None
        assert mgr.current_job.extranonce1 == bytes.fromhex("0badf00d")
        await mgr.stop()
        await back.kill()

    run(main())


def test_queued_share_expires_as_lost_and_stop_accounts_for_all() -> None:
    async def main() -> None:
        pool = await FakePool().start()
        owner = Owner()
        mgr = manager([pool], owner, queued_share_max_age_s=0.2)
        await mgr.start()
        job = await owner.job_from(pool.url)
        await pool.kill()
        await owner.active_is(None)
        result = await asyncio.wait_for(share(mgr, job), 5)
        assert result.outcome == "lost" and "still down" in (result.reason or "")
        mgr.options = PoolOptions(**{**mgr.options.__dict__, "queued_share_max_age_s": 60})
        pending = share(mgr, job, nonce=2)
        await mgr.stop()
        assert (await pending).outcome == "lost"
        assert mgr.stats()[0].lost == 2

    run(main())


def test_stale_and_rejected_accounting() -> None:
    async def main() -> None:
        pool = await FakePool().start()
        owner = Owner()
        mgr = manager([pool], owner)
        await mgr.start()
        old = await owner.job_from(pool.url)
        pool.accept_shares = False
        r = await share(mgr, old)
        assert r.outcome == "rejected" and r.reason == "23 Low difficulty share"
        pool.reject_error = [21, "Job not found", None]
        assert (await share(mgr, old)).outcome == "stale"
        # a new block: clean_jobs with another prevhash retires the old job at once
        pool.conns[0].send(notify("j2", clean=True, prevhash="11" * 32))
        await owner.job_from(pool.url)
        n_before = pool.submits.qsize()
        r = await share(mgr, old)
        assert r.outcome == "stale" and "retired" in (r.reason or "")
        assert pool.submits.qsize() == n_before  # not even sent
        s = mgr.stats()[0]
        assert (s.accepted, s.rejected, s.stale) == (0, 1, 2)
        assert s.rejected_reasons == {"23 Low difficulty share": 1}
        await mgr.stop()
        await pool.kill()

    run(main())


def test_circuit_opens_and_probes_then_recovers() -> None:
    async def main() -> None:
        pool = await FakePool().start()
        port = pool.port
        await pool.kill()  # nothing listens: every connect fails
        owner, log = Owner(), StatusLog()
        mgr = manager([pool], owner, state=log, circuit_failures=2)
        await mgr.start()
        await log.reaches(pool.url, PoolStatus.FAILING)
        await log.reaches(pool.url, PoolStatus.CONNECTING)
        await log.reaches(pool.url, PoolStatus.CIRCUIT_OPEN)
        await log.reaches(pool.url, PoolStatus.PROBING)
        await log.reaches(pool.url, PoolStatus.CIRCUIT_OPEN)
        assert mgr.stats()[0].failures >= 3
        back = await FakePool().start(port)
        await log.reaches(pool.url, PoolStatus.ALIVE, timeout=5)
        await owner.job_from(pool.url)
        s = mgr.stats()[0]
        assert s.failures == 0 and s.connects == 1 and s.status == "alive"
        await mgr.stop()
        await back.kill()

    run(main())


def test_publishes_to_state_and_refuses_bad_urls() -> None:
    async def main() -> None:
        pool = await FakePool().start()
        owner, state = Owner(), State()
        mgr = manager([pool], owner, state=state)
        await mgr.start()
        job = await owner.job_from(pool.url)
        await share(mgr, job)
        snap = state.snapshot()
        entry = next(p for p in snap["pools"] if p["url"] == pool.url)
        assert entry["status"] == "alive" and entry["latency_ms"] is not None
        await mgr.stop()
        await pool.kill()

    run(main())
    with pytest.raises(ValueError, match="stratum"):
        PoolManager([PoolSpec("http://127.0.0.1:1", "u")])
    with pytest.raises(ValueError, match="at least one pool"):
        PoolManager([])


def test_client_reconnect_same_host_followed_without_counting_a_failure() -> None:
    async def main() -> None:
        first, second = await FakePool().start(), await FakePool().start()
        second.job_prefix = "s"
        owner, log = Owner(), StatusLog()
        mgr = manager([first], owner, state=log)
        await mgr.start()
        await owner.job_from(first.url)
        first.conns[0].send(
            {"id": None, "method": "client.reconnect", "params": ["127.0.0.1", second.port, 0]}
        )
        await log.reaches(first.url, PoolStatus.CONNECTING)
        job = await owner.job_from(first.url)  # the label stays the configured pool
        assert job.notify.job_id == "s1"
        assert (await share(mgr, job)).outcome == "accepted"
        assert not second.submits.empty()
        s = mgr.stats()[0]
        assert s.failures == 0 and s.connects == 2 and s.lost == 0
        await mgr.stop()
        await first.kill()
        await second.kill()

    run(main())


def test_credentials_in_url_never_shown() -> None:
    mgr = PoolManager([PoolSpec("stratum+tcp://alice:pa55word@127.0.0.1:3333", "u", "p")])
    assert [s.url for s in mgr.stats()] == ["stratum+tcp://127.0.0.1:3333"]


def test_pool_that_stops_answering_shares_fails_over() -> None:
    """No FIN, no reply: the submit timeout drops the pool, the owner moves to the backup, and
    the unanswered share is sent again once the primary is back on the same session."""

    async def main() -> None:
        primary, backup = await FakePool().start(), await FakePool().start()
        backup.job_prefix = "b"
        owner, log = Owner(), StatusLog()
        opts = FAST.client.__class__(**{**FAST.client.__dict__, "submit_timeout_s": 0.3})
        mgr = manager([primary, backup], owner, state=log, client=opts)
        await mgr.start()
        job = await owner.job_from(primary.url)
        if mgr.status(backup.url) is not PoolStatus.ALIVE:
            await log.reaches(backup.url, PoolStatus.ALIVE)
        primary.answer_shares = False
        t0 = time.monotonic()
        pending = share(mgr, job, nonce=9)
        bjob = await owner.job_from(backup.url)
        assert (await share(mgr, bjob)).outcome == "accepted"
        assert time.monotonic() - t0 < 2.0
        primary.answer_shares = True
        result = await asyncio.wait_for(pending, 5)
        assert result.outcome == "accepted" and result.pool == primary.url
        await mgr.stop()
        await primary.kill()
        await backup.kill()

    run(main())
