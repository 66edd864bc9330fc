"""State: every nonce counted exactly once, whatever the order of events; hashrate estimates."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agent.state import BUCKETS, FINAL, PENDING, State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def total(snap: dict) -> int:
    return sum(snap["shares"][b] for b in BUCKETS)


class NonceAccounting(RuleBasedStateMachine):
    """Random interleavings of nonces, pool answers, hashes and time; the books must balance."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.state = State(clock=self.clock, window_s=10)
        self.recorded = 0
        self.pending = 0
        self.hw = {0: 0, 1: 0}

    @rule(
        chain=st.sampled_from([0, 1]),
        outcome=st.sampled_from(BUCKETS),
        difficulty=st.floats(min_value=1e-6, max_value=1e6),
    )
    def record(self, chain: int, outcome: str, difficulty: float) -> None:
        self.state.record_nonce(chain, difficulty, outcome, pool="p")
        self.recorded += 1
        self.pending += outcome == PENDING
        self.hw[chain] += outcome == "hw_errors"

    @precondition(lambda self: self.pending > 0)
    @rule(outcome=st.sampled_from(FINAL), chain=st.sampled_from([0, 1]))
    def resolve(self, outcome: str, chain: int) -> None:
        self.state.resolve(outcome, pool="p", chain=chain)
        self.pending -= 1
        self.hw[chain] += outcome == "hw_errors"

    @precondition(lambda self: self.pending == 0)
    @rule(outcome=st.sampled_from(FINAL))
    def resolve_without_pending_is_refused(self, outcome: str) -> None:
        with pytest.raises(ValueError, match="no pending"):
            self.state.resolve(outcome)

    @rule(bad=st.sampled_from(["lost", "", "PENDING"]))
    def unknown_outcomes_are_refused(self, bad: str) -> None:
        with pytest.raises(ValueError):
            self.state.record_nonce(0, 1.0, bad)
        with pytest.raises(ValueError):
            self.state.resolve(bad)

    @rule(chain=st.sampled_from([0, 1]), count=st.integers(0, 10**6))
    def hashes(self, chain: int, count: int) -> None:
        self.state.add_hashes(chain, count)

    @rule(dt=st.floats(min_value=0, max_value=30))
    def time_passes(self, dt: float) -> None:
        self.clock.now += dt

    @invariant()
    def books_balance(self) -> None:
        snap = self.state.snapshot()
        assert snap["nonces"] == self.recorded == total(snap)
        assert snap["shares"]["pending"] == self.pending
        assert sum(c["nonces"] for c in snap["chains"]) == self.recorded
        for c in snap["chains"]:
            assert c["hw_errors"] == self.hw[c["id"]]
            assert c["hashrate_hs"] >= 0
        pools = snap["pools"]
        answered = snap["shares"]["accepted"] + snap["shares"]["rejected"]
        assert sum(p["accepted"] + p["rejected"] for p in pools) == answered


TestNonceAccounting = NonceAccounting.TestCase


def test_a_hw_error_resolved_on_a_chain_not_seen_yet_is_counted_there() -> None:
    """Found by the state machine above: the error went uncounted per chain until the chain
    appeared by other means, and then showed 0 HW errors."""
    state = State(clock=Clock(), window_s=10)
    state.record_nonce(1, 1.0, "pending", pool="p")
    state.resolve("hw_errors", pool="p", chain=0)
    state.add_hashes(0, 0)
    chains = {c["id"]: c for c in state.snapshot()["chains"]}
    assert chains[0]["hw_errors"] == 1 and chains[1]["hw_errors"] == 0


def test_snapshot_has_the_api_status_fields() -> None:
    state = State()
    state.set_chain(0, chips=72, frequency_mhz=384.0, temp_c=55.5)
    state.set_pool("stratum+tcp://a:1", status="alive", latency_ms=12.5)
    state.set_fans([{"rpm": 4200, "duty_pct": 60.0}])
    state.set_guardian("pause", "unprofitable: price below cost")
    snap = state.snapshot()
    assert set(snap) >= {"hashrate_hs", "nonces", "shares", "pools", "chains", "fans",
                         "guardian", "uptime_s"}  # fmt: skip
    assert set(snap["shares"]) == {"accepted", "rejected", "stale", "below_target", "hw_errors",
                                   "pending"}  # fmt: skip
    chain = {"id": 0, "chips": 72, "frequency_mhz": 384.0, "hashrate_hs": 0.0, "nonces": 0,
             "hw_errors": 0, "temp_c": 55.5, "hashes": 0}  # fmt: skip
    assert snap["chains"] == [chain]
    assert snap["pools"] == [{"url": "stratum+tcp://a:1", "status": "alive", "accepted": 0,
                              "rejected": 0, "latency_ms": 12.5}]  # fmt: skip
    assert snap["fans"] == [{"rpm": 4200, "duty_pct": 60.0}]
    assert snap["guardian"] == {"state": "pause", "reason": "unprofitable: price below cost"}


def test_hashrate_from_nonces_is_difficulty_times_65536() -> None:
    clock = Clock()
    state = State(clock=clock, window_s=60)
    # 256-difficulty tickets (BM1485): each one is worth 256 * 65536 hashes
    for _ in range(100):
        clock.now += 0.1
        state.record_nonce(0, 256.0)
    snap = state.snapshot()
    assert snap["hashrate_hs"] == pytest.approx(100 * 256 * 65536 / 10.0)
    # hw errors are not work
    state.record_nonce(0, 256.0, "hw_errors")
    assert state.snapshot()["hashrate_hs"] == pytest.approx(snap["hashrate_hs"])
    # the window forgets old nonces
    clock.now += 120
    assert state.snapshot()["hashrate_hs"] == 0


def test_hashrate_from_counted_hashes_wins_for_the_cpu_board() -> None:
    clock = Clock()
    state = State(clock=clock, window_s=60)
    for _ in range(20):
        clock.now += 1
        state.add_hashes(1, 30_000)
        state.record_nonce(1, 1 / 1024)  # a lucky streak must not move the exact figure
    snap = state.snapshot()
    assert snap["chains"][0]["hashrate_hs"] == pytest.approx(30_000, rel=0.06)
    assert snap["hashes"] == 600_000


def test_bad_arguments() -> None:
    state = State()
    with pytest.raises(ValueError, match="difficulty"):
        state.record_nonce(0, 0.0)
    with pytest.raises(ValueError, match="count"):
        state.add_hashes(0, -1)
    assert state.snapshot()["nonces"] == 0
