"""A Stratum V1 pool for the demo and the tests (asyncio, 127.0.0.1 only).

Server side written here on its own (it shares no code with agent.stratum's client, so the two
check each other). Every share is validated with scrypt and answered with the real error codes:
20 other, 21 job not found (stale), 22 duplicate, 23 low difficulty, 24 unauthorized worker,
25 not subscribed.

Two job sources (agent.emulator.jobsources):
* RandomJobs: random prevhash and coinbase, a notify every job_interval_s, and a "new block"
  (clean_jobs) every block_interval_s or when a share meets the network target.
* NodeJobs: real templates from litecoind over JSON-RPC (getblocktemplate with the segwit and
  mweb rules); a share meeting the network target becomes a block sent with submitblock; the
  tip is polled and a new tip sends clean_jobs.

Difficulty is per connection: FixedDifficulty, ScheduleDifficulty (for tests) or VarDiff (toward
a target share interval). A new difficulty is sent with set_difficulty followed by a notify, and
the pool latches, per connection and job, the difficulty and extranonce1 in force when it sent
that notify (the miner applies set_difficulty and set_extranonce from the next notify).

CLI: python -m agent.emulator.pool --port N [--node-rpc URL --rpc-user U --rpc-password P |
--rpc-cookie FILE]"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent import defaults as D
from agent import scrypt
from agent.emulator.gbt import Template
from agent.emulator.jobsources import (  # re-exported: the pool's API in one place
    GBT_RULES,
    JobSource,
    NodeJobs,
    NodeRPC,
    RandomJobs,
    RPCError,
)
from agent.mining.job import (
    MAX_NTIME_ROLL_S,
    coinbase,
    header80,
    merkle_root,
    sha256d,
    swap_words,
)
from agent.mining.targets import difficulty_to_target

__all__ = [
    "GBT_RULES",
    "FixedDifficulty",
    "JobSource",
    "NodeJobs",
    "NodeRPC",
    "PoolStats",
    "RPCError",
    "RandomJobs",
    "ScheduleDifficulty",
    "ShareError",
    "StratumPool",
    "VarDiff",
    "main",
]

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
ERR_OTHER, ERR_STALE, ERR_DUPLICATE, ERR_LOW_DIFF, ERR_UNAUTHORIZED, ERR_NOT_SUBSCRIBED = range(
    20, 26
)
ERROR_TEXT = {
    ERR_OTHER: "Other/Unknown",
    ERR_STALE: "Job not found",
    ERR_DUPLICATE: "Duplicate share",
    ERR_LOW_DIFF: "Low difficulty share",
    ERR_UNAUTHORIZED: "Unauthorized worker",
    ERR_NOT_SUBSCRIBED: "Not subscribed",
}
MAX_LINE_BYTES = 16 * 1024  # a longer line is hostile: the connection is dropped
MAX_BAD_MESSAGES = 20  # unparseable or bad messages before the connection is dropped
MAX_JOBS = 16  # jobs kept for late shares when no clean_jobs came
WRITE_TIMEOUT_S = 5.0
AGENT_NAME = "doge-agent-pool/0.1"


class ShareError(Exception):
    def __init__(self, code: int, detail: str | None = None) -> None:
        self.code = code
        self.message = detail or ERROR_TEXT[code]
        super().__init__(f"{code} {self.message}")


# ------------------------------------------------------------------------ difficulty policies


@dataclass(frozen=True)
class FixedDifficulty:
    difficulty: float = 1.0

    @property
    def initial(self) -> float:
        return self.difficulty

    def next(self, current: float, accepted: int, times: deque[float], now: float) -> float | None:
        return None


@dataclass(frozen=True)
class ScheduleDifficulty:
    """Difficulties in order: the next one after every `every` accepted shares (then stays)."""

    steps: tuple[float, ...]
    every: int = 1

    @property
    def initial(self) -> float:
        return self.steps[0]

    def next(self, current: float, accepted: int, times: deque[float], now: float) -> float | None:
        if accepted % self.every:
            return None
        i = min(accepted // self.every, len(self.steps) - 1)
        return self.steps[i] if self.steps[i] != current else None


@dataclass(frozen=True)
class VarDiff:
    """Retarget toward one share per target_interval_s, from the last `window` share times."""

    initial: float = 1.0
    target_interval_s: float = D.POOL_VARDIFF_TARGET_INTERVAL_S
    window: int = 8
    minimum: float = 2**-16
    maximum: float = 2**20
    tolerance: float = 1.5  # change only when off by more than this factor

    def next(self, current: float, accepted: int, times: deque[float], now: float) -> float | None:
        if len(times) < 2 or accepted % self.window:
            return None
        interval = max(1e-6, (times[-1] - times[0]) / (len(times) - 1))
        ratio = self.target_interval_s / interval
        if 1 / self.tolerance <= ratio <= self.tolerance:
            return None
        ratio = min(4.0, max(0.25, ratio))  # move gently: a burst is not a new hashrate
        return min(self.maximum, max(self.minimum, current * ratio))


DifficultyPolicy = FixedDifficulty | ScheduleDifficulty | VarDiff


# --------------------------------------------------------------------------------- state


@dataclass
class PoolJob:
    job_id: str
    template: Template
    clean: bool
    submitted: set[tuple[bytes, bytes, int, int]] = field(default_factory=set)


@dataclass
class PoolStats:
    accepted: int = 0
    rejected: Counter[int] = field(default_factory=Counter)
    blocks_found: int = 0
    blocks_submitted: int = 0
    blocks_accepted: int = 0
    block_verdicts: list[str | None] = field(default_factory=list)
    connections: int = 0
    notifies: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "rejected": {str(k): v for k, v in sorted(self.rejected.items())},
            "blocks_found": self.blocks_found,
            "blocks_submitted": self.blocks_submitted,
            "blocks_accepted": self.blocks_accepted,
            "connections": self.connections,
        }


class Session:
    """One miner connection."""

    def __init__(self, pool: StratumPool, reader: asyncio.StreamReader, writer: Any) -> None:
        self.pool = pool
        self.reader = reader
        self.writer = writer
        self.extranonce1 = b""
        self.subscribed = False
        self.extranonce_subscribed = False
        self.workers: set[str] = set()
        self.difficulty = pool.policy.initial
        self.latched: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # job -> (diff, en1)
        self.accepted = 0
        self.share_times: deque[float] = deque(maxlen=getattr(pool.policy, "window", 8))
        self.bad = 0
        self.started = False  # first difficulty + notify sent
        self.closed = False

    async def send(self, obj: dict[str, Any]) -> None:
        if self.closed:
            return
        self.writer.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
        try:
            await asyncio.wait_for(self.writer.drain(), WRITE_TIMEOUT_S)
        except (TimeoutError, ConnectionError):
            self.close()

    async def reply(self, msg_id: Any, result: Any = None, error: ShareError | None = None) -> None:
        err = None if error is None else [error.code, error.message, None]
        await self.send({"id": msg_id, "result": result, "error": err})

    async def notify(self, job: PoolJob, clean: bool | None = None) -> None:
        t = job.template
        self.latched[job.job_id] = (self.difficulty, self.extranonce1)
        while len(self.latched) > 4 * MAX_JOBS:
            self.latched.popitem(last=False)
        self.pool.stats.notifies += 1
        params = [
            job.job_id,
            swap_words(t.prevhash).hex(),
            t.coinb1.hex(),
            t.coinb2.hex(),
            [b.hex() for b in t.branch],
            f"{t.version:08x}",
            f"{t.nbits:08x}",
            f"{t.ntime:08x}",
            job.clean if clean is None else clean,
        ]
        await self.send({"id": None, "method": "mining.notify", "params": params})

    async def set_difficulty(self, difficulty: float) -> None:
        self.difficulty = difficulty
        await self.send({"id": None, "method": "mining.set_difficulty", "params": [difficulty]})

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()


# ------------------------------------------------------------------------------------ pool


class StratumPool:
    """The server. start() binds 127.0.0.1:port (0 picks a free port); stop() closes all."""

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = LOOPBACK,
        source: JobSource | None = None,
        policy: DifficultyPolicy | None = None,
        extranonce1_size: int = D.POOL_EXTRANONCE1_SIZE,
        extranonce2_size: int = D.POOL_EXTRANONCE2_SIZE,
        users: dict[str, str] | None = None,
        accept_suggested_difficulty: bool = True,
    ) -> None:
        if host != LOOPBACK:
            raise ValueError(f"the emulated pool listens on {LOOPBACK} only, not {host!r}")
        if not 1 <= extranonce1_size <= 8 or not 1 <= extranonce2_size <= 8:
            raise ValueError("extranonce sizes must be in 1..8 bytes")
        self.host = host
        self._port = port
        self.source: JobSource = source or RandomJobs()
        self.policy: DifficultyPolicy = policy or FixedDifficulty(1.0)
        self.extranonce1_size = extranonce1_size
        self.extranonce2_size = extranonce2_size
        self.users = users
        self.accept_suggested_difficulty = accept_suggested_difficulty
        self.stats = PoolStats()
        self.jobs: OrderedDict[str, PoolJob] = OrderedDict()
        self.sessions: set[Session] = set()
        self._job_ids = itertools.count(1)
        self._en1_counter = itertools.count(int.from_bytes(os.urandom(2), "big"))
        self._en1_in_use: set[bytes] = set()
        self._released: OrderedDict[bytes, None] = OrderedDict()  # resumable extranonce1s
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._current: PoolJob | None = None
        self.first_job = asyncio.Event()
        self.on_block: Callable[[str | None], Awaitable[None] | None] | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        return self._server.sockets[0].getsockname()[1]

    @property
    def current_job(self) -> PoolJob | None:
        return self._current

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self._port, limit=MAX_LINE_BYTES
        )
        self._tasks.append(asyncio.create_task(self.source.run(self), name="pool-jobs"))
        log.info("emulated pool listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        for s in list(self.sessions):
            s.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> StratumPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------------- jobs out

    async def publish(self, template: Template, clean: bool) -> PoolJob:
        """A new job for everyone; clean drops every older job (their shares become stale)."""
        job = PoolJob(f"{next(self._job_ids):x}", template, clean)
        if clean:
            self.jobs.clear()
        self.jobs[job.job_id] = job
        while len(self.jobs) > MAX_JOBS:
            self.jobs.popitem(last=False)
        self._current = job
        self.first_job.set()
        # concurrently: a stalled miner must not hold up everyone else's new job
        await asyncio.gather(*(s.notify(job) for s in list(self.sessions) if s.started))
        return job

    async def new_block(self) -> None:
        """Random mode: pretend the network found a block (clean_jobs for everyone)."""
        if isinstance(self.source, RandomJobs):
            await self.publish(self.source.template(self, True), clean=True)

    async def _renotify(self, s: Session, clean: bool = False) -> None:
        """Send a session the current template under a fresh job id (after a difficulty or
        extranonce change, which the miner applies from the next notify)."""
        cur = self._current
        if cur is None:
            return
        alias = PoolJob(f"{next(self._job_ids):x}", cur.template, clean)
        self.jobs[alias.job_id] = alias
        while len(self.jobs) > MAX_JOBS:
            self.jobs.popitem(last=False)
        await s.notify(alias)

    async def change_difficulty(self, s: Session, difficulty: float) -> None:
        await s.set_difficulty(difficulty)
        await self._renotify(s)

    async def change_extranonce(self, s: Session) -> bool:
        """Give a session a new extranonce1 (only if it sent extranonce.subscribe)."""
        if not s.extranonce_subscribed:
            return False
        self._en1_in_use.discard(s.extranonce1)
        s.extranonce1 = self._new_extranonce1()
        await s.send({"id": None, "method": "mining.set_extranonce",
                      "params": [s.extranonce1.hex(), self.extranonce2_size]})  # fmt: skip
        await self._renotify(s)
        return True

    def _new_extranonce1(self) -> bytes:
        while True:
            value = next(self._en1_counter) % (1 << (8 * self.extranonce1_size))
            en1 = value.to_bytes(self.extranonce1_size, "big")
            if en1 not in self._en1_in_use and en1 not in self._released:
                self._en1_in_use.add(en1)
                return en1

    # ------------------------------------------------------------------- connections

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s = Session(self, reader, writer)
        self.sessions.add(s)
        self.stats.connections += 1
        try:
            while not s.closed:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    break
                except asyncio.LimitOverrunError:
                    log.warning("pool: line over %d bytes; dropping the connection", MAX_LINE_BYTES)
                    break
                if line.strip():
                    try:
                        await self._message(s, line)
                    except Exception:  # one bad message must not take the connection down
                        log.exception("pool: error handling %r", line[:200])
                        s.bad += 1
                if s.bad > MAX_BAD_MESSAGES:
                    log.warning("pool: too many bad messages; dropping the connection")
                    break
        except ConnectionError:
            pass
        finally:
            s.close()
            self.sessions.discard(s)
            if s.extranonce1:
                self._en1_in_use.discard(s.extranonce1)
                self._released[s.extranonce1] = None
                while len(self._released) > 256:
                    self._released.popitem(last=False)

    async def _message(self, s: Session, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            s.bad += 1
            await s.reply(None, None, ShareError(ERR_OTHER, "Parse error"))
            return
        if not isinstance(msg, dict):
            s.bad += 1
            await s.reply(None, None, ShareError(ERR_OTHER, "Not a JSON object"))
            return
        msg_id, method, params = msg.get("id"), msg.get("method"), msg.get("params", [])
        if not isinstance(params, list):
            s.bad += 1
            await s.reply(msg_id, None, ShareError(ERR_OTHER, "params must be a list"))
            return
        handler = {
            "mining.subscribe": self._subscribe,
            "mining.authorize": self._authorize,
            "mining.extranonce.subscribe": self._extranonce_subscribe,
            "mining.suggest_difficulty": self._suggest_difficulty,
            "mining.submit": self._submit,
        }.get(method if isinstance(method, str) else "")
        if handler is None:
            if msg_id is not None and method is not None:
                await s.reply(msg_id, None, ShareError(ERR_OTHER, f"Unknown method {method!r:.40}"))
            return  # replies from the miner (to nothing we asked) are ignored
        await handler(s, msg_id, params)

    async def _maybe_start(self, s: Session) -> None:
        """Difficulty and the current job, once subscribed and authorized."""
        if s.started or not s.subscribed or not s.workers:
            return
        if not self.first_job.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.first_job.wait(), 30)
        s.started = True
        await s.set_difficulty(s.difficulty)
        if self._current is not None:
            await s.notify(self._current, clean=True)

    async def _subscribe(self, s: Session, msg_id: Any, params: list[Any]) -> None:
        resumed = False
        if len(params) >= 2 and isinstance(params[1], str) and not s.subscribed:
            try:
                wanted = bytes.fromhex(params[1])
            except ValueError:
                wanted = b""
            if wanted in self._released and len(wanted) == self.extranonce1_size:
                del self._released[wanted]
                self._en1_in_use.add(wanted)
                s.extranonce1, resumed = wanted, True
        if not s.subscribed and not resumed:
            s.extranonce1 = self._new_extranonce1()
        s.subscribed = True
        sid = s.extranonce1.hex()
        await s.reply(
            msg_id,
            [[["mining.set_difficulty", sid], ["mining.notify", sid]], sid, self.extranonce2_size],
        )
        await self._maybe_start(s)

    async def _authorize(self, s: Session, msg_id: Any, params: list[Any]) -> None:
        if not params or not isinstance(params[0], str) or not params[0]:
            await s.reply(msg_id, False, ShareError(ERR_OTHER, "authorize needs a worker name"))
            return
        user = params[0]
        password = params[1] if len(params) > 1 and isinstance(params[1], str) else ""
        if self.users is not None and self.users.get(user) != password:
            await s.reply(msg_id, False, ShareError(ERR_UNAUTHORIZED))
            return
        s.workers.add(user)
        await s.reply(msg_id, True)
        await self._maybe_start(s)

    async def _extranonce_subscribe(self, s: Session, msg_id: Any, params: list[Any]) -> None:
        s.extranonce_subscribed = True
        await s.reply(msg_id, True)

    async def _suggest_difficulty(self, s: Session, msg_id: Any, params: list[Any]) -> None:
        try:
            d = float(params[0])
            difficulty_to_target(d)
        except (IndexError, TypeError, ValueError):
            await s.reply(
                msg_id, False, ShareError(ERR_OTHER, "suggest_difficulty needs a number > 0")
            )
            return
        await s.reply(msg_id, True)
        if not self.accept_suggested_difficulty:
            return
        if isinstance(self.policy, VarDiff):
            d = min(self.policy.maximum, max(self.policy.minimum, d))
        if s.started:
            await self.change_difficulty(s, d)
        else:
            s.difficulty = d

    # ------------------------------------------------------------------------ shares

    async def _submit(self, s: Session, msg_id: Any, params: list[Any]) -> None:
        try:
            block = self._check_share(s, params)
        except ShareError as e:
            self.stats.rejected[e.code] += 1
            await s.reply(msg_id, False, e)
            return
        self.stats.accepted += 1
        s.accepted += 1
        now = time.monotonic()
        s.share_times.append(now)
        if block is not None:  # before the reply, so a miner that saw true sees the block
            await self._block(*block)
        await s.reply(msg_id, True)
        new = self.policy.next(s.difficulty, s.accepted, s.share_times, now)
        if new is not None and new != s.difficulty:
            s.share_times.clear()
            await self.change_difficulty(s, new)

    def _check_share(self, s: Session, params: list[Any]) -> tuple[Template, bytes, bytes] | None:
        """Validate a submit; returns (template, header, coinbase) when it is also a block."""
        if not s.subscribed:
            raise ShareError(ERR_NOT_SUBSCRIBED)
        if len(params) < 5 or not all(isinstance(p, str) for p in params[:5]):
            raise ShareError(ERR_OTHER, "submit needs [worker, job_id, extranonce2, ntime, nonce]")
        worker, job_id, en2_hex, ntime_hex, nonce_hex = params[:5]
        if worker not in s.workers:
            raise ShareError(ERR_UNAUTHORIZED)
        job = self.jobs.get(job_id)
        latched = s.latched.get(job_id)
        if job is None or latched is None:
            raise ShareError(ERR_STALE)
        difficulty, en1 = latched
        try:
            en2 = bytes.fromhex(en2_hex)
            ntime = int(ntime_hex, 16) if len(ntime_hex) == 8 else -1
            nonce = int(nonce_hex, 16) if len(nonce_hex) == 8 else -1
        except ValueError:
            raise ShareError(ERR_OTHER, "extranonce2, ntime and nonce must be hex") from None
        if len(en2) != self.extranonce2_size:
            raise ShareError(ERR_OTHER, "Incorrect size of extranonce2")
        if ntime < 0 or nonce < 0:
            raise ShareError(ERR_OTHER, "ntime and nonce must be 8 hex digits")
        t = job.template
        if not t.mintime <= ntime <= t.ntime + MAX_NTIME_ROLL_S:
            raise ShareError(ERR_OTHER, "ntime out of range")
        key = (en1, en2, ntime, nonce)
        if key in job.submitted:
            raise ShareError(ERR_DUPLICATE)
        cb = coinbase(t.coinb1, en1, en2, t.coinb2)
        header = header80(
            t.version, t.prevhash, merkle_root(sha256d(cb), t.branch), ntime, t.nbits, nonce
        )
        value = int.from_bytes(scrypt.pow_hash(header), "little")
        if value > difficulty_to_target(difficulty):
            raise ShareError(ERR_LOW_DIFF)
        job.submitted.add(key)
        if value <= t.network_target:
            return t, header, cb
        return None

    async def _block(self, t: Template, header: bytes, cb: bytes) -> None:
        self.stats.blocks_found += 1
        block = t.block(header, cb)
        try:
            self.stats.blocks_submitted += 1
            verdict = await self.source.found_block(self, t, block)
        except (RPCError, OSError) as e:
            verdict = f"error: {e}"
        self.stats.block_verdicts.append(verdict)
        if verdict is None:
            self.stats.blocks_accepted += 1
            log.info("block at height %d accepted", t.height)
        else:
            log.warning("block at height %d refused: %s", t.height, verdict)
        if self.on_block is not None:
            r = self.on_block(verdict)
            if r is not None:
                await r


# ------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m agent.emulator.pool", description=__doc__.split("\n")[0]
    )
    ap.add_argument(
        "--port", type=int, default=D.POOL_PORT, help="TCP port on 127.0.0.1 (0 = any free)"
    )
    ap.add_argument("--difficulty", type=float, default=D.POOL_DIFFICULTY, help="share difficulty")
    ap.add_argument("--vardiff", type=float, metavar="SECONDS", default=None,
                    help="vary difficulty toward one share per SECONDS per connection")  # fmt: skip
    ap.add_argument("--extranonce2-size", type=int, default=D.POOL_EXTRANONCE2_SIZE)
    ap.add_argument(
        "--job-interval",
        type=float,
        default=D.POOL_JOB_INTERVAL_S,
        help="random mode: s per notify",
    )
    ap.add_argument("--block-interval", type=float, default=None, help="random mode: s per block")
    ap.add_argument("--nbits", default="1e0ffff0", help="random mode: network nBits (hex)")
    ap.add_argument("--node-rpc", default=None, help="litecoind RPC URL: node mode")
    ap.add_argument("--rpc-user")
    ap.add_argument("--rpc-password")
    ap.add_argument("--rpc-cookie", help="litecoind .cookie file instead of user/password")
    ap.add_argument("--payout-script", default=None, help="node mode: payout scriptPubKey hex")
    ap.add_argument(
        "--poll", type=float, default=D.POOL_NODE_POLL_S, help="node mode: tip poll interval, s"
    )
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    source: JobSource
    if args.node_rpc:
        rpc = NodeRPC(args.node_rpc, args.rpc_user, args.rpc_password, args.rpc_cookie)
        payout = bytes.fromhex(args.payout_script) if args.payout_script else None
        source = NodeJobs(rpc, payout_script=payout, poll_s=args.poll)
    else:
        source = RandomJobs(nbits=int(args.nbits, 16), job_interval_s=args.job_interval,
                            block_interval_s=args.block_interval)  # fmt: skip
    policy: DifficultyPolicy = (
        VarDiff(initial=args.difficulty, target_interval_s=args.vardiff)
        if args.vardiff
        else FixedDifficulty(args.difficulty)
    )

    async def serve() -> None:
        pool = StratumPool(port=args.port, source=source, policy=policy,
                           extranonce2_size=args.extranonce2_size)  # fmt: skip
        await pool.start()
        print(f"stratum+tcp://{LOOPBACK}:{pool.port}", flush=True)
        try:
            while True:
                await asyncio.sleep(60)
                log.info("pool stats: %s", pool.stats.as_dict())
        finally:
            await pool.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
