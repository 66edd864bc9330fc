"""Where the emulated pool's jobs come from: random templates, or litecoind over JSON-RPC.

RandomJobs needs nothing. NodeJobs polls the node's tip, turns getblocktemplate answers into
Templates (agent.emulator.gbt) and sends found blocks back with submitblock."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from agent import defaults as D
from agent.emulator.gbt import OP_TRUE_SCRIPT, Template, TemplateError, from_gbt, random_template

if TYPE_CHECKING:
    from agent.emulator.pool import StratumPool

log = logging.getLogger(__name__)


class RandomJobs:
    """Random templates: no node needed."""

    def __init__(
        self,
        *,
        nbits: int = 0x1E0FFFF0,
        job_interval_s: float = D.POOL_JOB_INTERVAL_S,
        block_interval_s: float | None = None,
        new_block_on_find: bool = True,
    ) -> None:
        self.nbits = nbits
        self.job_interval_s = job_interval_s
        self.block_interval_s = block_interval_s
        self.new_block_on_find = new_block_on_find
        self._height = 1000

    def template(self, pool: StratumPool, new_block: bool) -> Template:
        if new_block:
            self._height += 1
        return random_template(
            nbits=self.nbits,
            extranonce_size=pool.extranonce1_size + pool.extranonce2_size,
            ntime=int(time.time()),
            height=self._height,
        )

    async def run(self, pool: StratumPool) -> None:
        await pool.publish(self.template(pool, True), clean=True)
        last_block = time.monotonic()
        while True:
            await asyncio.sleep(self.job_interval_s)
            new_block = (
                self.block_interval_s is not None
                and time.monotonic() - last_block >= self.block_interval_s
            )
            if new_block:
                last_block = time.monotonic()
            await pool.publish(self.template(pool, new_block), clean=new_block)

    async def found_block(self, pool: StratumPool, t: Template, block: bytes) -> str | None:
        if self.new_block_on_find:
            await pool.publish(self.template(pool, True), clean=True)
        return None


class RPCError(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(f"RPC error {code}: {message}")


class NodeRPC:
    """Minimal JSON-RPC over HTTP with basic auth (blocking; call it via asyncio.to_thread)."""

    def __init__(
        self,
        url: str,
        user: str | None = None,
        password: str | None = None,
        cookie_file: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        if cookie_file is not None:
            with open(cookie_file) as f:
                user, _, password = f.read().strip().partition(":")
        if user is None or password is None:
            raise ValueError("node RPC needs --rpc-user and --rpc-password, or --rpc-cookie")
        self.url = url
        self.timeout_s = timeout_s
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        self._ids = itertools.count(1)

    def call(self, method: str, *params: Any) -> Any:
        body = json.dumps({"jsonrpc": "1.0", "id": next(self._ids), "method": method,
                           "params": list(params)}).encode()  # fmt: skip
        req = urllib.request.Request(self.url, data=body, headers=self._headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as e:  # errors come back as HTTP 500 with a JSON body
            raw = e.read()
            try:
                answer = json.loads(raw)
            except ValueError:
                raise RPCError(-1, f"HTTP {e.code} from {method}: {raw[:200]!r}") from None
        err = answer.get("error")
        if err:
            raise RPCError(int(err.get("code", -1)), str(err.get("message", err)))
        return answer.get("result")

    async def acall(self, method: str, *params: Any) -> Any:
        return await asyncio.to_thread(self.call, method, *params)


GBT_RULES = {"rules": ["mweb", "segwit"]}  # litecoind 0.21 refuses anything else (-8)
RPC_IN_INITIAL_DOWNLOAD = -10
REGTEST_HALVING_BLOCKS = 150


class NodeJobs:
    """Templates from litecoind; blocks go back with submitblock."""

    def __init__(
        self,
        rpc: NodeRPC,
        *,
        payout_script: bytes | None = None,
        poll_s: float = D.POOL_NODE_POLL_S,
        refresh_s: float = 10.0,
        version: int | None = None,
    ) -> None:
        self.rpc = rpc
        self.payout_script = payout_script
        self.poll_s = poll_s
        self.refresh_s = refresh_s
        self.version = version  # None: the template's (signals what it asks for)
        self.tip: str | None = None
        self._wake = asyncio.Event()
        self.errors = 0

    async def _payout(self) -> bytes:
        if self.payout_script is None:
            try:
                addr = await self.rpc.acall("getnewaddress")
                info = await self.rpc.acall("getaddressinfo", addr)
                self.payout_script = bytes.fromhex(info["scriptPubKey"])
                log.info("node mode: paying to wallet address %s", addr)
            except (RPCError, KeyError, ValueError, OSError) as e:
                log.warning("node mode: no wallet address (%s); paying to OP_TRUE", e)
                self.payout_script = OP_TRUE_SCRIPT
        return self.payout_script

    async def template(self, pool: StratumPool) -> Template:
        try:
            tpl = await self.rpc.acall("getblocktemplate", GBT_RULES)
        except RPCError as e:
            if e.code != RPC_IN_INITIAL_DOWNLOAD:
                raise
            tpl = await self._ibd_template()
        return from_gbt(
            tpl,
            payout_script=await self._payout(),
            extranonce_size=pool.extranonce1_size + pool.extranonce2_size,
            version=self.version,
        )

    async def _ibd_template(self) -> dict[str, Any]:
        """getblocktemplate's stand-in while the node is in initial block download.

        A fresh regtest chain starts "in IBD" (its genesis is dated 2011) and gbt answers -10
        until a recent block arrives; submitblock has no such check (§5.2 fix (a)). So build a
        coinbase-only template from the tip: no transactions, hence no witness commitment."""
        tip = await self.rpc.acall("getbestblockhash")
        head = await self.rpc.acall("getblockheader", tip)
        chain = (await self.rpc.acall("getblockchaininfo"))["chain"]
        if chain != "regtest":
            raise RPCError(RPC_IN_INITIAL_DOWNLOAD, f"{chain} node in initial block download")
        height = head["height"] + 1
        log.info(
            "node mode: node in initial download; template for height %d built by hand", height
        )
        return {
            "version": 0x20000000,
            "previousblockhash": tip,
            "transactions": [],
            "coinbasevalue": (50 * 10**8) >> (height // REGTEST_HALVING_BLOCKS),
            "bits": head["bits"],  # regtest: always the pow limit, 207fffff
            "height": height,
            "curtime": max(int(time.time()), head["mediantime"] + 1),
            "mintime": head["mediantime"] + 1,
        }

    async def run(self, pool: StratumPool) -> None:
        last_refresh = 0.0
        backoff = self.poll_s
        while True:
            self._wake.clear()  # before fetching: a block found meanwhile wakes the next round
            try:
                tip = await self.rpc.acall("getbestblockhash")
                now = time.monotonic()
                if tip != self.tip or now - last_refresh >= self.refresh_s:
                    t = await self.template(pool)
                    new_tip = t.prevhash_display != self.tip
                    self.tip = t.prevhash_display
                    last_refresh = now
                    await pool.publish(t, clean=new_tip)
                backoff = self.poll_s
            except (RPCError, TemplateError, OSError, ValueError) as e:
                self.errors += 1
                log.warning("node mode: %s (retrying in %.1f s)", e, backoff)
                backoff = min(5.0, backoff * 2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), backoff)

    async def found_block(self, pool: StratumPool, t: Template, block: bytes) -> str | None:
        verdict = await self.rpc.acall("submitblock", block.hex())
        self._wake.set()  # fetch the next template now, whatever the verdict
        return verdict


JobSource = RandomJobs | NodeJobs
