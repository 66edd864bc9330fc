"""Pools in priority order with failover, fail-back and per-pool share accounting.

Every configured pool keeps its own connection (a hot standby), so when the active pool dies the
next one already has a job: failover is the time to notice EOF, not the time to connect. Each
pool runs an explicit state machine (PoolStatus; every transition goes through _transition and
is checked against TRANSITIONS):

    connecting --ok--> alive --lost--> failing --retry--> connecting
    connecting/failing --N failures--> circuit_open --wait--> probing --ok--> alive
                                                              probing --fail--> circuit_open

The active pool is the best alive one. A higher-priority pool that has failed before takes over
again only after it has stayed alive for stability_s (no flapping back to a sick pool).

Shares: submit() returns a future resolved with a ShareResult whose outcome is accepted, rejected
(with the pool's reason), stale (job retired, or the pool said 21), or lost (the pool was down
and the job could not be kept). No share is dropped without one of these outcomes.

Owner (the mining service):

    pools = PoolManager([PoolSpec.from_config(p) for p in config.pools], PoolOptions(),
                        on_job=work.new_job, on_active=..., state=state)
    await pools.start()
    # on_job(job): a client.Job (notify, difficulty, extranonce1, extranonce2_size, pool);
    # a job from a newly active pool always arrives with clean_jobs=True.
    result = await pools.submit(job, extranonce2, ntime, nonce)   # -> ShareResult
    pools.stats()                                                 # -> [PoolStats], by priority
    await pools.stop()"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import random
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from agent import defaults as D
from agent.stratum import protocol as P
from agent.stratum.client import (
    ClientOptions,
    ClientTarget,
    ConnectionLost,
    Disconnected,
    Event,
    Job,
    Redirect,
    StratumClient,
    StratumConnectError,
    normalise_fingerprint,
)

log = logging.getLogger(__name__)


class PoolStatus(enum.Enum):
    CONNECTING = "connecting"
    ALIVE = "alive"
    FAILING = "failing"
    CIRCUIT_OPEN = "circuit_open"
    PROBING = "probing"
    STOPPED = "stopped"


S = PoolStatus
TRANSITIONS: dict[PoolStatus, frozenset[PoolStatus]] = {
    S.CONNECTING: frozenset({S.ALIVE, S.FAILING, S.CIRCUIT_OPEN, S.STOPPED}),
    # alive -> connecting: the pool asked us to reconnect (client.reconnect), not a failure
    S.ALIVE: frozenset({S.FAILING, S.CONNECTING, S.STOPPED}),
    S.FAILING: frozenset({S.CONNECTING, S.STOPPED}),
    S.CIRCUIT_OPEN: frozenset({S.PROBING, S.STOPPED}),
    S.PROBING: frozenset({S.ALIVE, S.CIRCUIT_OPEN, S.STOPPED}),
    S.STOPPED: frozenset(),
}


def backoff_delay(
    failures: int,
    base_s: float = D.POOL_BACKOFF_BASE_S,
    cap_s: float = D.POOL_BACKOFF_CAP_S,
    jitter: float = D.POOL_BACKOFF_JITTER,
    rand: Callable[[], float] = random.random,
) -> float:
    """Delay before the next attempt after `failures` consecutive failures (>= 1).

    base * 2**(failures-1), capped, then scaled down by up to `jitter` so many miners that lost
    the same pool do not all come back in the same instant."""
    exp = min(max(failures, 1) - 1, 62)
    raw = min(cap_s, base_s * (2.0**exp))
    return raw * (1.0 - jitter * rand())


@dataclass(frozen=True)
class PoolSpec:
    url: str
    user: str
    password: str = field(default=D.POOL_PASSWORD, repr=False)
    priority: int = D.POOL_PRIORITY
    ca_file: str | None = None
    cert_sha256: str | None = None

    @classmethod
    def from_config(cls, pool: Any, password: str | None = None, **extra: Any) -> PoolSpec:
        """From a config.PoolConfig; pass the decrypted password when it was password_enc."""
        pw = password if password is not None else pool.password
        return cls(
            url=pool.url,
            user=pool.user,
            password=pw if pw is not None else D.POOL_PASSWORD,
            priority=pool.priority,
            **extra,
        )

    def target(self) -> ClientTarget:
        parts = urlsplit(self.url)
        if parts.scheme not in D.POOL_SCHEMES or not parts.hostname or not parts.port:
            raise ValueError(
                f"pool url must be stratum+tcp:// or stratum+ssl://host:port: {self.url}"
            )
        return ClientTarget(parts.hostname, parts.port, parts.scheme == "stratum+ssl")


@dataclass(frozen=True)
class PoolOptions:
    backoff_base_s: float = D.POOL_BACKOFF_BASE_S
    backoff_cap_s: float = D.POOL_BACKOFF_CAP_S
    backoff_jitter: float = D.POOL_BACKOFF_JITTER
    circuit_failures: int = D.POOL_CIRCUIT_FAILURES
    stability_s: float = D.POOL_STABILITY_S
    max_queued_shares: int = D.POOL_MAX_QUEUED_SHARES
    queued_share_max_age_s: float = D.POOL_QUEUED_SHARE_MAX_AGE_S
    client: ClientOptions = field(default_factory=ClientOptions)


@dataclass(frozen=True)
class ShareResult:
    outcome: str  # "accepted" | "rejected" | "stale" | "lost"
    pool: str
    reason: str | None = None  # why it was rejected, stale or lost
    latency_ms: float | None = None


@dataclass
class PoolStats:
    url: str
    priority: int
    status: str = PoolStatus.CONNECTING.value
    active: bool = False
    accepted: int = 0
    rejected: int = 0
    rejected_reasons: Counter[str] = field(default_factory=Counter)
    stale: int = 0
    lost: int = 0
    queued: int = 0
    latency_ms: float | None = None
    connects: int = 0
    failures: int = 0  # consecutive failed connection attempts
    disconnects: int = 0
    bad_messages: int = 0
    last_error: str | None = None


@dataclass
class _Share:
    job: Job
    extranonce2: bytes
    ntime: int
    nonce: int
    future: asyncio.Future[ShareResult]
    expiry: asyncio.TimerHandle | None = None


@dataclass
class _Pool:
    index: int
    spec: PoolSpec
    label: str
    stats: PoolStats
    status: PoolStatus = PoolStatus.CONNECTING
    client: StratumClient | None = None
    task: asyncio.Task[None] | None = None
    alive_since: float = 0.0
    ever_failed: bool = False
    flaps: int = 0  # connections in a row that died before stability_s: they back off too
    session_id: str | None = None
    extranonce1: bytes | None = None
    redirect: Redirect | None = None
    next_target: ClientTarget | None = None  # where client.reconnect sent us, for one attempt
    accounted: int = 0  # connection id whose bad-message count is already in stats
    first_notify: bool = True  # the next notify is the first of a (re)connection
    last_job: Job | None = None
    # job id -> (prevhash, extranonce1) of every job a share may still be submitted for
    valid_jobs: OrderedDict[str, tuple[bytes, bytes]] = field(default_factory=OrderedDict)
    queue: deque[_Share] = field(default_factory=deque)


_MAX_VALID_JOBS = 64
# transitions that are good news or our own doing: logged at info, the rest at warning
_QUIET = frozenset({PoolStatus.ALIVE, PoolStatus.CONNECTING, PoolStatus.STOPPED})


def _label(url: str) -> str:
    """The url as shown in logs, stats and the status page: never with user:password@."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return f"{parts.scheme}://{parts.hostname}:{parts.port}"


class PoolManager:
    """Owner API: start(), stop(), on_job callback, submit(), stats(), active."""

    def __init__(
        self,
        pools: Sequence[PoolSpec],
        options: PoolOptions | None = None,
        *,
        on_job: Callable[[Job], None] | None = None,
        on_active: Callable[[str | None], None] | None = None,
        state: Any = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not pools:
            raise ValueError("at least one pool is needed")
        self.options = options or PoolOptions()
        self._on_job = on_job
        self._on_active = on_active
        self._state = state  # agent.state.State, or None
        self._rand = rand
        ordered = sorted(enumerate(pools), key=lambda ip: (ip[1].priority, ip[0]))
        seen: Counter[str] = Counter(p.url for p in pools)
        self._pools: list[_Pool] = []
        for i, (orig, spec) in enumerate(ordered):
            spec.target()  # refuse a bad url or pin now, not in a background task
            if spec.cert_sha256:
                normalise_fingerprint(spec.cert_sha256)
            label = _label(spec.url) if seen[spec.url] == 1 else f"{_label(spec.url)}#{orig}"
            self._pools.append(_Pool(i, spec, label, PoolStats(url=label, priority=spec.priority)))
        self._by_label = {p.label: p for p in self._pools}
        self._active: _Pool | None = None
        self._stopping = asyncio.Event()
        self._failback_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---------------------------------------------------------------------------- owner API

    async def start(self) -> None:
        for pool in self._pools:
            self._publish(pool)
            pool.task = asyncio.create_task(self._run(pool), name=f"pool {pool.label}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._failback_timer is not None:
            self._failback_timer.cancel()
        for pool in self._pools:
            if pool.client is not None:
                await pool.client.close("agent stopping")
            if pool.task is not None:
                pool.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pool.task
            while pool.queue:
                self._finish(pool, pool.queue.popleft(), "lost", "agent stopped before reconnect")
            if pool.status is not PoolStatus.STOPPED:
                self._transition(pool, PoolStatus.STOPPED, "stopped")
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @property
    def active(self) -> str | None:
        """Label (url) of the pool whose jobs are being worked, or None if no pool is alive."""
        return self._active.label if self._active else None

    @property
    def current_job(self) -> Job | None:
        return self._active.last_job if self._active else None

    def status(self, label: str) -> PoolStatus:
        return self._by_label[label].status

    def stats(self) -> list[PoolStats]:
        """A copy of every pool's counters, in priority order."""
        out = []
        for p in self._pools:
            p.stats.queued = len(p.queue)
            p.stats.active = p is self._active
            p.stats.status = p.status.value
            live = p.client.bad_lines if p.client and p.client.connection != p.accounted else 0
            out.append(
                dataclasses.replace(
                    p.stats,
                    rejected_reasons=Counter(p.stats.rejected_reasons),
                    bad_messages=p.stats.bad_messages + live,
                )
            )
        return out

    def submit(
        self, job: Job, extranonce2: bytes, ntime: int, nonce: int
    ) -> asyncio.Future[ShareResult]:
        """Send a share to the pool that issued `job`; the future says what became of it."""
        fut: asyncio.Future[ShareResult] = asyncio.get_running_loop().create_future()
        pool = self._by_label.get(job.pool)
        if pool is None:
            fut.set_result(ShareResult("lost", job.pool, "job from an unknown pool"))
            log.warning("share for a job of unknown pool %s counted lost", job.pool)
            return fut
        share = _Share(job, extranonce2, ntime, nonce, fut)
        if self._stopping.is_set():
            self._finish(pool, share, "lost", "pools stopped")
        elif not self._job_valid(pool, job):
            self._finish(pool, share, "stale", "job retired (clean_jobs or new session)")
        elif pool.status is PoolStatus.ALIVE and pool.client is not None:
            self._spawn(self._send(pool, share))
        else:
            self._enqueue(pool, share)
        return fut

    # ---------------------------------------------------------------------------- state machine

    def _transition(self, pool: _Pool, new: PoolStatus, reason: str) -> None:
        old = pool.status
        if new is old:
            return
        if new not in TRANSITIONS[old]:
            # a bug in this module, never pool input: say so loudly, keep running
            log.error(
                "%s: illegal transition %s -> %s (%s)", pool.label, old.value, new.value, reason
            )
            return
        pool.status = new
        pool.stats.status = new.value
        level = logging.INFO if new in _QUIET else logging.WARNING
        log.log(level, "%s: %s -> %s (%s)", pool.label, old.value, new.value, reason)
        if new is PoolStatus.ALIVE:
            pool.alive_since = time.monotonic()
        self._publish(pool)
        if not self._stopping.is_set():
            self._reselect()

    async def _run(self, pool: _Pool) -> None:
        o = self.options
        while not self._stopping.is_set():
            client = self._make_client(pool)
            try:
                await client.start()
            except Exception as exc:
                if not isinstance(exc, StratumConnectError):
                    # a bug, not the pool: keep the pool task alive and retrying anyway
                    log.exception("%s: connecting failed unexpectedly", pool.label)
                    await client.close(f"internal error: {type(exc).__name__}")
                self._account(pool, client)
                pool.next_target = None  # a redirect that failed: back to the configured host
                if self._stopping.is_set():
                    return
                pool.stats.failures += 1
                pool.stats.last_error = str(exc)
                pool.ever_failed = True
                if pool.status is PoolStatus.PROBING or pool.stats.failures >= o.circuit_failures:
                    self._transition(pool, PoolStatus.CIRCUIT_OPEN, str(exc))
                else:
                    self._transition(pool, PoolStatus.FAILING, str(exc))
                await self._sleep(self._delay(pool.stats.failures))
                if pool.status is PoolStatus.CIRCUIT_OPEN:
                    self._transition(pool, PoolStatus.PROBING, "probing after backoff")
                else:
                    self._transition(pool, PoolStatus.CONNECTING, "retrying")
                continue
            if self._stopping.is_set():
                await client.close("agent stopping")
                return
            self._on_connected(pool, client)
            reason = await client.wait_closed()
            self._on_lost(pool, client, reason)
            if self._stopping.is_set():
                return
            if pool.redirect is not None:
                redirect, pool.redirect = pool.redirect, None
                pool.next_target = ClientTarget(
                    redirect.host, redirect.port, pool.spec.target().tls
                )
                await self._sleep(redirect.wait_s)
                continue
            # The first retry comes quickly (most drops are a pool restart or a network blip),
            # but a pool that accepts us and drops us again at once must not be hammered.
            if time.monotonic() - pool.alive_since >= o.stability_s:
                pool.flaps = 0
            else:
                pool.flaps += 1
            await self._sleep(self._delay(1 + pool.flaps))
            self._transition(pool, PoolStatus.CONNECTING, "reconnecting")

    def _delay(self, failures: int) -> float:
        o = self.options
        return backoff_delay(
            failures, o.backoff_base_s, o.backoff_cap_s, o.backoff_jitter, self._rand
        )

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), max(0.0, seconds))

    def _make_client(self, pool: _Pool) -> StratumClient:
        spec = pool.spec
        options = self.options.client
        if spec.ca_file or spec.cert_sha256:
            options = dataclasses.replace(
                options,
                ca_file=spec.ca_file or options.ca_file,
                cert_sha256=spec.cert_sha256 or options.cert_sha256,
            )
        home = spec.target()
        target = pool.next_target or home
        client: StratumClient

        def on_event(event: Event) -> None:
            self._on_event(pool, client, event)

        client = StratumClient(
            target,
            spec.user,
            spec.password,
            options=options,
            on_event=on_event,
            label=pool.label,
            home_host=home.host,
            session_id=pool.session_id,
        )
        client.previous_extranonce1 = pool.extranonce1
        return client

    def _on_connected(self, pool: _Pool, client: StratumClient) -> None:
        pool.client = client
        pool.stats.connects += 1
        pool.stats.failures = 0
        pool.session_id = client.session_id
        # A new session has a new extranonce1, and _job_valid compares it: no job of the old
        # session can be submitted any more. A resumed one keeps its jobs.
        pool.extranonce1 = client.extranonce1
        pool.stats.latency_ms = client.latency_ms
        last = pool.last_job
        if last is not None and last.connection != client.connection and not client.resumed:
            pool.last_job = None  # a job of the old session: never hand it out again
        self._transition(pool, PoolStatus.ALIVE, "subscribed and authorized")
        # shares found while the pool was down, whose job survived the reconnection
        queued, pool.queue = pool.queue, deque()
        for share in queued:
            if share.expiry is not None:
                share.expiry.cancel()
            if self._job_valid(pool, share.job):
                self._spawn(self._send(pool, share))
            else:
                self._finish(pool, share, "lost", "job no longer valid after reconnecting")

    def _on_lost(self, pool: _Pool, client: StratumClient, reason: str) -> None:
        if pool.client is client:
            pool.client = None
        self._account(pool, client)
        if pool.status is not PoolStatus.ALIVE:
            return
        if self._stopping.is_set():
            self._transition(pool, PoolStatus.STOPPED, reason)
            return
        pool.stats.disconnects += 1
        pool.stats.last_error = reason
        pool.first_notify = True
        if pool.redirect is not None:
            self._transition(pool, PoolStatus.CONNECTING, reason)
        else:
            pool.ever_failed = True
            self._transition(pool, PoolStatus.FAILING, reason)

    def _account(self, pool: _Pool, client: StratumClient) -> None:
        if client.connection != pool.accounted:
            pool.accounted = client.connection
            pool.stats.bad_messages += client.bad_lines

    def _on_event(self, pool: _Pool, client: StratumClient, event: Event) -> None:
        if isinstance(event, Job):
            self._on_job_event(pool, event)
        elif isinstance(event, Disconnected):
            # act at once (failover), not when the run task gets scheduled
            self._on_lost(pool, client, event.reason)
        elif isinstance(event, Redirect):
            pool.redirect = event

    # ---------------------------------------------------------------------------- jobs

    def _on_job_event(self, pool: _Pool, job: Job) -> None:
        n = job.notify
        if n.clean_jobs:
            if pool.first_notify:
                # the clean notify that follows a resumed connection: only a new block
                # (another prevhash) makes the old jobs worthless
                for jid in [j for j, (ph, _) in pool.valid_jobs.items() if ph != n.prevhash]:
                    del pool.valid_jobs[jid]
            else:
                pool.valid_jobs.clear()
        pool.first_notify = False
        pool.valid_jobs[n.job_id] = (n.prevhash, job.extranonce1)
        pool.valid_jobs.move_to_end(n.job_id)
        while len(pool.valid_jobs) > _MAX_VALID_JOBS:
            pool.valid_jobs.popitem(last=False)
        pool.last_job = job
        pool.extranonce1 = job.extranonce1  # set_extranonce applies from this job on
        if pool is self._active and self._on_job is not None:
            self._deliver(job)

    def _deliver(self, job: Job) -> None:
        if self._on_job is None:
            return
        try:
            self._on_job(job)
        except Exception:
            log.exception("job handler failed")

    def _job_valid(self, pool: _Pool, job: Job) -> bool:
        entry = pool.valid_jobs.get(job.notify.job_id)
        return (
            entry is not None
            and entry == (job.notify.prevhash, job.extranonce1)
            and job.extranonce1 == pool.extranonce1
        )

    # ---------------------------------------------------------------------------- choosing

    def _reselect(self) -> None:
        now = time.monotonic()
        cur = self._active
        alive = [p for p in self._pools if p.status is PoolStatus.ALIVE]
        new: _Pool | None
        if cur is None or cur.status is not PoolStatus.ALIVE:
            new = alive[0] if alive else None
        else:
            new = cur
            for p in alive:
                if p.index >= cur.index:
                    break
                stable_at = p.alive_since + self.options.stability_s
                if not p.ever_failed or now >= stable_at:
                    new = p
                    break
                self._arm_failback(stable_at - now)
                break
        if new is cur:
            return
        self._active = new
        for p in (cur, new):
            if p is not None:
                p.stats.active = p is new
        if new is None:
            log.warning("no pool alive: mining pauses until one comes back")
        else:
            log.info("active pool: %s (was %s)", new.label, cur.label if cur else "none")
        if self._on_active is not None:
            try:
                self._on_active(new.label if new else None)
            except Exception:
                log.exception("on_active handler failed")
        if new is not None and new.last_job is not None:
            # work from another pool is worthless here: the switch is a clean job
            job = new.last_job
            self._deliver(
                dataclasses.replace(job, notify=dataclasses.replace(job.notify, clean_jobs=True))
            )

    def _arm_failback(self, delay: float) -> None:
        if self._failback_timer is not None:
            self._failback_timer.cancel()
        self._failback_timer = asyncio.get_running_loop().call_later(
            max(0.0, delay) + 0.001, self._reselect
        )

    # ---------------------------------------------------------------------------- shares

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _enqueue(self, pool: _Pool, share: _Share) -> None:
        if self._stopping.is_set():
            self._finish(pool, share, "lost", "pools stopped")
            return
        if len(pool.queue) >= self.options.max_queued_shares:
            self._finish(pool, share, "lost", "pool down and its share queue is full")
            return
        pool.queue.append(share)
        share.expiry = asyncio.get_running_loop().call_later(
            self.options.queued_share_max_age_s, self._expire, pool, share
        )
        log.info("%s: pool down, share for job %s queued", pool.label, share.job.notify.job_id)

    def _expire(self, pool: _Pool, share: _Share) -> None:
        try:
            pool.queue.remove(share)
        except ValueError:
            return
        self._finish(
            pool, share, "lost", f"pool still down after {self.options.queued_share_max_age_s}s"
        )

    async def _send(self, pool: _Pool, share: _Share) -> None:
        client = pool.client
        if client is None:
            self._enqueue(pool, share)
            return
        try:
            reply = await client.submit(share.job, share.extranonce2, share.ntime, share.nonce)
        except asyncio.CancelledError:
            self._finish(pool, share, "lost", "pools stopped before the reply")
            raise
        except ConnectionLost:
            # sent or not, no answer: try again after reconnecting (a duplicate reject is
            # better than losing a share the pool never saw)
            if self._job_valid(pool, share.job) and not self._stopping.is_set():
                self._enqueue(pool, share)
            else:
                self._finish(pool, share, "lost", "connection lost before the reply")
            return
        except TimeoutError as exc:
            # the client dropped the silent pool; the share goes again after reconnecting
            if self._job_valid(pool, share.job) and not self._stopping.is_set():
                self._enqueue(pool, share)
            else:
                self._finish(pool, share, "lost", str(exc) or "no reply")
            return
        except Exception as exc:  # a bad share value, never pool input
            log.exception("%s: submit failed", pool.label)
            self._finish(pool, share, "lost", f"submit failed: {type(exc).__name__}")
            return
        pool.stats.latency_ms = client.latency_ms
        self._publish(pool)
        if reply.accepted:
            self._finish(pool, share, "accepted", None, reply.latency_ms)
        elif reply.error is not None and reply.error.code == P.ERR_JOB_NOT_FOUND:
            self._finish(pool, share, "stale", str(reply.error), reply.latency_ms)
        else:
            self._finish(pool, share, "rejected", str(reply.error), reply.latency_ms)

    def _finish(
        self,
        pool: _Pool,
        share: _Share,
        outcome: str,
        reason: str | None,
        latency_ms: float | None = None,
    ) -> None:
        s = pool.stats
        if outcome == "accepted":
            s.accepted += 1
        elif outcome == "rejected":
            s.rejected += 1
            s.rejected_reasons[reason or "unknown"] += 1
        elif outcome == "stale":
            s.stale += 1
        else:
            s.lost += 1
        if outcome != "accepted":
            log.info(
                "%s: share for job %s %s: %s", pool.label, share.job.notify.job_id, outcome, reason
            )
        if not share.future.done():
            share.future.set_result(ShareResult(outcome, pool.label, reason, latency_ms))

    def _publish(self, pool: _Pool) -> None:
        if self._state is None:
            return
        try:
            self._state.set_pool(
                pool.label, status=pool.status.value, latency_ms=pool.stats.latency_ms
            )
        except Exception:
            log.exception("state update failed")
