"""End to end with a real Litecoin Core: two regtest nodes, the emulated pool in node mode, and a
minimal Stratum miner (work.py + agent.scrypt.scan) until litecoind accepts >= 20 blocks.

Recipe and pitfalls: reference/stratum-and-regtest.md §5. Two nodes because litecoind 0.21's
getblocktemplate refuses with -9 without a peer; blocks generated first so the miner leaves
initial block download (-10) and has mature coins for the wallet transactions that put a real
merkle branch and witness commitment into the templates. MWEB stays out: the chain never gets
near height 432 (it is still DEFINED below 144)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agent import scrypt
from agent.emulator.gbt import OP_TRUE_SCRIPT, POOL_TAG, from_gbt
from agent.emulator.pool import (
    GBT_RULES,
    FixedDifficulty,
    NodeJobs,
    NodeRPC,
    RPCError,
    StratumPool,
)
from agent.mining.job import header80, merkle_root, sha256d
from agent.mining.work import ShareCandidate, WorkSource
from tests.conftest import require_peer
from tests.stratum_miniclient import MiniClient, notify_from_params

pytestmark = pytest.mark.peers

BLOCKS_WANTED = 20
MINING_TIMEOUT_S = 60.0
# the emulated chips return ~30 nonces/s in all; a loaded machine slows the whole loop
EMULATED_TIMEOUT_S = 180.0
RPC_USER, RPC_PASSWORD = "doge", "regtest-only"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary() -> list[str]:
    wrapper = require_peer("litecoind")
    # The Debian wrapper writes ~/.litecoin before exec'ing the real daemon (§5.1): call the
    # real binary when we can find it; HOME points at the scratch dir either way.
    real = Path("/usr/lib/litecoin/litecoind")
    return [str(real)] if real.exists() else [wrapper]


class Node:
    def __init__(self, name: str, root: Path, extra: list[str]) -> None:
        self.dir = root / name
        self.dir.mkdir()
        self.rpc_port = _free_port()
        self.log = open(self.dir / "stdout.log", "wb")  # noqa: SIM115  closed in stop()
        args = [
            *_binary(),
            "-regtest",
            f"-datadir={self.dir}",
            "-dnsseed=0",
            "-listenonion=0",
            "-discover=0",
            "-upnp=0",
            "-rpcbind=127.0.0.1",
            "-rpcallowip=127.0.0.1",
            f"-rpcport={self.rpc_port}",
            f"-rpcuser={RPC_USER}",
            f"-rpcpassword={RPC_PASSWORD}",
            "-printtoconsole=0",
            *extra,
        ]
        env = {**os.environ, "HOME": str(root)}
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.rpc = NodeRPC(
            f"http://127.0.0.1:{self.rpc_port}/", RPC_USER, RPC_PASSWORD, timeout_s=30
        )

    def call(self, method: str, *params):
        return self.rpc.call(method, *params)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"litecoind exited with {self.proc.returncode}: {self.dir}")
            try:
                self.call("getblockcount")
                return
            except (OSError, RPCError):  # not listening yet, or -28 warming up
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self.call("stop")
                    self.proc.wait(timeout=15)
                except (OSError, RPCError, subprocess.TimeoutExpired):
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            self.log.close()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    p2p = _free_port()
    started: list[Node] = []
    try:
        peer = Node(
            "peer",
            tmp_path,
            ["-listen=1", f"-bind=127.0.0.1:{p2p}", "-connect=0", "-disablewallet"],
        )
        started.append(peer)
        miner = Node(
            "miner",
            tmp_path,
            ["-listen=0", f"-connect=127.0.0.1:{p2p}", "-fallbackfee=0.0001", "-keypool=1"],
        )
        started.append(miner)
        peer.wait_ready()
        miner.wait_ready()
        deadline = time.monotonic() + 20
        while miner.call("getconnectioncount") < 1:  # gbt needs a peer (-9)
            assert time.monotonic() < deadline, "the miner node never connected to its peer"
            time.sleep(0.05)
        yield peer, miner
    finally:
        for node in reversed(started):
            node.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)


async def _mine(port: int, miner: Node, peer: Node, target_height: int) -> dict:
    """A minimal miner: the scripted client feeds notifies to WorkSource, scans nonces with the
    C core and submits what resolves to a share, until both nodes reach target_height."""
    c = MiniClient()
    await c.connect(port)
    await c.subscribe()
    assert (await c.call("mining.authorize", ["regtest.1", "x"]))["result"] is True
    ws = WorkSource(id_space=1024)
    work = None
    cursor = 0
    submitted = accepted = 0
    counts = {"miner": 0, "peer": 0}
    while True:
        # server pushes first: a notify replaces the work (clean_jobs retires the old)
        while not c.pushes.empty() or work is None:
            msg = await asyncio.wait_for(c.pushes.get(), 10)
            c.apply(msg)
            if msg["method"] == "mining.notify":
                n = notify_from_params(msg["params"])
                works = ws.on_job("local", n, c.difficulty, c.extranonce1, c.extranonce2_size)
                work, cursor = works[0], 0
        for nonce, raw in scrypt.scan(work.header76 + bytes(4), cursor, 4, work.target):
            cand = ws.resolve(work.work_id, nonce)
            assert isinstance(cand, ShareCandidate)
            assert scrypt.pow_hash(cand.header80) == raw  # the header we rebuild is the one hashed
            r = await c.call("mining.submit", cand.submit_params("regtest.1"))
            submitted += 1
            accepted += r["result"] is True
            if cand.classify(raw) == "block":
                work = None  # wait for the pool's next template (a new tip sends clean_jobs)
                counts = {
                    "miner": await asyncio.to_thread(miner.call, "getblockcount"),
                    "peer": await asyncio.to_thread(peer.call, "getblockcount"),
                }
                break
        cursor += 4
        if cursor >= 1 << 16 and work is not None:
            work, cursor = ws.next_work(), 0
        if min(counts.values()) >= target_height:
            break
        await asyncio.sleep(0)
    await c.close()
    return {"submitted": submitted, "accepted": accepted, **counts}


def _check_block_proposal(miner: Node) -> None:
    """submitblock quietly adds a missing coinbase witness (§6 pitfall 7), so judge the pool's
    block assembly with proposal mode (everything but PoW), with and without the witness."""
    tpl = miner.call("getblocktemplate", GBT_RULES)
    t = from_gbt(tpl, payout_script=OP_TRUE_SCRIPT, extranonce_size=8)
    assert t.witness and len(t.tx_data) == 3 and t.branch
    cb = t.coinb1 + bytes(8) + t.coinb2
    header = header80(
        t.version, t.prevhash, merkle_root(sha256d(cb), t.branch), t.ntime, t.nbits, 0
    )
    assert (
        miner.call("getblocktemplate", {"mode": "proposal", "data": t.block(header, cb).hex()})
        is None
    )
    bare = replace(t, witness=False).block(header, cb)  # coinbase without its reserved value
    verdict = miner.call("getblocktemplate", {"mode": "proposal", "data": bare.hex()})
    assert verdict == "bad-witness-nonce-size"


def test_litecoind_accepts_blocks_found_through_the_pool(nodes):
    peer, miner = nodes
    t0 = time.monotonic()
    miner.call("createwallet", "w")  # 0.21 creates no default wallet
    wallet_s = time.monotonic() - t0
    addr = miner.call("getnewaddress")
    t_gen = time.monotonic()
    miner.call("generatetoaddress", 101, addr)
    gen_s = time.monotonic() - t_gen  # leaves IBD (-10) and matures block 1's coinbase
    for _ in range(3):  # wallet transactions: templates get a merkle branch and witness data
        miner.call("sendtoaddress", miner.call("getnewaddress"), 1)
    start = miner.call("getblockcount")
    _check_block_proposal(miner)
    assert miner.call("getmempoolinfo")["size"] == 3
    setup_s = time.monotonic() - t0

    async def go() -> tuple[dict, StratumPool]:
        source = NodeJobs(miner.rpc, poll_s=0.05)
        pool = StratumPool(source=source, policy=FixedDifficulty(2**-16))
        async with pool:
            result = await asyncio.wait_for(
                _mine(pool.port, miner, peer, start + BLOCKS_WANTED), MINING_TIMEOUT_S
            )
        return result, pool

    t1 = time.monotonic()
    result, pool = asyncio.run(go())
    mining_s = time.monotonic() - t1
    end_miner = miner.call("getblockcount")
    deadline = time.monotonic() + 10
    while peer.call("getbestblockhash") != miner.call("getbestblockhash"):
        assert time.monotonic() < deadline, "the peer never caught up with the miner's tip"
        time.sleep(0.05)
    end_peer = peer.call("getblockcount")
    print(
        f"\nregtest: setup {setup_s:.2f} s (createwallet {wallet_s:.2f} s, "
        f"generate 101: {gen_s:.2f} s), mining {mining_s:.2f} s, "
        f"{end_miner - start} blocks, pool stats {pool.stats.as_dict()}, client {result}, "
        f"verdicts {pool.stats.block_verdicts}"
    )
    assert end_miner - start >= BLOCKS_WANTED
    assert end_peer - start >= BLOCKS_WANTED
    assert pool.stats.blocks_accepted >= BLOCKS_WANTED
    # every block above `start` came through the pool: its coinbase carries the pool's tag
    tag = POOL_TAG.hex()
    first = miner.call("getblock", miner.call("getblockhash", start + 1), 2)
    assert tag in first["tx"][0]["vin"][0]["coinbase"]
    assert len(first["tx"]) == 4  # the three wallet transactions went into the first block
    assert first["tx"][0]["vin"][0]["txinwitness"] == ["00" * 32]  # the witness reserved value
    assert miner.call("getmempoolinfo")["size"] == 0
    for h in range(start + 1, end_miner + 1):
        cb = miner.call("getblock", miner.call("getblockhash", h), 2)["tx"][0]
        assert tag in cb["vin"][0]["coinbase"], h


def test_fresh_chain_first_block_built_without_gbt(nodes):
    """A fresh regtest chain is "in initial download" (gbt answers -10): the pool builds the
    first template by hand, and once that block is in, gbt takes over. No wallet loaded: the
    pool pays to OP_TRUE."""
    peer, miner = nodes
    with pytest.raises(RPCError) as err:
        miner.call("getblocktemplate", GBT_RULES)
    assert err.value.code == -10

    async def go() -> StratumPool:
        pool = StratumPool(source=NodeJobs(miner.rpc, poll_s=0.05), policy=FixedDifficulty(2**-16))
        async with pool:
            await asyncio.wait_for(_mine(pool.port, miner, peer, 3), MINING_TIMEOUT_S)
        return pool

    pool = asyncio.run(go())
    assert miner.call("getblockcount") >= 3
    assert pool.stats.blocks_accepted >= 3
    assert miner.call("getblocktemplate", GBT_RULES)["height"] >= 4  # out of IBD now
    cb = miner.call("getblock", miner.call("getblockhash", 1), 2)["tx"][0]
    assert cb["vout"][0]["scriptPubKey"]["hex"] == OP_TRUE_SCRIPT.hex()


def test_mweb_activation_block_through_the_pool(nodes):
    """MWEB handled, not only kept out: generate to 431, peg in (the first MWEB block needs one,
    §5.5), then the pool's blocks 432.. carry the HogEx and 01 || mweb and litecoind takes them."""
    peer, miner = nodes
    miner.call("createwallet", "w")
    miner.call("generatetoaddress", 431, miner.call("getnewaddress"))
    miner.call("sendtoaddress", miner.call("getnewaddress", "", "mweb"), 1)  # the peg-in

    async def go() -> StratumPool:
        pool = StratumPool(source=NodeJobs(miner.rpc, poll_s=0.05), policy=FixedDifficulty(2**-16))
        async with pool:
            await asyncio.wait_for(_mine(pool.port, miner, peer, 434), MINING_TIMEOUT_S)
        return pool

    pool = asyncio.run(go())
    assert pool.stats.blocks_accepted >= 3
    assert miner.call("getblockchaininfo")["softforks"]["mweb"]["active"] is True
    block = miner.call("getblock", miner.call("getblockhash", 432), 2)
    assert POOL_TAG.hex() in block["tx"][0]["vin"][0]["coinbase"]
    assert len(block["tx"]) >= 3  # coinbase, the peg-in, the HogEx
    assert peer.call("getblockcount") >= 434


def test_pool_cli_in_node_mode(nodes):
    """The demo command: python -m agent.emulator.pool --node-rpc ... mines a fresh chain."""
    peer, miner = nodes
    cmd = [
        sys.executable, "-m", "agent.emulator.pool", "--port", "0",
        "--node-rpc", f"http://127.0.0.1:{miner.rpc_port}/",
        "--rpc-user", RPC_USER, "--rpc-password", RPC_PASSWORD,
        "--poll", "0.05", "--difficulty", str(2**-16),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("stratum+tcp://127.0.0.1:"), url
        port = int(url.rsplit(":", 1)[1])
        result = asyncio.run(asyncio.wait_for(_mine(port, miner, peer, 2), MINING_TIMEOUT_S))
        assert result["miner"] >= 2 and result["peer"] >= 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _agent_mines_blocks(nodes, tmp_path: Path, board: str, difficulty: float, bound_s: float):
    """`doge-agent run` with [board] `board` (a TOML body) against the pool in node mode, until
    both nodes have accepted BLOCKS_WANTED blocks it found."""
    peer, miner = nodes
    miner.call("createwallet", "w")
    miner.call("generatetoaddress", 101, miner.call("getnewaddress"))
    for _ in range(3):  # a real merkle branch and witness commitment in the templates
        miner.call("sendtoaddress", miner.call("getnewaddress"), 1)
    start = miner.call("getblockcount")
    pool_cmd = [
        sys.executable, "-m", "agent.emulator.pool", "--port", "0",
        "--node-rpc", f"http://127.0.0.1:{miner.rpc_port}/",
        "--rpc-user", RPC_USER, "--rpc-password", RPC_PASSWORD,
        "--poll", "0.05", "--difficulty", str(difficulty),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOGE_AGENT", "NOTIFY_"))}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    pool = subprocess.Popen(pool_cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)  # fmt: skip
    agent = None
    try:
        assert pool.stdout is not None
        url = pool.stdout.readline().strip()
        assert url.startswith("stratum+tcp://127.0.0.1:"), url
        conf = tmp_path / "agent.toml"
        conf.write_text(
            f'[agent]\nstate_dir = "{tmp_path}"\n'
            '[api]\nhttp_listen = "127.0.0.1:0"\ncgminer_listen = "127.0.0.1:0"\n'
            f'[[pools]]\nurl = "{url}"\nuser = "regtest.rig"\npassword = "x"\n'
            f'[board]\n{board}ticket_difficulty = {difficulty}\n'
        )
        # the log goes to a file: an undrained pipe would fill and block the agent mid-write
        log_file = (tmp_path / "agent.log").open("w")
        agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(conf)],
                                 stderr=log_file, text=True, env=env)  # fmt: skip
        deadline = time.monotonic() + bound_s
        while min(miner.call("getblockcount"), peer.call("getblockcount")) < start + BLOCKS_WANTED:
            assert agent.poll() is None, "the agent exited while mining"
            assert time.monotonic() < deadline, f"only {miner.call('getblockcount') - start} blocks"
            time.sleep(0.1)  # polling the nodes' block count against a deadline
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
        log_file.close()
        log = (tmp_path / "agent.log").read_text()
        assert agent.returncode == 0, log
    finally:
        for proc in (agent, pool):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert "stopped cleanly" in log
    tag = POOL_TAG.hex()
    for h in range(start + 1, start + BLOCKS_WANTED + 1):
        coinbase = miner.call("getblock", miner.call("getblockhash", h), 2)["tx"][0]
        assert tag in coinbase["vin"][0]["coinbase"], h


def test_doge_agent_run_mines_blocks_that_litecoind_accepts(nodes, tmp_path: Path):
    """The whole agent: `doge-agent run` on the CPU board, through its Stratum client and pool
    manager, against the pool in node mode; both nodes accept >= 20 blocks it found."""
    # the CPU board does ~10^4 H/s: difficulty 2**-7 (~512 hashes a share) keeps the pool's share
    # checks light, and on regtest about every other share is a block
    _agent_mines_blocks(nodes, tmp_path, 'kind = "cpu"\nthreads = 1\n', 2**-7, MINING_TIMEOUT_S)


def test_emulated_l3plus_mines_blocks_that_litecoind_accepts(nodes, tmp_path: Path):
    """End to end through the chip protocol: `doge-agent run` on the emulated L3+ (work frames
    to 4 x 72 BM1485 chips over ptys, nonce frames back, verified and submitted), against the
    pool in node mode; both nodes accept >= 20 blocks it found."""
    # every chip nonce meets the emulator's ticket (2**-10); on regtest nearly every one is a block
    _agent_mines_blocks(nodes, tmp_path, 'kind = "emulated"\n', 2**-10, EMULATED_TIMEOUT_S)
