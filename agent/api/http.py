"""The agent's own web surface: the status page, /api/status, /api/health, /metrics and the
authenticated control actions, all on one HTTPServer (agent/api/httpserver.py).

    options = WebOptions(listen="0.0.0.0:80", password=owner_pw)
    surface = WebSurface(state, controls, options)
    await surface.start()  # surface.port: the bound port; surface.server: mount more routes
    ...
    await surface.stop()

Reads (GET/HEAD) are open to the `read_allow` networks. Writes are POST /api/control/<action>,
only from `write_allow` networks (403 otherwise), only with HTTP Basic (`user` + owner password)
or `Authorization: Bearer <token>` (401 otherwise); an address that keeps failing is locked out
(429 with Retry-After). Every request also goes through a per-client token bucket (429).

Actions (JSON body, or form fields): pause {reason?}, resume {reason?}, restart, locate {on,
seconds?}, pools, add_pool {url, user, password, priority?}, switch_pool {index}, enable_pool
{index}, disable_pool {index}, remove_pool {index}. The answer is {"ok": true, "result": ...}.

/api/health answers 200 {"status": "ok"} or 503 {"status": "degraded", "reasons": [...]}."""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from agent import defaults as D
from agent.api.controls import ControlError, Controls
from agent.api.httpserver import HTTPError, HTTPServer, Limits, Request, Response
from agent.api.status_page import render_status_page
from agent.security.access import AccessPolicy, LoginGuard, check_basic, check_bearer
from agent.security.ratelimit import RateLimiter
from agent.state import State

log = logging.getLogger("agent.api.web")

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REALM = "doge-agent"


def parse_listen(listen: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); raises ValueError naming what is wrong."""
    host, sep, port = listen.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen must be 'host:port', got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ValueError(f"listen must name a host, got {listen!r}")
    return host, int(port)


@dataclass(frozen=True)
class WebOptions:
    """How the web surface listens and whom it lets in. Secrets are kept out of repr()."""

    listen: str = D.HTTP_LISTEN
    read_allow: tuple[str, ...] = D.WEB_READ_ALLOW
    write_allow: tuple[str, ...] = D.WEB_WRITE_ALLOW
    user: str = "admin"  # the Basic-auth user name; the owner password goes with it
    password: str = field(default="", repr=False)  # empty: Basic auth disabled
    token: str = field(default="", repr=False)  # empty: Bearer auth disabled
    tls: ssl.SSLContext | None = None  # serve HTTPS with this context ...
    tls_cert_file: str | None = None  # ... or build one from a certificate chain + key
    tls_key_file: str | None = None
    limits: Limits = field(default_factory=Limits)
    rate_per_s: float = D.HTTP_RATE_PER_S
    rate_burst: int = D.HTTP_RATE_BURST
    rate_max_clients: int = D.HTTP_RATE_MAX_CLIENTS
    login_max_failures: int = D.WEB_LOGIN_MAX_FAILURES
    login_lockout_s: float = D.WEB_LOGIN_LOCKOUT_S
    refresh_s: float = D.WEB_REFRESH_S
    health_hot_c: float = D.WEB_HEALTH_HOT_C

    @classmethod
    def from_config(
        cls, config: Any, *, password: str = "", token: str = "", **kw: Any
    ) -> WebOptions:
        """From a Config: [api] http_listen, and http_read_allow / http_write_allow /
        http_tls_cert / http_tls_key when the config has them. Secrets are passed in decrypted."""
        api = getattr(config, "api", None)
        o: dict[str, Any] = {"listen": getattr(api, "http_listen", D.HTTP_LISTEN)}
        for key, name in (("read_allow", "http_read_allow"), ("write_allow", "http_write_allow")):
            value = getattr(api, name, None)
            if value is not None:
                o[key] = tuple(value)
        for key, name in (("tls_cert_file", "http_tls_cert"), ("tls_key_file", "http_tls_key")):
            if getattr(api, name, None):
                o[key] = str(getattr(api, name))
        o.update(kw)
        return cls(password=password, token=token, **o)

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is not None:
            return self.tls
        if self.tls_cert_file:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(self.tls_cert_file, self.tls_key_file)
            return ctx
        return None


# ---------------------------------------------------------------------------- /metrics


def _go_float(value: float) -> str:
    """A sample value as Prometheus writes it (Go's float formatting, as prometheus_client)."""
    d = float(value)
    if math.isinf(d):
        return "+Inf" if d > 0 else "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to an exponent sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _label_value(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class MetricFamily:
    """One metric family of the Prometheus text exposition format 0.0.4: HELP, TYPE, samples.

    Written here, not with prometheus_client: the agent needs ~100 lines of it, the package and
    what it imports (http.server, wsgiref, urllib.request...) cost the agent ~1-4 MB of RSS. A
    counter's name is given without _total, which the exposition adds (as prometheus_client)."""

    __slots__ = ("documentation", "labels", "name", "samples", "type")

    def __init__(self, name: str, documentation: str, kind: str, labels: list[str] | None = None):
        self.name = name + "_total" if kind == "counter" else name
        self.documentation = documentation
        self.type = kind
        self.labels = tuple(labels or ())
        self.samples: list[tuple[tuple[str, ...], float]] = []

    def add_metric(self, values: list[str], value: float) -> None:
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.labels)} label values expected")
        self.samples.append((tuple(values), float(value)))

    def render(self, out: list[str]) -> None:
        doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {self.name} {doc}\n# TYPE {self.name} {self.type}\n")
        for values, value in self.samples:
            labels = ""
            if values:
                pairs = sorted(zip(self.labels, values, strict=True))
                labels = "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in pairs) + "}"
            out.append(f"{self.name}{labels} {_go_float(value)}\n")


def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> MetricFamily:
    return MetricFamily(name, documentation, "gauge", labels)


def _counter(name: str, documentation: str, labels: list[str] | None = None) -> MetricFamily:
    return MetricFamily(name, documentation, "counter", labels)


class SnapshotCollector:
    """Prometheus metrics read from one State snapshot per scrape."""

    def __init__(
        self,
        state: State,
        extra: Callable[[], dict[str, int]] | None = None,
        errors: Callable[[], dict[int, int]] | None = None,
    ) -> None:
        self.state = state
        self.extra = extra
        self.errors = errors

    def render(self) -> bytes:
        """The text exposition (format 0.0.4) of every family, as /metrics serves it."""
        out: list[str] = []
        for family in self.collect():
            family.render(out)
        return "".join(out).encode("utf-8")

    def collect(self) -> Iterator[MetricFamily]:
        s = self.state.snapshot()
        p = "doge_agent_"

        def gauge(name: str, doc: str, value: float | None, labels: dict[str, str] | None = None):
            g = _gauge(p + name, doc, labels=list(labels or {}))
            if value is not None:
                g.add_metric(list((labels or {}).values()), value)
            return g

        yield gauge("build_info", "Agent version", 1.0, {"version": str(s.get("version", ""))})
        yield gauge("uptime_seconds", "Seconds since the agent started", s["uptime_s"])
        yield gauge("hashrate_hs", "Total hashrate, hashes per second", s["hashrate_hs"])
        c = _counter(p + "nonces", "Nonces received from the hashing side")
        c.add_metric([], s["nonces"])
        yield c
        outcomes = _counter(p + "nonce_outcomes", "Nonces by final outcome", labels=["outcome"])
        for k, v in s["shares"].items():
            if k != "pending":
                outcomes.add_metric([k], v)
        yield outcomes
        yield gauge("nonces_pending", "Nonces waiting for a verdict", s["shares"].get("pending", 0))

        ch = {
            "hashrate": _gauge(p + "chain_hashrate_hs", "Chain hashrate", labels=["chain"]),
            "temp": _gauge(p + "chain_temp_c", "Chain temperature", labels=["chain"]),
            "chips": _gauge(p + "chain_chips", "Chips answering", labels=["chain"]),
            "freq": _gauge(p + "chain_frequency_mhz", "Chain clock", labels=["chain"]),
            "hw": _counter(p + "chain_hw_errors", "Chain HW errors", labels=["chain"]),
            "nonces": _counter(p + "chain_nonces", "Chain nonces", labels=["chain"]),
        }
        for chain in s["chains"]:
            lab = [str(chain["id"])]
            ch["hashrate"].add_metric(lab, chain["hashrate_hs"])
            if chain.get("temp_c") is not None:
                ch["temp"].add_metric(lab, chain["temp_c"])
            ch["chips"].add_metric(lab, chain["chips"])
            ch["freq"].add_metric(lab, chain["frequency_mhz"])
            ch["hw"].add_metric(lab, chain["hw_errors"])
            ch["nonces"].add_metric(lab, chain["nonces"])
        yield from ch.values()

        rpm = _gauge(p + "fan_rpm", "Fan speed", labels=["fan"])
        duty = _gauge(p + "fan_duty_pct", "Fan PWM duty", labels=["fan"])
        for i, fan in enumerate(s["fans"]):
            if fan.get("rpm") is not None:
                rpm.add_metric([str(i)], fan["rpm"])
            if fan.get("duty_pct") is not None:
                duty.add_metric([str(i)], fan["duty_pct"])
        yield rpm
        yield duty

        acc = _counter(p + "pool_accepted", "Shares accepted", labels=["pool"])
        rej = _counter(p + "pool_rejected", "Shares rejected", labels=["pool"])
        lat = _gauge(p + "pool_latency_ms", "Share submit latency", labels=["pool"])
        up = _gauge(p + "pool_up", "1 when the pool is alive", labels=["pool"])
        for pool in s["pools"]:
            lab = [pool["url"]]
            acc.add_metric(lab, pool["accepted"])
            rej.add_metric(lab, pool["rejected"])
            if pool.get("latency_ms") is not None:
                lat.add_metric(lab, pool["latency_ms"])
            up.add_metric(lab, 1.0 if pool.get("status") == "alive" else 0.0)
        yield from (acc, rej, lat, up)

        for name in ("guardian", "tuner", "thermal"):
            part = s.get(name)
            if isinstance(part, dict):
                g = _gauge(p + f"{name}_state", f"{name} state", labels=["state"])
                g.add_metric([str(part.get("state", ""))], 1.0)
                yield g
        if self.extra is not None:
            for k, v in self.extra().items():
                c = _counter(p + "http_" + k, f"HTTP surface: {k}")
                c.add_metric([], v)
                yield c
        if self.errors is not None:
            e = _counter(p + "http_errors", "HTTP error answers by status", labels=["status"])
            for status, n in sorted(self.errors().items()):
                e.add_metric([str(status)], n)
            yield e


# ---------------------------------------------------------------------------- /api/health


def health(snapshot: dict[str, Any], hot_c: float = D.WEB_HEALTH_HOT_C) -> dict[str, Any]:
    """ok, or degraded with the reasons: no live pool, a hot or unread chain, a stalled fan..."""
    reasons: list[str] = []
    pools = snapshot.get("pools", [])
    if not pools:
        reasons.append("no pool configured")
    elif not any(p.get("status") == "alive" for p in pools):
        reasons.append("no pool alive")
    guardian = snapshot.get("guardian", {})
    mining = guardian.get("state", "mine") == "mine"
    for c in snapshot.get("chains", []):
        t = c.get("temp_c")
        if t is not None and t >= hot_c:
            reasons.append(f"chain {c['id']} hot: {t:.1f} °C")
        if mining and c.get("chips", 0) == 0:
            reasons.append(f"chain {c['id']} has no chips")
    for i, f in enumerate(snapshot.get("fans", [])):
        if f.get("duty_pct") and not f.get("rpm"):
            reasons.append(f"fan {i} not turning")
    uptime = snapshot.get("uptime_s") or 0.0
    if mining and uptime > 2 * D.HASHRATE_WINDOW_S and not snapshot.get("hashrate_hs"):
        reasons.append("no hashrate")
    thermal = snapshot.get("thermal", {})
    if thermal.get("state") in ("throttle", "off", "tripped", "dangerous", "emergency"):
        reasons.append(f"thermal {thermal['state']}: {thermal.get('reason', '')}")
    return {
        "status": "degraded" if reasons else "ok",
        "reasons": reasons,
        "mining": mining,
        "guardian": guardian,
        "uptime_s": snapshot.get("uptime_s"),
    }


# ---------------------------------------------------------------------------- the surface


def finite(data: Any) -> Any:
    """JSON has no NaN or infinity: a non-finite number (a bad sensor read) becomes null."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [finite(v) for v in data]
    return data


def _index(args: dict[str, Any]) -> int:
    v = args.get("index")
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1000:
        raise HTTPError(400, "index must be a pool index (integer >= 0)")
    return v


def _text(args: dict[str, Any], key: str, *, required: bool = True, max_len: int = 512) -> str:
    v = args.get(key, "")
    if not isinstance(v, str) or len(v) > max_len or any(ord(ch) < 32 for ch in v):
        raise HTTPError(400, f"{key} must be a short text")
    if required and not v:
        raise HTTPError(400, f"{key} is required")
    return v


def _bool(args: dict[str, Any], key: str, default: bool) -> bool:
    v = args.get(key, default)
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("1", "true", "on", "yes", "0", "false", "off", "no"):
        return v.lower() in ("1", "true", "on", "yes")
    raise HTTPError(400, f"{key} must be true or false")


def _seconds(args: dict[str, Any]) -> float | None:
    v = args.get("seconds")
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise HTTPError(400, "seconds must be a number") from None
    if isinstance(v, bool) or not math.isfinite(f) or not 0 < f <= 86400:
        raise HTTPError(400, "seconds must be between 0 and 86400")
    return f


class WebSurface:
    """Status page, JSON, /metrics and control actions for one State and one Controls."""

    def __init__(
        self,
        state: State,
        controls: Controls | None,
        options: WebOptions | None = None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.state = state
        self.controls = controls
        self.options = options or WebOptions()
        opts = self.options
        host, port = parse_listen(opts.listen)
        self.policy = AccessPolicy(list(opts.read_allow), list(opts.write_allow))
        kw: dict[str, Any] = {"clock": clock} if clock is not None else {}
        self.guard = LoginGuard(opts.login_max_failures, opts.login_lockout_s, **kw)
        self.limiter = RateLimiter(opts.rate_per_s, opts.rate_burst, opts.rate_max_clients, **kw)
        self.server = HTTPServer(
            host,
            port,
            limits=opts.limits,
            ssl=opts.ssl_context(),
            rate_limit=self.limiter.allow,
            name="web",
        )
        self.counters = {"auth_failures": 0, "forbidden": 0, "locked_out": 0, "controls": 0}
        self.metrics = SnapshotCollector(
            state, self._http_counters, lambda: dict(self.server.errors_by_status)
        )
        self._page = render_status_page(opts.refresh_s).encode("utf-8")
        self._secrets = [x for x in (opts.password, opts.token) if x]
        read = self._readable
        self.server.route("GET", "/", read(self._status_page))
        self.server.route("GET", "/index.html", read(self._status_page))
        self.server.route("GET", "/api/status", read(self._status))
        self.server.route("GET", "/api/health", read(self._health))
        self.server.route("GET", "/metrics", read(self._metrics))
        self.server.route("POST", "/api/control/", self._control, prefix=True)

    # -- lifecycle

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    def _http_counters(self) -> dict[str, int]:
        st = self.server.stats
        return {
            "requests": st["requests"],
            "bad_requests": st["bad_requests"],
            "rate_limited": st["rate_limited"],
            "timeouts": st["timeouts"],
            "auth_failures": self.counters["auth_failures"],
            "forbidden": self.counters["forbidden"],
            "lockouts": self.guard.lockouts,
        }

    # -- reads

    def _readable(self, handler: Callable[[Request], Awaitable[Response]]):
        async def guarded(req: Request) -> Response:
            if not self.policy.may_read(req.peer):
                self.counters["forbidden"] += 1
                raise HTTPError(403, "reads are not allowed from this address")
            return await handler(req)

        return guarded

    async def _status_page(self, req: Request) -> Response:
        return Response(
            200,
            {
                "Content-Type": "text/html; charset=utf-8",
                "Cache-Control": "no-store",
                # No outside assets, no framing: everything the page needs is inline.
                "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; "
                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                "X-Frame-Options": "DENY",
                "Referrer-Policy": "no-referrer",
            },
            self._page,
        )

    async def _status(self, req: Request) -> Response:
        return Response.json(finite(self.state.snapshot()))

    async def _health(self, req: Request) -> Response:
        h = health(self.state.snapshot(), self.options.health_hot_c)
        return Response.json(finite(h), 200 if h["status"] == "ok" else 503)

    async def _metrics(self, req: Request) -> Response:
        body = self.metrics.render()
        return Response(
            200, {"Content-Type": PROMETHEUS_CONTENT_TYPE, "Cache-Control": "no-store"}, body
        )

    # -- writes

    def _authenticate(self, req: Request) -> None:
        """Raise 403/429/401 unless this request may write; count and lock out failures."""
        ip = req.peer
        if not self.policy.may_write(ip):
            self.counters["forbidden"] += 1
            log.warning("web: control refused from %s: address not allowed to write", ip)
            raise HTTPError(403, "writes are not allowed from this address")
        if self.guard.locked(ip):
            self.counters["locked_out"] += 1
            retry = max(1, math.ceil(self.guard.remaining_s(ip)))
            raise HTTPError(429, "too many failed logins; try later", {"Retry-After": str(retry)})
        auth = req.headers.get("authorization")
        challenge = {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}
        if not auth:
            raise HTTPError(401, "authentication required", challenge)
        o = self.options
        if check_basic(auth, o.user, o.password) or check_bearer(auth, o.token):
            self.guard.succeeded(ip)
            return
        self.counters["auth_failures"] += 1
        self.guard.failed(ip)
        log.warning("web: failed login from %s", ip)  # never the header: it holds the guess
        if self.guard.locked(ip):
            log.warning("web: %s locked out after repeated failed logins", ip)
        raise HTTPError(401, "wrong credentials", challenge)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _args(self, req: Request) -> dict[str, Any]:
        if not req.body:
            return dict(req.query)
        ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/x-www-form-urlencoded":
            return req.form()
        data = req.json()
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise HTTPError(400, "body must be a JSON object")
        return data

    async def _control(self, req: Request) -> Response:
        self._authenticate(req)
        action = req.path.removeprefix("/api/control/")
        args = self._args(req)
        if self.controls is None:
            raise HTTPError(503, "controls are not available")
        c = self.controls
        secrets = list(self._secrets)
        try:
            result: Any
            if action == "pause":
                result = await c.pause(_text(args, "reason", required=False) or "web: owner")
            elif action == "resume":
                result = await c.resume(_text(args, "reason", required=False) or "web: owner")
            elif action == "restart":
                result = await c.restart()
            elif action == "locate":
                result = c.locate(_bool(args, "on", True), _seconds(args))
            elif action == "pools":
                result = [{k: v for k, v in p.items() if "password" not in k} for p in c.pools()]
            elif action == "add_pool":
                url = _text(args, "url")
                if not url.startswith(("stratum+tcp://", "stratum+ssl://", "stratum+tls://")):
                    raise HTTPError(400, "url must be stratum+tcp:// or stratum+ssl://")
                password = _text(args, "password", required=False)
                if password:
                    secrets.append(password)
                prio = args.get("priority")
                priority = None if prio in (None, "") else _index({"index": prio})
                result = await c.add_pool(url, _text(args, "user"), password, priority)
            elif action == "switch_pool":
                result = await c.switch_pool(_index(args))
            elif action == "enable_pool":
                result = await c.enable_pool(_index(args), True)
            elif action == "disable_pool":
                result = await c.enable_pool(_index(args), False)
            elif action == "remove_pool":
                result = await c.remove_pool(_index(args))
            else:
                raise HTTPError(404, "unknown control action")
        except ControlError as e:
            msg = str(e)
            for s in secrets:
                msg = msg.replace(s, "***")
            log.info("web: control %s from %s refused: %s", action, req.peer, msg)
            return Response.json({"ok": False, "error": msg}, 409)
        self.counters["controls"] += 1
        if isinstance(result, str):
            for s in secrets:
                result = result.replace(s, "***")
            log.info("web: control %s from %s: %s", action, req.peer, result)
            self.state.add_event("control", f"{action} from {req.peer}: {result}")
        else:
            log.info("web: control %s from %s", action, req.peer)
        return Response.json({"ok": True, "result": result})
