"""agent.mining.work: extranonce2 allocation, the work-id table, staleness, ntime rolling."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import scrypt
from agent.mining.job import sha256d, swap_words
from agent.mining.targets import difficulty_to_target
from agent.mining.work import ShareCandidate, Stale, WorkSource
from agent.stratum.protocol import Notify


def _notify(job_id: str = "1", clean: bool = False, coinb1: bytes = b"\x01\x00", **kw) -> Notify:
    base = dict(
        job_id=job_id,
        prevhash=bytes(range(32)),
        coinb1=coinb1,
        coinb2=b"\xff\xff",
        merkle_branch=(sha256d(b"tx1"),),
        version=0x20000000,
        nbits=0x207FFFFF,
        ntime=1_700_000_000,
        clean_jobs=clean,
    )
    base.update(kw)
    return Notify(**base)


def test_on_job_and_resolve_round_trip():
    ws = WorkSource(id_space=128, works_per_job=2)
    works = ws.on_job("poolA", _notify(clean=True), 2**-16, b"\xaa\xbb\xcc\xdd", 4)
    assert len(works) == 2 and works[0].clean and not works[1].clean
    assert works[0].header76 != works[1].header76
    w = works[1]
    found = scrypt.scan(w.header76 + bytes(4), 0, 64, w.target)
    assert found, "difficulty 2**-16 means nearly every hash is a share"
    nonce, raw = found[0]
    res = ws.resolve(w.work_id, nonce)
    assert isinstance(res, ShareCandidate)
    assert scrypt.pow_hash(res.header80) == raw
    assert res.header80[4:36] == swap_words(bytes(range(32)))
    assert res.submit_params("me.1") == [
        "me.1", "1", "01000000", "6553f100", f"{nonce:08x}",
    ]  # fmt: skip
    assert res.classify(raw) in ("block", "share")
    assert res.share_target == difficulty_to_target(2**-16)


def test_clean_jobs_retires_everything_older():
    ws = WorkSource(id_space=16)
    old = [ws.on_job("p", _notify("a"), 1, b"\x01", 2)[0], ws.next_work(), ws.next_work()]
    new = ws.on_job("p", _notify("b", clean=True), 1, b"\x01", 2)
    assert new[0].clean
    for w in old:
        r = ws.resolve(w.work_id, 5)
        assert isinstance(r, Stale) and r.reason == "clean_jobs" and r.job_id == "a"
    assert isinstance(ws.resolve(new[0].work_id, 5), ShareCandidate)
    assert ws.resolve(15, 1) == Stale(15, 1, "unknown work id")


def test_non_clean_job_keeps_older_work_live():
    ws = WorkSource(id_space=16)
    a = ws.on_job("p", _notify("a"), 1, b"\x01", 2)[0]
    ws.on_job("p", _notify("b"), 1, b"\x01", 2)
    r = ws.resolve(a.work_id, 7)
    assert isinstance(r, ShareCandidate) and r.job_id == "a"


def test_id_space_bounded_and_eviction_is_stale():
    ws = WorkSource(id_space=4)
    first = ws.on_job("p", _notify(), 1, b"", 2)[0]
    more = [ws.next_work() for _ in range(4)]
    assert all(w is not None for w in more)
    assert len(ws.live_ids) == 4
    assert more[-1].work_id == first.work_id  # reused only after the oldest was evicted
    assert ws.evicted == 1
    r = ws.resolve(first.work_id, 0)
    assert isinstance(r, ShareCandidate) and r.extranonce2 == (4).to_bytes(2, "little")


def test_extranonce2_exhaustion_stops_the_job():
    ws = WorkSource(id_space=512)
    works = ws.on_job("p", _notify(), 1, b"", 1)
    while (w := ws.next_work()) is not None:
        works.append(w)
    assert len(works) == 256
    assert len({w.header76 for w in works}) == 256
    assert ws.exhausted_jobs == 1
    # the same coinbase layout under a new job id continues the counter: still exhausted
    assert ws.on_job("p", _notify("again"), 1, b"", 1) == []


def test_ntime_rolling_is_bounded():
    now = [1000.0]
    ws = WorkSource(id_space=16, ntime_roll_s=60, clock=lambda: now[0])
    ws.on_job("p", _notify(), 1, b"", 4)
    now[0] += 10
    w = ws.next_work()
    assert ws.entry(w.work_id).ntime == 1_700_000_010
    now[0] += 1000
    w = ws.next_work()
    r = ws.resolve(w.work_id, 1)
    assert r.ntime == 1_700_000_060 and r.header80[68:72] == (1_700_000_060).to_bytes(4, "little")


def test_retire_one_pool():
    ws = WorkSource(id_space=16)
    a = ws.on_job("A", _notify("a"), 1, b"\x01", 2)[0]
    b = ws.on_job("B", _notify("b", coinb1=b"\x02"), 1, b"\x02", 2)[0]
    assert ws.retire(pool_id="A", reason="pool down") == 1
    assert ws.resolve(a.work_id, 0).reason == "pool down"
    assert isinstance(ws.resolve(b.work_id, 0), ShareCandidate)
    assert ws.next_work() is not None  # B's job is still current


def test_bad_arguments():
    with pytest.raises(ValueError, match="id_space"):
        WorkSource(id_space=1)
    with pytest.raises(ValueError, match="ntime_roll_s"):
        WorkSource(ntime_roll_s=10_000)
    ws = WorkSource()
    w = ws.on_job("p", _notify(), 1, b"", 4)[0]
    with pytest.raises(ValueError, match="nonce"):
        ws.resolve(w.work_id, 1 << 32)


# ------------------------------------------------------------------------- properties

_event = st.one_of(
    st.tuples(
        st.just("job"),
        st.sampled_from(["A", "B"]),  # pool
        st.sampled_from(["j1", "j2", "j3"]),  # job ids repeat on purpose
        st.sampled_from([b"\x01", b"\x01\x02"]),  # coinb1 variants (layouts repeat too)
        st.sampled_from([b"", b"\xee", b"\xee\xff"]),  # extranonce1 (set_extranonce)
        st.sampled_from([1, 2]),  # extranonce2 size
        st.booleans(),  # clean_jobs
    ),
    st.tuples(st.just("next")),
)


@given(events=st.lists(_event, max_size=120), id_space=st.sampled_from([4, 8, 128]))
def test_property_no_overlap_and_retired_ids_are_stale(events, id_space):
    ws = WorkSource(id_space=id_space, works_per_job=2)
    headers: set[bytes] = set()
    retired_by_clean: dict[int, int] = {}  # work id -> serial of the work that was retired
    for ev in events:
        if ev[0] == "job":
            _, pool, job_id, coinb1, en1, size, clean = ev
            before = {i: ws.entry(i).serial for i in ws.live_ids}
            works = ws.on_job(pool, _notify(job_id, clean, coinb1), 1, en1, size)
            if clean:
                retired_by_clean.update(before)
        else:
            w = ws.next_work()
            works = [] if w is None else [w]
        for w in works:
            # the header bytes uniquely identify the work: never handed out twice
            assert w.header76 not in headers
            headers.add(w.header76)
            retired_by_clean.pop(w.work_id, None)  # id reused for new work
            assert len(ws.live_ids) <= id_space
    for work_id in retired_by_clean:
        r = ws.resolve(work_id, 0)
        assert isinstance(r, Stale), (work_id, r)


def test_set_extranonce_moving_a_byte_cannot_repeat_a_header():
    """en1 aabb + en2 cc000000 spells the same coinbase as en1 aabbcc + en2 000000."""
    ws = WorkSource(id_space=1024)
    headers = [w.header76 for w in ws.on_job("p", _notify(), 1, b"\xaa\xbb", 4)]
    headers += [ws.next_work().header76 for _ in range(0xCC)]
    headers += [w.header76 for w in ws.on_job("p", _notify("2"), 1, b"\xaa\xbb\xcc", 3)]
    headers += [ws.next_work().header76 for _ in range(10)]
    assert len(set(headers)) == len(headers) == 0xCC + 12
