"""The emulated Stratum pool, driven by a tiny scripted client: every error code, difficulty
changes, extranonce changes, session resume, clean_jobs, blocks in random mode; and the pure
template/block helpers of agent.emulator.gbt."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import scrypt
from agent.emulator import gbt
from agent.emulator.pool import (
    FixedDifficulty,
    RandomJobs,
    ScheduleDifficulty,
    StratumPool,
    VarDiff,
)
from agent.mining.job import merkle_root, merkle_root_of, sha256d
from tests.stratum_miniclient import MiniClient

EASY = 2**-12  # 1 hash in 16 is a share: fast to find, and easy to find a miss


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def _started(pool: StratumPool, worker: str = "w.1") -> MiniClient:
    c = MiniClient()
    await c.connect(pool.port)
    r = await c.subscribe()
    assert r["error"] is None
    r = await c.call("mining.authorize", [worker, "x"])
    assert r["result"] is True
    await c.push("mining.notify")
    return c


def _err(reply) -> int | None:
    return None if reply["error"] is None else reply["error"][0]


def test_error_codes_and_accounting():
    async def go():
        async with StratumPool(policy=FixedDifficulty(EASY), source=RandomJobs()) as pool:
            c = MiniClient()
            await c.connect(pool.port)
            en2 = bytes(4)
            r = await c.call("mining.submit", ["w.1", "1", en2.hex(), "00000000", "00000000"])
            assert _err(r) == 25 and r["error"][1] == "Not subscribed"
            await c.subscribe()
            r = await c.call("mining.submit", ["w.1", "1", en2.hex(), "00000000", "00000000"])
            assert _err(r) == 24
            assert (await c.call("mining.authorize", ["w.1", "x"]))["result"] is True
            await c.push("mining.notify")
            assert c.difficulty == EASY and c.job.notify.clean_jobs
            nonce, _ = c.find(en2)
            good = c.submit_params("w.1", en2, nonce)
            r = await c.call("mining.submit", good)
            assert r["result"] is True and r["error"] is None
            assert _err(await c.call("mining.submit", good)) == 22
            bad_nonce, _ = c.find(en2, want=False)
            assert _err(await c.call("mining.submit", c.submit_params("w.1", en2, bad_nonce))) == 23
            assert _err(await c.call("mining.submit", ["w.1", "zz", *good[2:]])) == 21
            assert _err(await c.call("mining.submit", ["w.2", *good[1:]])) == 24
            r = await c.call("mining.submit", ["w.1", good[1], "00", good[3], good[4]])
            assert _err(r) == 20 and "extranonce2" in r["error"][1]
            r = await c.call("mining.submit", ["w.1", good[1], good[2], "00000001", good[4]])
            assert _err(r) == 20 and "ntime" in r["error"][1]
            assert _err(await c.call("mining.submit", ["w.1"])) == 20
            assert _err(await c.call("mining.nonsense", [])) == 20
            # a new block: clean_jobs, and the old job's shares are stale
            old_job = c.job
            await pool.new_block()
            msg = await c.push("mining.notify")
            assert msg["params"][8] is True
            n2, _ = c.find(bytes([1, 0, 0, 0]), job=old_job)
            r = await c.call(
                "mining.submit", c.submit_params("w.1", bytes([1, 0, 0, 0]), n2, old_job)
            )
            assert _err(r) == 21
            nonce, _ = c.find(en2)
            assert (await c.call("mining.submit", c.submit_params("w.1", en2, nonce)))["result"]
            assert pool.stats.accepted == 2
            assert dict(pool.stats.rejected) == {25: 1, 24: 2, 22: 1, 23: 1, 21: 2, 20: 3}
            await c.close()

    run(go())


def test_authorize_with_wrong_password_is_refused():
    async def go():
        async with StratumPool(users={"alice": "secret"}) as pool:
            c = MiniClient()
            await c.connect(pool.port)
            await c.subscribe()
            r = await c.call("mining.authorize", ["alice", "guess"])
            assert r["result"] is False and _err(r) == 24
            assert (await c.call("mining.authorize", ["alice", "secret"]))["result"] is True
            await c.close()

    run(go())


def test_schedule_difficulty_latched_per_job():
    async def go():
        policy = ScheduleDifficulty((EASY, EASY * 2), every=2)
        async with StratumPool(policy=policy) as pool:
            c = await _started(pool)
            first = c.job
            for i in range(2):
                en2 = bytes([i, 0, 0, 0])
                nonce, _ = c.find(en2)
                assert (await c.call("mining.submit", c.submit_params("w.1", en2, nonce)))["result"]
            msg = await c.push("mining.set_difficulty")
            assert msg["params"] == [EASY * 2]
            await c.push("mining.notify")
            assert c.job.difficulty == EASY * 2 and c.job.notify.job_id != first.notify.job_id
            # the old job keeps the difficulty latched when it was sent
            en2 = bytes([9, 0, 0, 0])
            nonce, _ = c.find(en2, job=first)
            r = await c.call("mining.submit", c.submit_params("w.1", en2, nonce, first))
            assert r["result"] is True
            await c.close()

    run(go())


def test_vardiff_raises_difficulty_when_shares_come_fast():
    async def go():
        policy = VarDiff(initial=EASY, target_interval_s=60, window=4)
        async with StratumPool(policy=policy) as pool:
            c = await _started(pool)
            for i in range(4):
                en2 = bytes([i, 0, 0, 0])
                nonce, _ = c.find(en2)
                assert (await c.call("mining.submit", c.submit_params("w.1", en2, nonce)))["result"]
            msg = await c.push("mining.set_difficulty")
            assert msg["params"] == [EASY * 4]  # capped at 4x per retarget
            await c.push("mining.notify")
            en2 = bytes([7, 0, 0, 0])
            nonce, _ = c.find(en2)
            assert (await c.call("mining.submit", c.submit_params("w.1", en2, nonce)))["result"]
            await c.close()

    run(go())


def test_suggest_difficulty_before_authorize():
    async def go():
        async with StratumPool(policy=FixedDifficulty(1)) as pool:
            c = MiniClient()
            await c.connect(pool.port)
            await c.subscribe()
            assert (await c.call("mining.suggest_difficulty", [EASY]))["result"] is True
            r = await c.call("mining.suggest_difficulty", ["lots"])
            assert _err(r) == 20
            await c.call("mining.authorize", ["w", ""])
            await c.push("mining.notify")
            assert c.job.difficulty == EASY
            await c.close()

    run(go())


def test_extranonce_change_and_session_resume():
    async def go():
        async with StratumPool(policy=FixedDifficulty(EASY)) as pool:
            c = await _started(pool)
            assert (await c.call("mining.extranonce.subscribe", []))["result"] is True
            old_en1, old_job = c.extranonce1, c.job
            session = next(iter(pool.sessions))
            assert await pool.change_extranonce(session)
            msg = await c.push("mining.set_extranonce")
            await c.push("mining.notify")
            assert bytes.fromhex(msg["params"][0]) != old_en1 == old_job.extranonce1
            en2 = bytes(4)
            for job in (c.job, old_job):  # new job with the new en1, old job with the old one
                nonce, _ = c.find(en2, job=job)
                r = await c.call("mining.submit", c.submit_params("w.1", en2, nonce, job))
                assert r["result"] is True, r
            en1 = c.extranonce1
            await c.close()
            await asyncio.sleep(0.05)
            c2 = MiniClient()
            await c2.connect(pool.port)
            await c2.subscribe(resume=en1.hex())
            assert c2.extranonce1 == en1  # resumed
            c3 = MiniClient()
            await c3.connect(pool.port)
            await c3.subscribe(resume=en1.hex())
            assert c3.extranonce1 != en1  # in use: a fresh one
            await c2.close()
            await c3.close()

    run(go())


def test_share_meeting_network_target_is_a_block_and_cleans_jobs():
    async def go():
        source = RandomJobs(nbits=0x207FFFFF)  # regtest target: about half the hashes
        async with StratumPool(policy=FixedDifficulty(2**-16), source=source) as pool:
            c = await _started(pool)
            en2 = bytes(4)
            header = c.job.header80(en2, 0)
            nonce = next(
                n
                for n in range(64)
                if int.from_bytes(scrypt.pow_hash(header[:76] + n.to_bytes(4, "little")), "little")
                <= c.job.network_target
            )
            r = await c.call("mining.submit", c.submit_params("w.1", en2, nonce))
            assert r["result"] is True
            msg = await c.push("mining.notify")
            assert msg["params"][8] is True
            assert pool.stats.blocks_found == pool.stats.blocks_accepted == 1
            await c.close()

    run(go())


def test_hostile_lines_drop_the_connection():
    async def go():
        async with StratumPool() as pool:
            c = MiniClient()
            await c.connect(pool.port)
            await c.raw(b"this is not json\n")
            await asyncio.sleep(0.05)
            assert c.pushes.empty() and not c.closed.is_set()  # a parse error: reply, stay
            await c.raw(b"x" * 20000 + b"\n")
            await asyncio.wait_for(c.closed.wait(), 5)
            c2 = MiniClient()  # the pool is still serving
            await c2.connect(pool.port)
            assert (await c2.subscribe())["error"] is None
            await c2.close()

    run(go())


def test_loopback_only():
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        StratumPool(host="0.0.0.0")


# ----------------------------------------------------------------------- gbt (pure)


def _template(n_txs: int = 2, mweb: str | None = None) -> dict:
    txs = []
    for i in range(n_txs):
        data = bytes([i]) * 60
        txs.append({"data": data.hex(), "txid": sha256d(data)[::-1].hex(),
                    "hash": sha256d(data + b"w")[::-1].hex()})  # fmt: skip
    wtxids = [bytes.fromhex(t["hash"])[::-1] for t in txs]
    tpl = {
        "version": 0x20000000,
        "previousblockhash": "11" * 32,
        "transactions": txs,
        "coinbasevalue": 5_000_000_000,
        "bits": "207fffff",
        "height": 17,
        "curtime": 1_700_000_100,
        "mintime": 1_700_000_000,
        "default_witness_commitment": gbt.witness_commitment_script(wtxids).hex(),
    }
    if mweb:
        tpl["mweb"] = mweb
    return tpl


def test_from_gbt_builds_coinbase_branch_and_block():
    tpl = _template(3, mweb="abcd")
    t = gbt.from_gbt(tpl, payout_script=b"\x51", extranonce_size=8)
    en = bytes(range(8))
    cb = t.coinb1 + en + t.coinb2
    # scriptSig starts with the BIP34 height (17 -> 0111) then pushes the extranonces
    script_len = cb[41]
    script = cb[42 : 42 + script_len]
    assert script.startswith(bytes.fromhex("0111") + b"\x08" + en)
    assert bytes.fromhex(tpl["default_witness_commitment"]) in cb
    txids = [sha256d(cb)] + [bytes.fromhex(x["txid"])[::-1] for x in tpl["transactions"]]
    assert merkle_root(sha256d(cb), t.branch) == merkle_root_of(txids)
    header = bytes(80)
    block = t.block(header, cb)
    assert block.startswith(header + b"\x04")  # varint(1 + 3 txs)
    wcb = gbt.coinbase_witness_form(cb)
    assert wcb[4:6] == b"\x00\x01" and wcb.endswith(b"\x01\x20" + bytes(32) + cb[-4:])
    assert block[81 : 81 + len(wcb)] == wcb
    assert block.endswith(b"\x01\xab\xcd")
    assert t.ntime == 1_700_000_100 and t.prevhash == bytes.fromhex("11" * 32)


def test_from_gbt_names_bad_fields():
    tpl = _template()
    del tpl["coinbasevalue"]
    with pytest.raises(gbt.TemplateError, match="coinbasevalue"):
        gbt.from_gbt(tpl, payout_script=b"\x51", extranonce_size=8)
    tpl = _template()
    tpl["transactions"][0]["txid"] = "zz"
    with pytest.raises(gbt.TemplateError, match=r"transactions\[0\]\.txid"):
        gbt.from_gbt(tpl, payout_script=b"\x51", extranonce_size=8)


def test_cli_serves_random_jobs():
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.emulator.pool", "--port", "0", "--difficulty", str(EASY)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("stratum+tcp://127.0.0.1:"), url

        async def go():
            c = MiniClient()
            await c.connect(int(url.rsplit(":", 1)[1]))
            await c.subscribe()
            await c.call("mining.authorize", ["cli", "x"])
            await c.push("mining.notify")
            nonce, _ = c.find(bytes(4))
            r = await c.call("mining.submit", c.submit_params("cli", bytes(4), nonce))
            assert r["result"] is True
            await c.close()

        run(go())
    finally:
        proc.terminate()
        proc.wait(timeout=10)


HOSTILE = [
    b"[]",
    b"{}",
    b"null",
    b'"just a string"',
    b'{"id":1,"method":5}',
    b'{"id":1,"method":"mining.submit","params":{"a":1}}',
    b'{"id":1,"method":"mining.submit","params":[1,2,3,4,5]}',
    b'{"id":1,"method":"mining.submit","params":["w","1","zz","00000000","00000000"]}',
    b'{"id":1,"method":"mining.subscribe","params":[null,5]}',
    b'{"id":2,"method":"mining.subscribe","params":["x","not hex"]}',
    b'{"id":1,"method":"mining.authorize","params":[{"x":1}]}',
    b'{"id":1,"method":"mining.authorize","params":[]}',
    b'{"id":1,"method":"mining.suggest_difficulty","params":[-1]}',
    b'{"id":1,"method":"mining.suggest_difficulty","params":[1e400]}',
    b'{"id":1,"method":"mining.suggest_difficulty","params":[]}',
    b'{"id":[1,2],"method":"mining.extranonce.subscribe"}',
    b'{"id":null,"result":true,"error":null}',
    b"\xff\xfe\x00garbage",
]


def test_hostile_messages_never_break_the_pool():
    async def go():
        async with StratumPool(policy=FixedDifficulty(EASY)) as pool:
            c = MiniClient()
            await c.connect(pool.port)
            for line in HOSTILE:
                await c.raw(line + b"\n")
            await asyncio.sleep(0.1)
            assert not c.closed.is_set()
            # the same connection still mines
            await c.subscribe()
            await c.call("mining.authorize", ["w", "x"])
            await c.push("mining.notify")
            nonce, _ = c.find(bytes(4))
            assert (await c.call("mining.submit", c.submit_params("w", bytes(4), nonce)))["result"]
            await c.close()

    run(go())


_hexish = st.one_of(
    st.text(alphabet="0123456789abcdefxyz", max_size=20), st.integers(), st.none(), st.booleans()
)


@given(params=st.lists(_hexish, max_size=7))
def test_property_submit_params_only_ever_give_share_errors(params):
    from types import SimpleNamespace

    from agent.emulator.pool import PoolJob, ShareError

    pool = StratumPool()
    t = gbt.random_template(nbits=0x1E0FFFF0, extranonce_size=8, ntime=1_700_000_000)
    pool.jobs["1"] = PoolJob("1", t, True)
    s = SimpleNamespace(subscribed=True, workers={"w"}, latched={"1": (EASY, bytes(4))})
    try:
        pool._check_share(s, params)
    except ShareError as e:
        assert 20 <= e.code <= 25
