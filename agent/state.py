"""The one live snapshot every surface reads (status page, /api/status, /metrics, cgminer, LEDs).

Producers call the small methods below; surfaces call snapshot(). Every nonce from the hashing side
is counted exactly once: record_nonce() puts it in `pending` or a final bucket, resolve() moves one
from `pending` to a final bucket, and nothing else touches the buckets, so
    nonces == accepted + rejected + stale + below_target + hw_errors + pending
holds by construction. A lock makes the methods safe from the C-core threads too.

Beyond the fields DESIGN.md lists, the snapshot carries `chips` (per-chip rows: chain, id, nonces,
hw_errors, hashrate_hs, frequency_mhz, temp_c, status), `tuner` and `thermal` ({state, reason}),
`events` (recent {time, kind, message}, newest first), `version` and `time` (wall clock)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent import __version__
from agent import defaults as D
from agent.mining.targets import HASHES_PER_DIFF1

PENDING = "pending"
FINAL = ("accepted", "rejected", "stale", "below_target", "hw_errors")
BUCKETS = (*FINAL, PENDING)


class RateWindow:
    """Amount per second over the last `window_s` seconds, in 1-second buckets (bounded memory)."""

    def __init__(self, window_s: float, now: float) -> None:
        self.window_s = window_s
        self.started = now
        self._buckets: deque[list[float]] = deque()  # [second, amount]

    def add(self, amount: float, now: float) -> None:
        second = float(int(now))
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += amount
        else:
            self._buckets.append([second, amount])
        self._trim(now)

    def rate(self, now: float) -> float:
        self._trim(now)
        # Young windows divide by their age, so the estimate is right from the first seconds.
        span = min(self.window_s, now - self.started)
        if span <= 0:
            return 0.0
        return sum(amount for _, amount in self._buckets) / span

    def _trim(self, now: float) -> None:
        while self._buckets and self._buckets[0][0] < now - self.window_s:
            self._buckets.popleft()


@dataclass
class ChipState:
    id: int
    by_nonces: RateWindow
    nonces: int = 0
    hw_errors: int = 0
    frequency_mhz: float | None = None
    temp_c: float | None = None
    status: str = "ok"


@dataclass
class ChainState:
    id: int
    by_nonces: RateWindow  # nonces x difficulty x 65536: what chips' work is worth
    by_hashes: RateWindow  # hashes counted directly
    chips: int = 0
    frequency_mhz: float = 0.0
    temp_c: float | None = None
    nonces: int = 0
    hw_errors: int = 0
    hashes: int = 0  # hashes counted directly (CPU board); chips only report nonces
    counts_hashes: bool = False
    per_chip: dict[int, ChipState] | None = None  # filled once a nonce or set_chip names a chip

    def hashrate_hs(self, now: float) -> float:
        # A board that counts its hashes knows its rate exactly; chips are estimated from nonces.
        window = self.by_hashes if self.counts_hashes else self.by_nonces
        return window.rate(now)


@dataclass
class PoolState:
    url: str
    status: str = "disconnected"
    accepted: int = 0
    rejected: int = 0
    latency_ms: float | None = None


class State:
    """Counters, per-chain data, pools, fans and guardian decision, read through snapshot()."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        window_s: float = D.HASHRATE_WINDOW_S,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._window_s = window_s
        self._lock = threading.Lock()
        self._started = clock()
        self.nonces = 0
        self.buckets: dict[str, int] = dict.fromkeys(BUCKETS, 0)
        self.chains: dict[int, ChainState] = {}
        self.pools: dict[str, PoolState] = {}
        self.fans: list[dict[str, Any]] = []
        self.guardian: dict[str, str] = {"state": "mine", "reason": "starting"}
        self.tuner: dict[str, str] = {"state": "idle", "reason": "starting"}
        self.thermal: dict[str, str] = {"state": "starting", "reason": "starting"}
        self.events: deque[dict[str, Any]] = deque(maxlen=D.WEB_EVENTS_KEPT)
        self.task_restarts = 0  # tasks of the service that died and were restarted

    # ------------------------------------------------------------------ hashing side

    def _chain(self, chain: int) -> ChainState:
        c = self.chains.get(chain)
        if c is None:
            # Windows start with the State: the first nonce of a chain took work from boot on.
            c = ChainState(
                id=chain,
                by_nonces=RateWindow(self._window_s, self._started),
                by_hashes=RateWindow(self._window_s, self._started),
            )
            self.chains[chain] = c
        return c

    def set_chain(
        self,
        chain: int,
        *,
        chips: int | None = None,
        frequency_mhz: float | None = None,
        temp_c: float | None = None,
    ) -> None:
        """Declare or update a chain's static data and latest temperature (None = unknown)."""
        with self._lock:
            c = self._chain(chain)
            if chips is not None:
                c.chips = chips
            if frequency_mhz is not None:
                c.frequency_mhz = frequency_mhz
            c.temp_c = temp_c

    def _chip(self, c: ChainState, chip: int) -> ChipState:
        if c.per_chip is None:
            c.per_chip = {}
        s = c.per_chip.get(chip)
        if s is None:
            s = ChipState(id=chip, by_nonces=RateWindow(self._window_s, self._started))
            c.per_chip[chip] = s
        return s

    def set_chip(
        self,
        chain: int,
        chip: int,
        *,
        frequency_mhz: float | None = None,
        temp_c: float | None = None,
        status: str | None = None,
    ) -> None:
        """Per-chip data the tuner or the chain driver knows (frequency, temperature, status)."""
        with self._lock:
            s = self._chip(self._chain(chain), chip)
            if frequency_mhz is not None:
                s.frequency_mhz = frequency_mhz
            if temp_c is not None:
                s.temp_c = temp_c
            if status is not None:
                s.status = status

    def record_nonce(
        self,
        chain: int,
        difficulty: float,
        outcome: str = PENDING,
        pool: str | None = None,
        chip: int | None = None,
    ) -> None:
        """Count one nonce from the hashing side; it met `difficulty` (the ticket difficulty).

        outcome is `pending` until shares.py decides, or a final bucket when it is known at once.
        A hw_errors nonce represents no work, so it does not feed the hashrate estimate."""
        if outcome not in BUCKETS:
            raise ValueError(f"outcome must be one of {', '.join(BUCKETS)}, got {outcome!r}")
        if not difficulty > 0:
            raise ValueError(f"difficulty must be > 0, got {difficulty!r}")
        with self._lock:
            c = self._chain(chain)
            self.nonces += 1
            self.buckets[outcome] += 1
            c.nonces += 1
            s = self._chip(c, chip) if chip is not None else None
            if s is not None:
                s.nonces += 1
            if outcome == "hw_errors":
                c.hw_errors += 1
                if s is not None:
                    s.hw_errors += 1
            else:
                c.by_nonces.add(difficulty * HASHES_PER_DIFF1, self._clock())
                if s is not None:
                    s.by_nonces.add(difficulty * HASHES_PER_DIFF1, self._clock())
            self._count_pool(outcome, pool)

    def resolve(
        self,
        outcome: str,
        pool: str | None = None,
        chain: int | None = None,
        chip: int | None = None,
    ) -> None:
        """Move one nonce from pending to a final bucket (a pool's answer, a stale job...)."""
        if outcome not in FINAL:
            raise ValueError(f"outcome must be one of {', '.join(FINAL)}, got {outcome!r}")
        with self._lock:
            if self.buckets[PENDING] <= 0:
                raise ValueError("no pending nonce to resolve")
            self.buckets[PENDING] -= 1
            self.buckets[outcome] += 1
            if outcome == "hw_errors" and chain is not None:
                # a chain not seen yet is made here, as record_nonce does: its HW error counts
                c = self._chain(chain)
                c.hw_errors += 1
                if chip is not None:
                    self._chip(c, chip).hw_errors += 1
            self._count_pool(outcome, pool)

    def _count_pool(self, outcome: str, pool: str | None) -> None:
        if pool is None or outcome not in ("accepted", "rejected"):
            return
        p = self.pools.setdefault(pool, PoolState(url=pool))
        if outcome == "accepted":
            p.accepted += 1
        else:
            p.rejected += 1

    def add_hashes(self, chain: int, count: int) -> None:
        """Hashes a board counted itself (the CPU board); its hashrate then comes from these."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        with self._lock:
            c = self._chain(chain)
            c.counts_hashes = True
            c.hashes += count
            c.by_hashes.add(count, self._clock())

    # ------------------------------------------------------------------ persisted counters

    def export_counters(self) -> dict[str, Any]:
        """The cumulative counters, for agent.persist (uptime and rates are not persisted)."""
        with self._lock:
            return {
                "nonces": self.nonces,
                "buckets": dict(self.buckets),
                "pools": {
                    url: {"accepted": p.accepted, "rejected": p.rejected}
                    for url, p in self.pools.items()
                },
                "chains": {
                    str(c.id): {"nonces": c.nonces, "hw_errors": c.hw_errors, "hashes": c.hashes}
                    for c in self.chains.values()
                },
            }

    def import_counters(self, saved: dict[str, Any]) -> None:
        """Add counters saved by a previous run to this one's (ValueError if they are not
        check_counters()-good; nothing is changed then).

        A nonce still pending when they were saved was submitted and never answered (the agent
        stopped or was killed first): its answer is lost for good, so it is counted `stale` here.
        That keeps nonces == sum(buckets) true and makes no nonce vanish."""
        problem = check_counters(saved)
        if problem:
            raise ValueError(problem)
        buckets = dict(saved["buckets"])
        buckets["stale"] += buckets.pop(PENDING)
        with self._lock:
            self.nonces += saved["nonces"]
            for name, n in buckets.items():
                self.buckets[name] += n
            for url, p in saved["pools"].items():
                ps = self.pools.setdefault(url, PoolState(url=url))
                ps.accepted += p["accepted"]
                ps.rejected += p["rejected"]
            for key, c in saved["chains"].items():
                cs = self._chain(int(key))
                cs.nonces += c["nonces"]
                cs.hw_errors += c["hw_errors"]
                cs.hashes += c["hashes"]

    # ------------------------------------------------------------------ other producers

    def set_pool(
        self, url: str, *, status: str | None = None, latency_ms: float | None = None
    ) -> None:
        with self._lock:
            p = self.pools.setdefault(url, PoolState(url=url))
            if status is not None:
                p.status = status
            if latency_ms is not None:
                p.latency_ms = latency_ms

    def set_fans(self, fans: list[dict[str, Any]]) -> None:
        """Each fan as {"rpm": int | None, "duty_pct": float}."""
        with self._lock:
            self.fans = [dict(f) for f in fans]

    def set_guardian(self, state: str, reason: str) -> None:
        with self._lock:
            self.guardian = {"state": state, "reason": reason}

    def set_tuner(self, state: str, reason: str) -> None:
        with self._lock:
            self.tuner = {"state": state, "reason": reason}

    def set_thermal(self, state: str, reason: str) -> None:
        with self._lock:
            self.thermal = {"state": state, "reason": reason}

    def add_event(self, kind: str, message: str) -> None:
        """A line for the status page's recent events (kept: the last D.WEB_EVENTS_KEPT).
        `message` is shown to anyone who may read: never put a secret in it."""
        with self._lock:
            self.events.append({"time": self._wall(), "kind": kind, "message": message})

    # ------------------------------------------------------------------ the snapshot

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-ready data: the /api/status document."""
        with self._lock:
            now = self._clock()
            chains = [
                {
                    "id": c.id,
                    "chips": c.chips,
                    "frequency_mhz": c.frequency_mhz,
                    "hashrate_hs": c.hashrate_hs(now),
                    "nonces": c.nonces,
                    "hw_errors": c.hw_errors,
                    "temp_c": c.temp_c,
                    "hashes": c.hashes,
                }
                for c in sorted(self.chains.values(), key=lambda c: c.id)
            ]
            # Per-chip rows, flat (chain, id): only chips that reported a nonce or were set_chip'ed.
            chips = [
                {
                    "chain": c.id,
                    "id": s.id,
                    "nonces": s.nonces,
                    "hw_errors": s.hw_errors,
                    "hashrate_hs": s.by_nonces.rate(now),
                    "frequency_mhz": s.frequency_mhz,
                    "temp_c": s.temp_c,
                    "status": s.status,
                }
                for c in sorted(self.chains.values(), key=lambda c: c.id)
                for s in sorted((c.per_chip or {}).values(), key=lambda s: s.id)
            ]
            return {
                "hashrate_hs": sum(c["hashrate_hs"] for c in chains),
                "nonces": self.nonces,
                "shares": dict(self.buckets),
                "pools": [vars(p).copy() for p in self.pools.values()],
                "chains": chains,
                "fans": [dict(f) for f in self.fans],
                "guardian": dict(self.guardian),
                "uptime_s": now - self._started,
                "hashes": sum(c["hashes"] for c in chains),
                "chips": chips,
                "version": __version__,
                "time": self._wall(),
                "tuner": dict(self.tuner),
                "thermal": dict(self.thermal),
                "events": [dict(e) for e in reversed(self.events)],  # newest first
                "task_restarts": self.task_restarts,
            }


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def check_counters(d: Any) -> str | None:
    """None when `d` is what export_counters() makes (types, ranges, the nonce invariant);
    otherwise what is wrong, for a warning."""
    if not isinstance(d, dict):
        return "counters: not an object"
    if not _count(d.get("nonces")):
        return "counters.nonces: not a count"
    buckets = d.get("buckets")
    if not isinstance(buckets, dict) or set(buckets) != set(BUCKETS):
        return f"counters.buckets: must hold exactly {', '.join(BUCKETS)}"
    for name, n in buckets.items():
        if not _count(n):
            return f"counters.buckets.{name}: not a count"
    if sum(buckets.values()) != d["nonces"]:
        return "counters: nonces differs from the sum of the buckets"
    pools = d.get("pools")
    if not isinstance(pools, dict):
        return "counters.pools: not an object"
    for url, p in pools.items():
        if not isinstance(p, dict) or not all(_count(p.get(k)) for k in ("accepted", "rejected")):
            return f"counters.pools[{url!r}]: needs accepted and rejected counts"
    chains = d.get("chains")
    if not isinstance(chains, dict):
        return "counters.chains: not an object"
    for key, c in chains.items():
        if not (key.isdigit() and len(key) < 4):
            return f"counters.chains[{key!r}]: not a chain number"
        if not isinstance(c, dict) or not all(
            _count(c.get(k)) for k in ("nonces", "hw_errors", "hashes")
        ):
            return f"counters.chains[{key!r}]: needs nonces, hw_errors and hashes counts"
    return None
