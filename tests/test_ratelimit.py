"""security.ratelimit: token bucket rates and bursts on a fake clock, bounded client table."""

from __future__ import annotations

import pytest

from agent.security.ratelimit import RateLimiter, TokenBucket


class FakeClock:
    def __init__(self, t: float = 50.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_a_new_bucket_allows_a_burst_then_refuses() -> None:
    b = TokenBucket(rate_per_s=2, burst=5, clock=FakeClock())
    assert [b.take() for _ in range(6)] == [True] * 5 + [False]


def test_refill_follows_the_rate_and_stops_at_burst() -> None:
    clock = FakeClock()
    b = TokenBucket(rate_per_s=2, burst=5, clock=clock)
    while b.take():
        pass
    clock.t += 0.49
    assert not b.take()  # 0.98 tokens
    clock.t += 0.01
    assert b.take() and not b.take()
    clock.t += 1000
    assert b.tokens == 5  # capped at burst however long the client was idle
    assert b.take(5) and not b.take()


def test_sustained_rate_over_a_minute() -> None:
    clock = FakeClock()
    b = TokenBucket(rate_per_s=10, burst=20, clock=clock)
    allowed = 0
    for _ in range(60 * 100):  # 100 tries a second for 60 s
        allowed += b.take()
        clock.t += 0.01
    assert allowed == pytest.approx(20 + 10 * 60, abs=2)


def test_a_clock_stepping_back_neither_drains_nor_fills() -> None:
    clock = FakeClock()
    b = TokenBucket(rate_per_s=1, burst=3, clock=clock)
    b.take(2)
    clock.t -= 100
    assert b.tokens == pytest.approx(1)
    clock.t += 1
    assert b.tokens == pytest.approx(2)


def test_take_more_than_burst_never_succeeds() -> None:
    clock = FakeClock()
    b = TokenBucket(rate_per_s=1, burst=3, clock=clock)
    clock.t += 100
    assert not b.take(4)
    assert b.take(3)


@pytest.mark.parametrize(
    ("rate", "burst"), [(0, 1), (-1, 1), (float("nan"), 1), (float("inf"), 1), (1, 0.5),
                        (1, float("nan"))]
)
def test_bad_parameters_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)
    with pytest.raises(ValueError):
        RateLimiter(rate, burst, 10)


def test_limiter_keeps_one_bucket_per_client() -> None:
    clock = FakeClock()
    lim = RateLimiter(rate_per_s=1, burst=2, max_clients=10, clock=clock)
    assert lim.allow("a") and lim.allow("a") and not lim.allow("a")
    assert lim.allow("b") and lim.allow("b") and not lim.allow("b")
    clock.t += 1
    assert lim.allow("a") and not lim.allow("a")


def test_limiter_memory_is_bounded_and_the_oldest_idle_client_goes() -> None:
    clock = FakeClock()
    lim = RateLimiter(rate_per_s=1, burst=1, max_clients=3, clock=clock)
    for key in ("a", "b", "c"):
        assert lim.allow(key)
    assert not lim.allow("a")  # a is now the most recently seen; b is the oldest idle
    assert lim.allow("d")
    assert "b" not in lim and "a" in lim and len(lim) == 3
    assert not lim.allow("a")  # a kept its (empty) bucket: eviction did not reset it
    for i in range(10_000):
        lim.allow(f"flood-{i}")
    assert len(lim) == 3
    assert lim.evicted == 10_001


def test_limiter_rejects_a_bad_bound() -> None:
    with pytest.raises(ValueError, match="max_clients"):
        RateLimiter(1, 1, 0)
