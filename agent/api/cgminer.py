"""The cgminer-compatible API on TCP 4028, posing as the board's stock Antminer model.

Wire format (shared/reference/pyasic-compat.md §8): one request per connection, JSON
`{"command": "CMD", "parameter": "PARAM"}` or plain text `CMD|PARAM`; one reply, then a NUL byte,
then the socket is closed. JSON commands may be joined with `+` (report commands only). Reads
are open to `policy.may_read` addresses (others are closed without a word, as cgminer ignores
them); privileged commands need `policy.may_write`, otherwise STATUS E 45 "Access denied".

Hashrates are true GH/s in `GHS 5s`, `GHS av` and `chain_rateN` (stock L3+ firmware puts MH/s
there; pyasic reads GH/s). Fans are in fan1/fan2 like stock *and* in fan3/fan4, where pyasic's L3+
class reads them.

    server = CgminerServer(state, controls, policy, CgminerOptions(listen="127.0.0.1:4028"))
    await server.start(); ...; await server.stop()

`answer(request_bytes, peer_ip)` is the whole protocol without sockets (tests, fuzzing)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from agent import __version__
from agent import defaults as D
from agent.api.controls import ControlError, Controls
from agent.api.httpserver import close_listener

log = logging.getLogger("agent.api.cgminer")

CGMINER_VERSION = "4.9.0"  # what stock L3+ firmware reports
API_VERSION = "3.1"
DESCRIPTION = f"cgminer {CGMINER_VERSION}"
POOL_SCHEMES = ("stratum+tcp", "stratum+ssl", "stratum2+tcp")  # what pyasic's PoolUrl accepts

# severities
S, INFO, W, E = "S", "I", "W", "E"

# cgminer's status codes (api.c), with the messages tools match on
MSG_POOL = 7
MSG_NOPOOL = 8
MSG_DEVS = 9
MSG_NODEVS = 10
MSG_SUMM = 11
MSG_INVCMD = 14
MSG_MISID = 15
MSG_VERSION = 22
MSG_INVJSON = 23
MSG_MISCMD = 24
MSG_MISPID = 25
MSG_INVPID = 26
MSG_SWITCHP = 27
MSG_MINECONFIG = 33
MSG_ACCDENY = 45
MSG_ACCOK = 46
MSG_ENAPOOL = 47
MSG_DISPOOL = 48
MSG_ALRENAP = 49
MSG_ALRDISP = 50
MSG_DISLASTP = 51
MSG_MISPDP = 52
MSG_INVPDP = 53
MSG_ADDPOOL = 55
MSG_REMLASTP = 66
MSG_ACTPOOL = 67
MSG_REMPOOL = 68
MSG_DEVDETAILS = 69
MSG_MINESTATS = 70
MSG_INVASC = 107
MSG_MISASCOPT = 116
MSG_ASCHELP = 118
MSG_ASCSETOK = 119
MSG_ASCSETERR = 120

REPORT_COMMANDS = ("version", "summary", "pools", "devs", "stats", "devdetails", "config")
PRIVILEGED_COMMANDS = (
    "addpool", "switchpool", "enablepool", "disablepool", "removepool",
    "restart", "quit", "ascset", "privileged",
)  # fmt: skip
ASCSET_HELP = "led,1|0 (locate LED); softoff (pause hashing); softon (resume)"


class ReadWritePolicy(Protocol):
    """What agent.security.access.AccessPolicy offers."""

    def may_read(self, ip: str) -> bool: ...

    def may_write(self, ip: str) -> bool: ...


@dataclass(frozen=True)
class CgminerOptions:
    listen: str = D.CGMINER_LISTEN
    model: str = D.CGMINER_MODEL  # VERSION[0].Type: how pyasic picks its class
    max_request_bytes: int = D.CGMINER_MAX_REQUEST_BYTES
    read_timeout_s: float = D.CGMINER_READ_TIMEOUT_S
    handler_timeout_s: float = D.CGMINER_HANDLER_TIMEOUT_S
    write_timeout_s: float = D.CGMINER_WRITE_TIMEOUT_S
    max_connections: int = D.CGMINER_MAX_CONNECTIONS


def split_listen(listen: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port)."""
    host, _, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


@dataclass
class Reply:
    """One command's answer: a STATUS block plus data sections, or a bare STATUS string."""

    severity: str
    code: int
    msg: str
    sections: dict[str, list[dict[str, Any]]]
    bare: str | None = None  # "RESTART" / "BYE": STATUS is a plain string
    after: Callable[[], Awaitable[Any]] | None = None  # run once the reply is sent

    def ok(self) -> bool:
        return self.bare is not None or self.severity in (S, INFO)


def _status(severity: str, code: int, msg: str, **sections: list[dict[str, Any]]) -> Reply:
    return Reply(severity, code, msg, dict(sections))


def _num(x: Any) -> float:
    """A finite number for the wire (JSON has no inf/nan; pyasic would turn them into 0 anyway)."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return 0.0
    return f if math.isfinite(f) else 0.0


def _ghs(hs: Any) -> float:
    return round(_num(hs) / 1e9, 9)


def _wire_url(url: str) -> str:
    """A pool URL pyasic can parse: our stratum schemes pass; others lose the scheme (url=None in
    pyasic) because an unknown scheme makes pyasic's whole get_data() fail."""
    base = url.split("#", 1)[0]  # the state labels duplicate pools url#N
    try:
        scheme = urlsplit(base).scheme
    except ValueError:
        return ""
    if scheme in POOL_SCHEMES:
        return base
    return base.split("://", 1)[-1]


def _chip_marks(chips: int) -> str:
    """Stock chain_acsN: one 'o' per answering chip, in groups of 8."""
    marks = "o" * max(0, min(chips, 1024))
    return " ".join(marks[i : i + 8] for i in range(0, len(marks), 8))


class CgminerAPI:
    """The protocol without sockets: answer(request, peer) -> reply bytes (ends with NUL)."""

    def __init__(
        self,
        state: Any,
        controls: Controls | None,
        policy: ReadWritePolicy,
        options: CgminerOptions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.controls = controls
        self.policy = policy
        self.options = options or CgminerOptions()
        self._clock = clock
        self.stats: dict[str, int] = {"requests": 0, "bad_requests": 0, "denied": 0}
        self._report: dict[str, Callable[[dict[str, Any]], Reply]] = {
            "version": self._version,
            "summary": self._summary,
            "pools": self._pools,
            "devs": self._devs,
            "stats": self._stats,
            "devdetails": self._devdetails,
            "config": self._config,
        }
        self._privileged: dict[str, Callable[[str | None], Awaitable[Reply]]] = {
            "addpool": self._addpool,
            "switchpool": self._switchpool,
            "enablepool": lambda p: self._enable(p, True),
            "disablepool": lambda p: self._enable(p, False),
            "removepool": self._removepool,
            "restart": self._restart,
            "quit": self._quit,
            "ascset": self._ascset,
            "privileged": self._privileged_ok,
        }

    # ------------------------------------------------------------------ parsing

    async def answer(
        self, raw: bytes, peer: str, oversize: bool = False
    ) -> tuple[bytes, list[Reply]]:
        """The reply bytes (NUL-terminated) and the replies whose `after` actions are due.

        An oversize request is refused unparsed: Invalid JSON, or Invalid command for plain text."""
        self.stats["requests"] += 1
        text = raw.rstrip(b"\x00\r\n").decode("utf-8", "replace").strip()
        if oversize:
            self.stats["bad_requests"] += 1
            if text.startswith("{"):
                return self._encode_json(_status(E, MSG_INVJSON, "Invalid JSON")), []
            return self._encode_plain(_status(E, MSG_INVCMD, "Invalid command")), []
        if text.startswith("{"):
            return await self._answer_json(text, peer)
        return await self._answer_plain(text, peer)

    async def _answer_json(self, text: str, peer: str) -> tuple[bytes, list[Reply]]:
        try:
            request = json.loads(text)
        except (ValueError, RecursionError):
            request = None
        if not isinstance(request, dict):
            self.stats["bad_requests"] += 1
            return self._encode_json(_status(E, MSG_INVJSON, "Invalid JSON")), []
        command = request.get("command")
        if not isinstance(command, str) or not command:
            self.stats["bad_requests"] += 1
            return self._encode_json(_status(E, MSG_MISCMD, "Missing JSON 'command'")), []
        param = _param(request.get("parameter"))
        if "+" in command:
            return await self._answer_joined(command, param, peer)
        reply = await self._one(command.strip(), param, peer)
        return self._encode_json(reply), [reply]

    async def _answer_joined(
        self, command: str, param: str | None, peer: str
    ) -> tuple[bytes, list[Reply]]:
        parts: dict[str, Reply] = {}
        snap = self.state.snapshot()  # one snapshot, so the joined replies agree
        for name in (p.strip() for p in command.split("+")):
            if not name or name in parts:
                continue  # blank parts are ignored, repeats answered once
            if len(parts) >= len(REPORT_COMMANDS) + len(PRIVILEGED_COMMANDS):
                break
            if name in self._report:
                parts[name] = await self._one(name, param, peer, snap)
            elif name in self._privileged:
                parts[name] = _status(E, MSG_ACCDENY, f"Access denied to '{name}' command")
            else:
                parts[name] = _status(E, MSG_INVCMD, "Invalid command")
        body = {name: [self._reply_obj(r)] for name, r in parts.items()}
        body["id"] = 1  # type: ignore[assignment]
        return _dump(body), []

    async def _answer_plain(self, text: str, peer: str) -> tuple[bytes, list[Reply]]:
        command, sep, param = text.partition("|")
        reply = await self._one(command.strip(), param if sep else None, peer)
        return self._encode_plain(reply), [reply]

    async def _one(
        self, command: str, param: str | None, peer: str, snap: dict[str, Any] | None = None
    ) -> Reply:
        report = self._report.get(command)
        if report is not None:
            try:
                return report(snap if snap is not None else self.state.snapshot())
            except Exception:  # a surface never takes the agent down
                log.exception("cgminer: %s failed", command)
                return _status(E, MSG_INVCMD, "Invalid command")
        action = self._privileged.get(command)
        if action is None:
            self.stats["bad_requests"] += 1
            return _status(E, MSG_INVCMD, "Invalid command")
        if self.controls is None or not self.policy.may_write(peer):
            self.stats["denied"] += 1
            why = "no controls" if self.controls is None else "not in write_allow"
            log.warning("cgminer: %s refused to %s (%s)", command, peer, why)
            return _status(E, MSG_ACCDENY, f"Access denied to '{command}' command")
        try:
            return await asyncio.wait_for(action(param), self.options.handler_timeout_s)
        except TimeoutError:
            return _status(E, MSG_INVCMD, f"{command} timed out")
        except Exception:
            log.exception("cgminer: %s failed", command)
            return _status(E, MSG_INVCMD, f"{command} failed")

    # ------------------------------------------------------------------ encoding

    def _status_block(self, r: Reply) -> dict[str, Any]:
        return {
            "STATUS": r.severity,
            "When": int(self._clock()),
            "Code": r.code,
            "Msg": r.msg,
            "Description": DESCRIPTION,
        }

    def _reply_obj(self, r: Reply) -> dict[str, Any]:
        if r.bare is not None:
            return {"STATUS": r.bare, "id": 1}
        obj: dict[str, Any] = {"STATUS": [self._status_block(r)]}
        obj.update(r.sections)
        obj["id"] = 1
        return obj

    def _encode_json(self, r: Reply) -> bytes:
        return _dump(self._reply_obj(r))

    def _encode_plain(self, r: Reply) -> bytes:
        if r.bare is not None:
            return r.bare.encode() + b"|\x00"
        chunks = [_plain_fields(self._status_block(r))]
        for name, items in r.sections.items():
            for item in items:
                first = next(iter(item), None)
                fields = _plain_fields(item)
                chunks.append(fields if first == name else f"{name},{fields}")
        return ("|".join(chunks) + "|").encode("utf-8", "replace") + b"\x00"

    # ------------------------------------------------------------------ report commands

    def _version(self, snap: dict[str, Any]) -> Reply:
        return _status(
            S, MSG_VERSION, "CGMiner versions",
            VERSION=[{
                "CGMiner": CGMINER_VERSION,
                "API": API_VERSION,
                "Miner": f"doge-agent {__version__}",
                "CompileTime": f"doge-agent {__version__}",
                "Type": self.options.model,
            }],
        )  # fmt: skip

    def _summary(self, snap: dict[str, Any]) -> Reply:
        shares = snap.get("shares", {})
        elapsed = int(_num(snap.get("uptime_s")))
        ghs = _ghs(snap.get("hashrate_hs"))
        accepted = int(shares.get("accepted", 0))
        rejected = int(shares.get("rejected", 0))
        stale = int(shares.get("stale", 0))
        hw = int(shares.get("hw_errors", 0))
        nonces = int(snap.get("nonces", 0))
        minutes = max(elapsed / 60.0, 1 / 60)
        return _status(
            S, MSG_SUMM, "Summary",
            SUMMARY=[{
                "Elapsed": elapsed,
                "GHS 5s": ghs,
                "GHS av": ghs,
                "Found Blocks": 0,
                "Getworks": 0,
                "Accepted": accepted,
                "Rejected": rejected,
                "Hardware Errors": hw,
                "Utility": round(accepted / minutes, 2),
                "Discarded": int(shares.get("below_target", 0)),
                "Stale": stale,
                "Get Failures": 0,
                "Local Work": nonces,
                "Remote Failures": 0,
                "Network Blocks": 0,
                "Total MH": round(ghs * 1000 * elapsed, 4),
                "Work Utility": round(nonces / minutes, 2),
                "Difficulty Accepted": 0.0,
                "Difficulty Rejected": 0.0,
                "Difficulty Stale": 0.0,
                "Best Share": 0,
                "Device Hardware%": _pct(hw, nonces),
                "Device Rejected%": _pct(rejected, nonces),
                "Pool Rejected%": _pct(rejected, accepted + rejected + stale),
                "Pool Stale%": _pct(stale, accepted + rejected + stale),
                "Last getwork": 0,
            }],
        )  # fmt: skip

    def _pool_rows(self, snap: dict[str, Any]) -> list[dict[str, Any]]:
        counts: dict[str, dict[str, Any]] = {}
        for p in snap.get("pools", []):
            counts.setdefault(str(p.get("url", "")).split("#", 1)[0], p)
        configured: list[dict[str, Any]] = []
        if self.controls is not None:
            try:
                configured = list(self.controls.pools())
            except Exception:
                log.exception("cgminer: controls.pools() failed")
        if not configured:
            configured = [
                {"index": i, "url": str(p.get("url", "")), "user": "", "priority": i,
                 "enabled": True, "status": p.get("status", "")}
                for i, p in enumerate(snap.get("pools", []))
            ]  # fmt: skip
        rows: list[dict[str, Any]] = []
        active_seen = False
        for i, pool in enumerate(configured):
            url = str(pool.get("url", ""))
            live = counts.get(url.split("#", 1)[0], {})
            status = str(live.get("status") or pool.get("status") or "")
            enabled = bool(pool.get("enabled", True))
            alive = enabled and status == "alive"
            active = alive and not active_seen
            active_seen = active_seen or active
            rows.append({
                "POOL": int(pool.get("index", i)),
                "URL": _wire_url(url),
                "Status": "Alive" if alive else ("Disabled" if not enabled else "Dead"),
                "Priority": int(pool.get("priority", i) or 0),
                "Quota": 1,
                "Long Poll": "N",
                "Getworks": 0,
                "Accepted": int(live.get("accepted", 0)),
                "Rejected": int(live.get("rejected", 0)),
                "Discarded": 0,
                "Stale": 0,
                "Get Failures": 0,
                "Remote Failures": 0,
                "User": str(pool.get("user", "")),
                "Last Share Time": 0,
                "Diff1 Shares": 0,
                "Proxy Type": "",
                "Proxy": "",
                "Difficulty Accepted": 0.0,
                "Difficulty Rejected": 0.0,
                "Difficulty Stale": 0.0,
                "Last Share Difficulty": 0.0,
                "Has Stratum": True,
                "Stratum Active": active,
                "Stratum URL": _wire_url(url).split("://", 1)[-1].rsplit(":", 1)[0],
                "Has GBT": False,
                "Best Share": 0,
                "Pool Rejected%": _pct(
                    live.get("rejected", 0),
                    _num(live.get("accepted", 0)) + _num(live.get("rejected", 0)),
                ),
                "Pool Stale%": 0.0,
            })  # fmt: skip
        return rows

    def _pools(self, snap: dict[str, Any]) -> Reply:
        rows = self._pool_rows(snap)
        if not rows:
            return _status(E, MSG_NOPOOL, "No pools")
        return _status(S, MSG_POOL, f"{len(rows)} Pool(s)", POOLS=rows)

    def _devs(self, snap: dict[str, Any]) -> Reply:
        chains = snap.get("chains", [])
        if not chains:
            return _status(E, MSG_NODEVS, "No GPUs/ASCs")
        elapsed = int(_num(snap.get("uptime_s")))
        rows = []
        for i, c in enumerate(chains):
            mhs = round(_num(c.get("hashrate_hs")) / 1e6, 6)
            chips = int(_num(c.get("chips")))
            nonces = int(_num(c.get("nonces")))
            hw = int(_num(c.get("hw_errors")))
            rows.append({
                "ASC": i,
                "Name": "BTM",
                "ID": i,
                "Enabled": "Y",
                "Status": "Alive" if chips > 0 else "Dead",
                "Temperature": _num(c.get("temp_c")),
                "MHS av": mhs,
                "MHS 5s": mhs,
                "Accepted": max(nonces - hw, 0),
                "Rejected": 0,
                "Hardware Errors": hw,
                "Utility": 0.0,
                "Last Share Pool": -1,
                "Last Share Time": 0,
                "Total MH": round(mhs * elapsed, 4),
                "Diff1 Work": 0,
                "Difficulty Accepted": 0.0,
                "Difficulty Rejected": 0.0,
                "Last Share Difficulty": 0.0,
                "Last Valid Work": 0,
                "Device Hardware%": _pct(hw, nonces),
                "Device Rejected%": 0.0,
                "Device Elapsed": elapsed,
            })  # fmt: skip
        return _status(S, MSG_DEVS, f"{len(rows)} ASC(s)", DEVS=rows)

    def _devdetails(self, snap: dict[str, Any]) -> Reply:
        rows = [
            {"DEVDETAILS": i, "Name": "BTM", "ID": i, "Driver": "bitmain", "Kernel": "",
             "Model": "", "Device Path": "", "Chips": int(_num(c.get("chips"))),
             "Frequency": _num(c.get("frequency_mhz"))}
            for i, c in enumerate(snap.get("chains", []))
        ]  # fmt: skip
        return _status(S, MSG_DEVDETAILS, "Device Details", DEVDETAILS=rows)

    def _config(self, snap: dict[str, Any]) -> Reply:
        return _status(
            S, MSG_MINECONFIG, "CGMiner config",
            CONFIG=[{
                "ASC Count": len(snap.get("chains", [])),
                "PGA Count": 0,
                "Pool Count": len(self._pool_rows(snap)),
                "Strategy": "Failover",
                "Log Interval": 5,
                "Device Code": "",
                "OS": "Linux",
                "Hotplug": "None",
            }],
        )  # fmt: skip

    def _stats(self, snap: dict[str, Any]) -> Reply:
        elapsed = int(_num(snap.get("uptime_s")))
        ghs = _ghs(snap.get("hashrate_hs"))
        chains = snap.get("chains", [])
        fans = [int(_num(f.get("rpm"))) for f in snap.get("fans", [])]
        data: dict[str, Any] = {
            "STATS": 0,
            "ID": "L30",
            "Elapsed": elapsed,
            "Calls": 0,
            "Wait": 0.0,
            "Max": 0.0,
            "Min": 99999999.0,
            "GHS 5s": ghs,
            "GHS av": ghs,
            "total_rateideal": ghs,
            "rate_unit": "GH",
            "miner_count": len(chains),
            "frequency": str(int(_num(chains[0].get("frequency_mhz")))) if chains else "0",
            "fan_num": len(fans),
        }
        # Stock L3+ reports its two fans in fan1/fan2; pyasic's L3+ class reads fan3/fan4.
        slots = fans + fans if len(fans) <= 2 else fans
        for i in range(max(4, len(slots))):
            data[f"fan{i + 1}"] = slots[i] if i < len(slots) else 0
        temps = [c.get("temp_c") for c in chains]
        data["temp_num"] = len(chains)
        for i, t in enumerate(temps, start=1):
            # one sensor per chain here: it stands for both the PCB (temp) and die (temp2_) pair
            data[f"temp{i}"] = _num(t)
            data[f"temp2_{i}"] = _num(t)
            data[f"temp3{i}"] = 0
            data[f"temp4_{i}"] = 0
        known = [_num(t) for t in temps if t is not None]
        data["temp_max"] = max(known) if known else 0
        nonces = sum(int(_num(c.get("nonces"))) for c in chains)
        hw = sum(int(_num(c.get("hw_errors"))) for c in chains)
        data["Device Hardware%"] = _pct(hw, nonces)
        data["no_matching_work"] = hw
        for i, c in enumerate(chains, start=1):
            chips = int(_num(c.get("chips")))
            data[f"chain_acn{i}"] = chips
            data[f"chain_acs{i}"] = _chip_marks(chips)
            data[f"chain_hw{i}"] = int(_num(c.get("hw_errors")))
            # 9 decimals (1 H/s): pyasic sums these, and 6 would round a slow board to 0
            data[f"chain_rate{i}"] = f"{_ghs(c.get('hashrate_hs')):.9f}"
        data["miner_version"] = __version__
        head = {
            "CGMiner": CGMINER_VERSION,
            "Miner": f"doge-agent {__version__}",
            "CompileTime": f"doge-agent {__version__}",
            "Type": self.options.model,
        }
        return _status(S, MSG_MINESTATS, "CGMiner stats", STATS=[head, data])

    # ------------------------------------------------------------------ privileged commands

    def _pool_list(self) -> list[dict[str, Any]]:
        assert self.controls is not None
        return list(self.controls.pools())

    def _pool_by_param(self, param: str | None) -> tuple[dict[str, Any] | None, Reply | None]:
        if param is None or not param.strip():
            return None, _status(E, MSG_MISPID, "Missing pool id parameter")
        pools = self._pool_list()
        try:
            n = int(param.strip())
        except ValueError:
            n = -1
        match = next((p for p in pools if int(p.get("index", -2)) == n), None)
        if match is None:
            top = max((int(p.get("index", 0)) for p in pools), default=-1)
            return None, _status(E, MSG_INVPID, f"Invalid pool id {n} - range is 0 - {top}")
        return match, None

    async def _addpool(self, param: str | None) -> Reply:
        assert self.controls is not None
        if param is None or not param.strip():
            return _status(E, MSG_MISPDP, "Missing addpool details")
        fields = _split_escaped(param)
        if len(fields) < 2 or not fields[0]:
            # never echo the parameter: it may hold a pool password
            return _status(E, MSG_INVPDP, "Invalid addpool details 'url,user,pass'")
        url, user = fields[0], fields[1]
        password = fields[2] if len(fields) > 2 else ""
        try:
            await self.controls.add_pool(url, user, password, None)
        except ControlError as e:
            return _status(E, MSG_INVPDP, f"Invalid addpool details '{_wire_url(url)}': {e}")
        return _status(S, MSG_ADDPOOL, f"Added pool '{_wire_url(url)}'")

    async def _switchpool(self, param: str | None) -> Reply:
        assert self.controls is not None
        pool, err = self._pool_by_param(param if param is not None else "0")
        if err is not None or pool is None:
            return err or _status(E, MSG_MISPID, "Missing pool id parameter")
        n, url = int(pool["index"]), _wire_url(str(pool.get("url", "")))
        try:
            await self.controls.switch_pool(n)
        except ControlError as e:
            return _status(E, MSG_INVPID, f"Cannot switch to pool {n}:'{url}': {e}")
        return _status(S, MSG_SWITCHP, f"Switching to pool {n}:'{url}'")

    async def _enable(self, param: str | None, enabled: bool) -> Reply:
        assert self.controls is not None
        pool, err = self._pool_by_param(param)
        if err is not None or pool is None:
            return err or _status(E, MSG_MISPID, "Missing pool id parameter")
        n, url = int(pool["index"]), _wire_url(str(pool.get("url", "")))
        if bool(pool.get("enabled", True)) == enabled:
            code, word = (MSG_ALRENAP, "enabled") if enabled else (MSG_ALRDISP, "disabled")
            return _status(INFO, code, f"Pool {n}:'{url}' already {word}")
        if not enabled and sum(1 for p in self._pool_list() if p.get("enabled", True)) <= 1:
            return _status(E, MSG_DISLASTP, f"Cannot disable last active pool {n}:'{url}'")
        try:
            await self.controls.enable_pool(n, enabled)
        except ControlError as e:
            code = MSG_ENAPOOL if enabled else MSG_DISLASTP
            return _status(E, code, f"Cannot change pool {n}:'{url}': {e}")
        if enabled:
            return _status(S, MSG_ENAPOOL, f"Enabling pool {n}:'{url}'")
        return _status(S, MSG_DISPOOL, f"Disabling pool {n}:'{url}'")

    async def _removepool(self, param: str | None) -> Reply:
        assert self.controls is not None
        pool, err = self._pool_by_param(param)
        if err is not None or pool is None:
            return err or _status(E, MSG_MISPID, "Missing pool id parameter")
        n, url = int(pool["index"]), _wire_url(str(pool.get("url", "")))
        if len(self._pool_list()) <= 1:
            return _status(E, MSG_REMLASTP, f"Cannot remove last pool {n}:'{url}'")
        try:
            await self.controls.remove_pool(n)
        except ControlError as e:
            return _status(E, MSG_ACTPOOL, f"Cannot remove pool {n}:'{url}': {e}")
        return _status(S, MSG_REMPOOL, f"Removed pool {n}:'{url}'")

    async def _restart(self, param: str | None) -> Reply:
        controls = self.controls
        assert controls is not None
        reply = Reply(S, 0, "", {}, bare="RESTART")
        reply.after = controls.restart  # cgminer answers first, then restarts
        return reply

    async def _quit(self, param: str | None) -> Reply:
        # The agent is the firmware: quitting would only make systemd start it again, so `quit`
        # stops hashing instead (the API keeps answering; `ascset 0,softon` or the web resumes).
        controls = self.controls
        assert controls is not None
        reply = Reply(S, 0, "", {}, bare="BYE")
        reply.after = lambda: controls.pause("cgminer API quit")
        return reply

    async def _privileged_ok(self, param: str | None) -> Reply:
        return _status(S, MSG_ACCOK, "Privileged access OK")

    async def _ascset(self, param: str | None) -> Reply:
        controls = self.controls
        assert controls is not None
        if param is None or not param.strip():
            return _status(E, MSG_MISID, "Missing device id parameter")
        fields = [f.strip() for f in param.split(",")]
        count = len(self.state.snapshot().get("chains", []))
        try:
            n = int(fields[0])
        except ValueError:
            n = -1
        if not 0 <= n < max(count, 1):
            return _status(E, MSG_INVASC, f"Invalid ASC id {n} - range is 0 - {max(count - 1, 0)}")
        if len(fields) < 2 or not fields[1]:
            return _status(E, MSG_MISASCOPT, "Missing option after ASC number")
        option, value = fields[1].lower(), (fields[2] if len(fields) > 2 else "")
        try:
            if option == "help":
                return _status(INFO, MSG_ASCHELP, f"ASC {n} set help: {ASCSET_HELP}")
            if option == "led":
                # "1"/"0", or Avalon's "x-1"/"x-0" form
                on = value.rsplit("-", 1)[-1].strip() in ("1", "on", "true")
                controls.locate(on)
            elif option == "softoff":
                await controls.pause("cgminer API ascset softoff")
            elif option == "softon":
                await controls.resume("cgminer API ascset softon")
            else:
                return _status(E, MSG_ASCSETERR, f"ASC {n} set failed: unknown option")
        except ControlError as e:
            return _status(E, MSG_ASCSETERR, f"ASC {n} set failed: {e}")
        return _status(S, MSG_ASCSETOK, f"ASC {n} set OK")


class CgminerServer:
    """The TCP listener around CgminerAPI: one request, one reply + NUL, close."""

    def __init__(
        self,
        state: Any,
        controls: Controls | None,
        policy: ReadWritePolicy,
        options: CgminerOptions | None = None,
    ) -> None:
        self.options = options or CgminerOptions()
        self.api = CgminerAPI(state, controls, policy, self.options)
        self.policy = policy
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.stats: dict[str, int] = {"connections": 0, "refused": 0, "timeouts": 0, "ignored": 0}

    @property
    def port(self) -> int:
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return split_listen(self.options.listen)[1]

    async def start(self) -> None:
        host, port = split_listen(self.options.listen)
        self._server = await asyncio.start_server(
            self._on_connect, host, port, reuse_address=True, limit=self.options.max_request_bytes
        )
        log.info("cgminer API listening on %s:%d as %s", host, self.port, self.options.model)

    async def stop(self) -> None:
        await close_listener(self._server, self._conns)
        self._server = None

    async def __aenter__(self) -> CgminerServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else ""
        self.stats["connections"] += 1
        if len(self._conns) >= self.options.max_connections:
            self.stats["refused"] += 1
            await _close(writer)
            return
        if not self.policy.may_read(peer):
            self.stats["ignored"] += 1  # cgminer closes on clients outside --api-allow
            log.info("cgminer: connection from %s ignored (not in read_allow)", peer)
            await _close(writer)
            return
        self._conns.add(task)
        after: list[Reply] = []
        try:
            raw, oversize = await self._read(reader)
            if raw.strip():
                reply, after = await self.api.answer(raw, peer, oversize)
                writer.write(reply)
                await asyncio.wait_for(writer.drain(), self.options.write_timeout_s)
                await self._linger(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # one client never kills the listener
            log.exception("cgminer: connection from %s failed", peer)
        finally:
            await _close(writer)
            self._conns.discard(task)
        for r in after:
            if r.after is not None:
                try:
                    await asyncio.wait_for(r.after(), self.options.handler_timeout_s)
                except Exception:
                    log.exception("cgminer: action after %s failed", r.bare or r.msg)

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Half-close, then discard what the client still sends until it closes (bounded).

        Closing a socket with unread input (an oversize request) makes the kernel send a reset
        that can destroy the reply before the client reads it."""
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(min(1.0, self.options.read_timeout_s)):
                budget = 16 * self.options.max_request_bytes
                while budget > 0:
                    chunk = await reader.read(min(budget, 65536))
                    if not chunk:
                        break
                    budget -= len(chunk)

    async def _read(self, reader: asyncio.StreamReader) -> tuple[bytes, bool]:
        """The request: complete JSON, a plain line, EOF, the size limit, or the read deadline.

        pyasic neither half-closes nor ends its request with a newline, so a JSON request is
        complete as soon as it parses; plain text is taken from the first read, as cgminer does."""
        limit = self.options.max_request_bytes
        data = b""
        try:
            async with asyncio.timeout(self.options.read_timeout_s):
                while len(data) <= limit:
                    chunk = await reader.read(limit + 1 - len(data))
                    if not chunk:
                        break
                    data += chunk
                    if _complete(data):
                        break
        except TimeoutError:
            self.stats["timeouts"] += 1
        return data[:limit], len(data) > limit


def _complete(data: bytes) -> bool:
    text = data.lstrip()
    if not text:
        return False
    if not text.startswith(b"{"):
        return True
    if b"\x00" in text or text.endswith(b"\n"):
        return True
    try:
        json.loads(text.decode("utf-8"))
    except json.JSONDecodeError as e:
        # incomplete only if the parser ran off the end; invalid JSON is answered at once
        return not (e.pos >= len(e.doc.rstrip()) or e.msg.startswith("Unterminated string"))
    except (ValueError, RecursionError):
        return True  # not UTF-8, or absurdly nested: complete, and invalid
    return True


async def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(writer.wait_closed(), 1.0)


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode() + b"\x00"


def _param(value: Any) -> str | None:
    """cgminer takes a string, an integer or a real as the parameter; anything else is none."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:f}"
    return None


def _pct(part: Any, whole: Any) -> float:
    w = _num(whole)
    return round(_num(part) * 100.0 / w, 4) if w > 0 else 0.0


def _split_escaped(text: str) -> list[str]:
    """Split on commas; a backslash escapes the next character (cgminer's addpool syntax)."""
    out, cur, escaped = [], [], False
    for ch in text:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def _plain_fields(obj: dict[str, Any]) -> str:
    def clean(v: Any) -> str:
        text = str(v).lower() if isinstance(v, bool) else str(v)
        return text.replace("|", "\\|").replace(",", "\\,").replace("=", "\\=")

    return ",".join(f"{clean(k)}={clean(v)}" for k, v in obj.items())
