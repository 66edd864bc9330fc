"""The stock Antminer CGI pages (L3+ profile) that pyasic and Antminer fleet tools read and write.

Mounted on the agent's HTTPServer with register(server, state, controls, options). Every page is
behind HTTP Digest auth (realm "antMiner Configuration", user root, the owner's password; an empty
password refuses everyone), reads need `policy.may_read` and writes `policy.may_write` as well.
Failed logins count towards a LoginGuard lockout (429).

Pages (shared/reference/pyasic-compat.md §5-§7), hashrates in true GH/s:
  GET  get_system_info.cgi   minertype, macaddr, hostname, serinum...
  GET  get_miner_conf.cgi    pools (url/user, never the password), bitmain-work-mode (1 = paused)
  POST set_miner_conf.cgi    form `_ant_pool{1..3}url/user/pw` (old) or JSON `pools`, `miner-mode`
  GET  stats.cgi             STATS[0].chain[*]: index, rate_real, asic_num, temp_pcb/chip, sn
  GET  summary.cgi           SUMMARY[0].status[*]: rate, network, fans, temp as s/w/e
  GET  get_blink_status.cgi  {"blink": bool}
  POST blink.cgi             form action=startBlink|stopBlink|onPageLoaded -> {"isBlinking": bool};
                             JSON {"blink": "true"|"false"} -> {"code": "B000"|"B100"}
  GET  reboot.cgi            restarts the mining service in place (Controls.restart)

Only these exact paths are mounted: an unknown path must never answer JSON (pyasic would then
take the board for a MaraFW miner), which the HTTPServer's plain-text 404 guarantees."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import __version__
from agent import defaults as D
from agent.api.controls import ControlError, Controls
from agent.api.httpserver import HTTPError, HTTPServer, Request, Response
from agent.security.access import AccessPolicy, DigestAuth, LoginGuard

log = logging.getLogger("agent.api.stock_cgi")

CGI = "/cgi-bin/"
PAUSED_STATES = ("pause", "paused", "sleep", "stopped")  # guardian states that mean not mining


@dataclass(frozen=True)
class StockCgiOptions:
    password: str = ""  # the owner's web password; empty refuses every request
    user: str = D.STOCK_CGI_USER
    realm: str = D.STOCK_CGI_REALM
    miner_type: str = D.STOCK_CGI_MINER_TYPE
    hostname: str | None = None  # None: this machine's hostname
    macaddr: str | None = None  # None: the first non-loopback interface's address
    serial: str = ""
    read_allow: tuple[str, ...] = D.WEB_READ_ALLOW
    write_allow: tuple[str, ...] = D.WEB_WRITE_ALLOW
    login_max_failures: int = D.WEB_LOGIN_MAX_FAILURES
    login_lockout_s: float = D.WEB_LOGIN_LOCKOUT_S
    locate_s: float | None = D.STOCK_CGI_LOCATE_S

    def __repr__(self) -> str:  # never show the password
        return f"StockCgiOptions(user={self.user!r}, realm={self.realm!r}, password=***)"


def machine_mac(sys_class_net: Path = Path("/sys/class/net")) -> str:
    """The first non-loopback interface's MAC, upper case; 00:00:00:00:00:00 when none is found."""
    try:
        for iface in sorted(sys_class_net.iterdir()):
            if iface.name == "lo":
                continue
            try:
                mac = (iface / "address").read_text().strip()
            except OSError:
                continue
            if len(mac) == 17 and mac != "00:00:00:00:00:00":
                return mac.upper()
    except OSError:
        pass
    return "00:00:00:00:00:00"


class StockCgi:
    """The handlers; register() mounts them. Kept as a class so tests can call them directly."""

    def __init__(
        self,
        state: Any,
        controls: Controls | None,
        options: StockCgiOptions,
        policy: AccessPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.controls = controls
        self.options = options
        self.policy = policy or AccessPolicy(list(options.read_allow), list(options.write_allow))
        self.digest = DigestAuth(options.realm, options.user, options.password, clock=clock)
        self.guard = LoginGuard(options.login_max_failures, options.login_lockout_s, clock=clock)
        self.hostname = options.hostname or socket.gethostname()
        self.macaddr = (options.macaddr or machine_mac()).upper()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.counters: dict[str, int] = {"unauthorized": 0, "forbidden": 0, "locked_out": 0}

    # ------------------------------------------------------------------ gatekeeping

    def _gate(self, req: Request, write: bool) -> Response | None:
        """None when the request may go on, else the refusal to send."""
        allowed = self.policy.may_write(req.peer) if write else self.policy.may_read(req.peer)
        if not allowed:
            self.counters["forbidden"] += 1
            log.warning("stock CGI: %s %s refused to %s (not allowed)", req.method, req.path,
                        req.peer)  # fmt: skip
            return Response.error(403)
        if self.guard.locked(req.peer):
            self.counters["locked_out"] += 1
            retry = str(int(self.guard.remaining_s(req.peer)) + 1)
            return Response.error(429, "too many failed logins", Retry_After=retry)
        auth = req.headers.get("authorization")
        result = self.digest.verify(req.method, req.target or req.path, auth)
        if result.ok:
            self.guard.succeeded(req.peer)
            return None
        if auth is not None and not result.stale:
            self.guard.failed(req.peer)
            self.counters["unauthorized"] += 1
            log.info("stock CGI: login from %s refused: %s", req.peer, result.reason)
        return Response.error(401, WWW_Authenticate=self.digest.challenge(stale=result.stale))

    def _page(
        self, handler: Callable[[Request], Awaitable[Response]], write: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(req: Request) -> Response:
            refusal = self._gate(req, write)
            if refusal is not None:
                return refusal
            return await handler(req)

        return guarded

    # ------------------------------------------------------------------ reads

    def _mining(self, snap: dict[str, Any]) -> bool:
        return str(snap.get("guardian", {}).get("state", "")).lower() not in PAUSED_STATES

    async def get_system_info(self, req: Request) -> Response:
        snap = self.state.snapshot()
        return Response.json({
            "minertype": self.options.miner_type,
            "nettype": "DHCP",
            "netdevice": "eth0",
            "macaddr": self.macaddr,
            "hostname": self.hostname,
            "serinum": self.options.serial,
            "system_mode": "GNU/Linux",
            "system_kernel_version": "",
            "system_filesystem_version": f"doge-agent {__version__}",
            "cgminer_version": "4.9.0",
            "uptime": str(int(float(snap.get("uptime_s", 0) or 0))),
            "ant_hwv": "",
        })  # fmt: skip

    async def get_miner_conf(self, req: Request) -> Response:
        snap = self.state.snapshot()
        pools = [
            {"url": str(p.get("url", "")), "user": str(p.get("user", "")), "pass": ""}
            for p in self._configured_pools(snap)
        ][:3]
        while len(pools) < 3:
            pools.append({"url": "", "user": "", "pass": ""})
        chains = snap.get("chains", [])
        freq = str(int(float(chains[0].get("frequency_mhz", 0) or 0))) if chains else ""
        return Response.json({
            "pools": pools,
            "api-listen": True,
            "api-network": True,
            "bitmain-use-vil": True,
            "bitmain-freq": freq,
            "bitmain-fan-ctrl": False,
            "bitmain-fan-pwm": "100",
            "bitmain-work-mode": "0" if self._mining(snap) else "1",
        })  # fmt: skip

    def _configured_pools(self, snap: dict[str, Any]) -> list[dict[str, Any]]:
        if self.controls is not None:
            try:
                return list(self.controls.pools())
            except Exception:
                log.exception("stock CGI: controls.pools() failed")
        return [{"url": str(p.get("url", "")).split("#", 1)[0], "user": ""}
                for p in snap.get("pools", [])]  # fmt: skip

    async def stats(self, req: Request) -> Response:
        snap = self.state.snapshot()
        chains = []
        for i, c in enumerate(snap.get("chains", [])):
            temp = c.get("temp_c")
            t = [round(float(temp), 1)] * 2 if temp is not None else [0, 0]
            chains.append({
                "index": i,
                "freq_avg": float(c.get("frequency_mhz", 0) or 0),
                "rate_ideal": _ghs(c.get("hashrate_hs")),
                "rate_real": _ghs(c.get("hashrate_hs")),
                "asic_num": int(c.get("chips", 0) or 0),
                "temp_pic": [0, 0],
                "temp_pcb": t,
                "temp_chip": t,
                "hw": int(c.get("hw_errors", 0) or 0),
                "eeprom_loaded": True,
                "sn": f"{self.options.serial}{i}" if self.options.serial else f"CHAIN{i}",
            })  # fmt: skip
        fans = [int(f.get("rpm") or 0) for f in snap.get("fans", [])]
        ghs = _ghs(snap.get("hashrate_hs"))
        return Response.json({
            **self._head("stats"),
            "STATS": [{
                "elapsed": int(float(snap.get("uptime_s", 0) or 0)),
                "rate_5s": ghs,
                "rate_avg": ghs,
                "rate_ideal": ghs,
                "rate_unit": "GH/s",
                "chain_num": len(chains),
                "fan_num": len(fans),
                "fan": fans,
                "hwp_total": 0.0,
                "chain": chains,
            }],
        })  # fmt: skip

    def _head(self, msg: str) -> dict[str, Any]:
        return {
            "STATUS": {"STATUS": "S", "when": int(time.time()), "Msg": msg, "api_version": "1.0.0"},
            "INFO": {"miner_version": f"doge-agent {__version__}", "type": self.options.miner_type},
        }

    async def summary(self, req: Request) -> Response:
        snap = self.state.snapshot()
        ghs = _ghs(snap.get("hashrate_hs"))
        chains = snap.get("chains", [])
        fans = snap.get("fans", [])
        pools = snap.get("pools", [])
        items = [
            ("rate", "s" if ghs > 0 else "w", "" if ghs > 0 else "no hashrate"),
            ("network", "s" if any(p.get("status") == "alive" for p in pools) else "e",
             "" if any(p.get("status") == "alive" for p in pools) else "no pool alive"),
            ("fans", "s" if fans and all(f.get("rpm") for f in fans) else "w",
             "" if fans and all(f.get("rpm") for f in fans) else "fan speed unknown or zero"),
            ("temp", "s" if chains and all(c.get("temp_c") is not None for c in chains) else "w",
             "" if chains and all(c.get("temp_c") is not None for c in chains)
             else "temperature unknown"),
        ]  # fmt: skip
        return Response.json({
            **self._head("summary"),
            "SUMMARY": [{
                "elapsed": int(float(snap.get("uptime_s", 0) or 0)),
                "rate_5s": ghs,
                "rate_avg": ghs,
                "rate_ideal": ghs,
                "rate_unit": "GH/s",
                "hw_all": int(snap.get("shares", {}).get("hw_errors", 0) or 0),
                "bestshare": 0,
                "status": [
                    {"type": t, "status": s, "code": 0 if s == "s" else 1, "msg": m}
                    for t, s, m in items
                ],
            }],
        })  # fmt: skip

    async def get_blink_status(self, req: Request) -> Response:
        return Response.json({"blink": self._locating()})

    def _locating(self) -> bool:
        if self.controls is None:
            return False
        try:
            return bool(self.controls.locating())
        except Exception:
            log.exception("stock CGI: controls.locating() failed")
            return False

    # ------------------------------------------------------------------ writes

    async def blink(self, req: Request) -> Response:
        body = _body(req)
        if "blink" in body:  # the modern client: JSON {"blink": "true"|"false"}
            on = str(body["blink"]).lower() == "true"
            refusal = self._write_gate(req)
            if refusal is not None:
                return refusal
            self._locate(on)
            return Response.json({"code": "B000" if on else "B100"})
        action = str(body.get("action", "onPageLoaded"))
        if action in ("startBlink", "stopBlink"):
            refusal = self._write_gate(req)
            if refusal is not None:
                return refusal
            self._locate(action == "startBlink")
        elif action != "onPageLoaded":
            raise HTTPError(400, "action must be startBlink, stopBlink or onPageLoaded")
        return Response.json({"isBlinking": self._locating()})

    def _write_gate(self, req: Request) -> Response | None:
        if self.controls is None or not self.policy.may_write(req.peer):
            self.counters["forbidden"] += 1
            log.warning("stock CGI: write %s refused to %s", req.path, req.peer)
            return Response.error(403)
        return None

    def _locate(self, on: bool) -> None:
        assert self.controls is not None
        try:
            self.controls.locate(on, self.options.locate_s if on else None)
        except ControlError as e:
            raise HTTPError(409, f"locate failed: {e}") from None

    async def reboot(self, req: Request) -> Response:
        refusal = self._write_gate(req)
        if refusal is not None:
            return refusal
        assert self.controls is not None
        log.warning("stock CGI: reboot.cgi from %s restarts the mining service", req.peer)
        # answer first (the client would otherwise wait for the restart), then restart
        self._later(self.controls.restart(), "restart")
        return Response.json({"code": "R000", "msg": "restarting"})

    async def set_miner_conf(self, req: Request) -> Response:
        refusal = self._write_gate(req)
        if refusal is not None:
            return refusal
        assert self.controls is not None
        body = _body(req)
        wanted = _wanted_pools(body)
        try:
            if wanted:
                await self._apply_pools(wanted)
            mode = body.get("miner-mode", body.get("bitmain-work-mode"))
            if mode is not None and str(mode).strip().isdigit():
                if int(str(mode)) == 1:
                    await self.controls.pause("stock CGI: miner-mode sleep")
                else:
                    await self.controls.resume("stock CGI: miner-mode normal")
        except ControlError as e:
            log.warning("stock CGI: set_miner_conf from %s failed: %s", req.peer, e)
            return Response.json({"stats": "error", "code": "M001", "msg": str(e)}, status=400)
        return Response.json({"stats": "success", "code": "M000", "msg": "OK!"})

    async def _apply_pools(self, wanted: list[tuple[str, str, str]]) -> None:
        """Make the configured pools the wanted ones, in order: add the new, remove those no longer
        listed, then reorder. A pool already there with the same url and user keeps its password
        (pyasic reads the pools back with empty passwords before it writes them)."""
        assert self.controls is not None
        have = {(str(p.get("url")), str(p.get("user"))) for p in self.controls.pools()}
        for priority, (url, user, password) in enumerate(wanted):
            if (url, user) not in have:
                await self.controls.add_pool(url, user, password, priority)
        keep = {(url, user) for url, user, _ in wanted}
        while True:
            stale = [p for p in self.controls.pools()
                     if (str(p.get("url")), str(p.get("user"))) not in keep]  # fmt: skip
            if not stale:
                break
            await self.controls.remove_pool(int(stale[-1]["index"]))
        # pool 1 is the preferred one: when the order differs, make each wanted pool the
        # preferred one, last to first, so the first ends on top
        order = [(url, user) for url, user, _ in wanted]

        def current() -> list[dict[str, Any]]:
            assert self.controls is not None
            return list(self.controls.pools())

        if [(str(p.get("url")), str(p.get("user"))) for p in current()] != order:
            for key in reversed(order):
                match = next(
                    (p for p in current() if (str(p.get("url")), str(p.get("user"))) == key), None
                )
                if match is not None:
                    await self.controls.switch_pool(int(match["index"]))

    def _later(self, coro: Awaitable[Any], what: str) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception:
                log.exception("stock CGI: %s failed", what)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def register(
    server: HTTPServer,
    state: Any,
    controls: Controls | None,
    options: StockCgiOptions,
    policy: AccessPolicy | None = None,
) -> StockCgi:
    """Mount the stock CGI pages on `server`; returns the handler object (counters, tests)."""
    cgi = StockCgi(state, controls, options, policy)
    reads = {
        "get_system_info": cgi.get_system_info,
        "get_miner_conf": cgi.get_miner_conf,
        "stats": cgi.stats,
        "summary": cgi.summary,
        "get_blink_status": cgi.get_blink_status,
    }
    for name, handler in reads.items():
        server.route("GET", f"{CGI}{name}.cgi", cgi._page(handler))
    # blink.cgi onPageLoaded is a read; start/stop are checked as writes inside
    server.route(("GET", "POST"), f"{CGI}blink.cgi", cgi._page(cgi.blink))
    server.route("POST", f"{CGI}set_miner_conf.cgi", cgi._page(cgi.set_miner_conf, write=True))
    server.route(("GET", "POST"), f"{CGI}reboot.cgi", cgi._page(cgi.reboot, write=True))
    return cgi


# ---------------------------------------------------------------------------- helpers


def _ghs(hs: Any) -> float:
    try:
        return round(float(hs) / 1e9, 9)
    except (TypeError, ValueError):
        return 0.0


def _body(req: Request) -> dict[str, Any]:
    """A JSON object body (modern client) or a form (old client); anything else is refused."""
    if not req.body:
        return dict(req.query)
    ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json" or req.body.lstrip()[:1] == b"{":
        data = req.json()
        if not isinstance(data, dict):
            raise HTTPError(400, "expected a JSON object")
        return data
    return req.form()


def _wanted_pools(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(url, user, password) for each non-empty pool in a JSON `pools` list or `_ant_poolN*`."""
    out: list[tuple[str, str, str]] = []
    pools = body.get("pools")
    if isinstance(pools, list):
        for p in pools[:3]:
            if isinstance(p, dict) and str(p.get("url", "")).strip():
                out.append((str(p["url"]).strip(), str(p.get("user", "")),
                            str(p.get("pass", p.get("password", "")))))  # fmt: skip
        return out
    for n in (1, 2, 3):
        url = str(body.get(f"_ant_pool{n}url", "")).strip()
        if url:
            out.append((url, str(body.get(f"_ant_pool{n}user", "")),
                        str(body.get(f"_ant_pool{n}pw", ""))))  # fmt: skip
    return out
