"""Per-client rate limits: a token bucket, and a bounded table of buckets keyed by client.

Pure bookkeeping with an injectable clock, so tests step time by hand and the listening surfaces
(HTTP, cgminer 4028) share one implementation."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

Clock = Callable[[], float]


def _check_params(rate_per_s: float, burst: float) -> None:
    # A zero or negative rate would block a client forever; NaN would compare False everywhere.
    if not (rate_per_s > 0 and rate_per_s != float("inf")):
        raise ValueError(f"rate_per_s must be a positive finite number, got {rate_per_s!r}")
    if not (burst >= 1 and burst != float("inf")):
        raise ValueError(f"burst must be a finite number >= 1, got {burst!r}")


class TokenBucket:
    """`burst` tokens at most, refilled at `rate_per_s`; take(n) spends n tokens if it can.

    A new bucket starts full, so a fresh client can make `burst` requests at once."""

    __slots__ = ("_clock", "_last", "_tokens", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: float, clock: Clock = time.monotonic) -> None:
        _check_params(rate_per_s, burst)
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        # A clock that steps backwards must not drain nor overfill the bucket: treat it as no time.
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate_per_s)
        self._last = now

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def take(self, n: float = 1) -> bool:
        if not n >= 0:  # also rejects NaN
            raise ValueError(f"n must be >= 0, got {n!r}")
        self._refill()
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def full(self) -> bool:
        return self.tokens >= self.burst


class RateLimiter:
    """One TokenBucket per key (a client address), at most `max_clients` of them.

    When a new client arrives at the bound, the client that was seen least recently is forgotten:
    an idle client's bucket would have refilled anyway, so forgetting it costs nothing, and memory
    stays bounded under a flood from many addresses."""

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        max_clients: int = 4096,
        clock: Clock = time.monotonic,
    ) -> None:
        _check_params(rate_per_s, burst)
        if not (isinstance(max_clients, int) and max_clients >= 1):
            raise ValueError(f"max_clients must be an integer >= 1, got {max_clients!r}")
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()
        self.evicted = 0  # counted for metrics: a high figure means max_clients is too small

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._buckets

    def allow(self, key: Hashable, n: float = 1) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            while len(self._buckets) >= self.max_clients:
                self._buckets.popitem(last=False)
                self.evicted += 1
            bucket = TokenBucket(self.rate_per_s, self.burst, self._clock)
            self._buckets[key] = bucket
        else:
            self._buckets.move_to_end(key)
        return bucket.take(n)

    def forget(self, key: Hashable) -> None:
        self._buckets.pop(key, None)
