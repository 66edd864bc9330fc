"""One Stratum V1 connection to one pool: TCP or TLS, the handshake, and the message loop.

The client owns no policy beyond its own connection: pools.py decides when to connect, which
pool is active and where a share goes. Pool input is validated by protocol.py; a bad line is
logged (with what was wrong), counted and dropped, and a peer that stalls mid-line, stays silent
too long, sends an over-long line or floods garbage is disconnected. The password is sent once,
in mining.authorize, and never appears in a log line: pool text we log is scrubbed of it too.

Usage (one connection; make a new client to reconnect, passing the old session_id to resume):

    client = StratumClient(ClientTarget(host, port, tls=False), user, password, on_event=cb)
    await client.start()           # connect, subscribe, authorize; raises StratumConnectError
    reply = await client.submit(job, extranonce2, ntime, nonce)     # -> SubmitReply
    reason = await client.wait_closed()
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from agent import defaults as D
from agent.stratum import protocol as P

log = logging.getLogger(__name__)


class StratumConnectError(Exception):
    """The connection or the handshake failed; the text says why (never with a secret)."""


class ConnectionLost(Exception):
    """The connection closed before a reply arrived."""


@dataclass(frozen=True)
class ClientOptions:
    connect_timeout_s: float = D.STRATUM_CONNECT_TIMEOUT_S
    request_timeout_s: float = D.STRATUM_REQUEST_TIMEOUT_S
    submit_timeout_s: float = D.STRATUM_SUBMIT_TIMEOUT_S
    idle_timeout_s: float = D.STRATUM_IDLE_TIMEOUT_S
    line_timeout_s: float = D.STRATUM_LINE_TIMEOUT_S
    max_line_bytes: int = D.STRATUM_MAX_LINE_BYTES
    max_bad_lines: int = D.STRATUM_MAX_BAD_LINES
    bad_window_s: float = D.STRATUM_BAD_WINDOW_S
    latency_alpha: float = D.STRATUM_LATENCY_ALPHA
    extranonce_subscribe: bool = D.STRATUM_EXTRANONCE_SUBSCRIBE
    suggest_difficulty: float | None = None
    allow_redirect: bool = D.STRATUM_ALLOW_REDIRECT
    ca_file: str | None = None  # TLS: trust this CA bundle instead of the system's
    cert_sha256: str | None = None  # TLS: pin the server certificate (hex, colons allowed)
    keepalive_idle_s: float = D.STRATUM_KEEPALIVE_IDLE_S
    keepalive_interval_s: float = D.STRATUM_KEEPALIVE_INTERVAL_S
    keepalive_count: int = D.STRATUM_KEEPALIVE_COUNT


@dataclass(frozen=True)
class ClientTarget:
    host: str
    port: int
    tls: bool = False


# ------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Job:
    """A job ready for work: the notify with the difficulty and extranonce in force for it."""

    notify: P.Notify
    difficulty: float
    extranonce1: bytes
    extranonce2_size: int
    pool: str  # the label of the pool that sent it (pools.py routes shares by it)
    connection: int  # which connection of that pool: a job is only valid on its session
    received: float = field(default_factory=time.monotonic, compare=False)


@dataclass(frozen=True)
class Disconnected:
    reason: str


@dataclass(frozen=True)
class Redirect:
    """The pool asked us (client.reconnect) to connect again, maybe elsewhere, after wait_s."""

    host: str
    port: int
    wait_s: float


Event = Job | Disconnected | Redirect


@dataclass(frozen=True)
class SubmitReply:
    accepted: bool
    error: P.StratumError | None
    latency_ms: float


_connection_ids = iter(range(1, 1 << 62))
_MAX_EARLY_MESSAGES = 64  # job messages kept while authorize is pending


def tls_context(options: ClientOptions) -> ssl.SSLContext:
    """Verify the pool's certificate by default; with a pin, the pin replaces CA verification
    (a self-signed pool cert is then fine), and it is checked right after the handshake."""
    if options.cert_sha256:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=options.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def normalise_fingerprint(pin: str) -> str:
    text = pin.replace(":", "").strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("cert_sha256 must be 64 hex digits (colons allowed)")
    return text


class StratumClient:
    def __init__(
        self,
        target: ClientTarget,
        user: str,
        password: str,
        *,
        options: ClientOptions | None = None,
        on_event: Callable[[Event], None] | None = None,
        label: str | None = None,
        home_host: str | None = None,
        session_id: str | None = None,
    ) -> None:
        self.target = target
        self.user = user
        self._password = password
        if options is not None and options.cert_sha256:
            normalise_fingerprint(options.cert_sha256)  # a bad pin is a config error: say so now
        self.options = options or ClientOptions()
        self._on_event = on_event
        self.label = label or f"{target.host}:{target.port}"
        # client.reconnect is honoured only to this host unless allow_redirect is set
        self.home_host = home_host or target.host
        self.session_id = session_id  # sent in subscribe to resume; updated from its result
        self.resumed = False  # the pool kept our session (same extranonce1 as before)
        self.previous_extranonce1: bytes | None = None
        self.connection = next(_connection_ids)

        self.extranonce1 = b""
        self.extranonce2_size = 0
        self.difficulty = D.STRATUM_INITIAL_DIFFICULTY
        self.authorized = False
        self.latency_ms: float | None = None
        self.bad_lines = 0  # malformed or invalid lines, total
        self.last_error: str | None = None
        self.closed_reason: str | None = None

        self._next_difficulty: float | None = None
        self._next_extranonce: P.SetExtranonce | None = None
        self._early: deque[P.Message] = deque(maxlen=_MAX_EARLY_MESSAGES)
        self._bad_times: deque[float] = deque()
        self._next_id = 1
        self._pending: dict[int, tuple[str, float, asyncio.Future[P.Reply]]] = {}
        self._timed_out: set[int] = set()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()

    # ---------------------------------------------------------------------------- public

    async def start(self) -> None:
        """Connect, subscribe, (extranonce.subscribe, suggest_difficulty), authorize.

        Raises StratumConnectError with the reason; the connection is closed on failure."""
        try:
            await self._open()
            self._read_task = asyncio.create_task(self._read_loop(), name=f"stratum {self.label}")
            await self._handshake()
        except StratumConnectError as exc:
            await self.close(str(exc))
            raise
        except (TimeoutError, OSError, ConnectionLost, ssl.SSLError) as exc:
            reason = _describe(exc)
            await self.close(reason)
            raise StratumConnectError(reason) from None
        except asyncio.CancelledError:
            # the owner is stopping: leave no socket or reader task behind
            self._close("cancelled")
            if self._read_task is not None:
                self._read_task.cancel()
            raise
        # job messages that came before the authorize reply, replayed in order (a
        # set_difficulty between two notifies must still apply to the second only)
        early, self._early = list(self._early), deque()
        for msg in early:
            self._dispatch(msg)
        if self.is_closed:
            raise StratumConnectError(self.closed_reason or "closed during the handshake")

    async def submit(self, job: Job, extranonce2: bytes, ntime: int, nonce: int) -> SubmitReply:
        """Send one share and wait for its reply (or the submit timeout).

        Raises ConnectionLost if the connection is (or goes) down before the reply, and
        asyncio.TimeoutError if the pool does not answer in time."""
        if self.is_closed:
            raise ConnectionLost(self.closed_reason or "not connected")
        t0 = time.monotonic()
        try:
            reply = await self._request(
                "mining.submit",
                lambda i: P.submit(i, self.user, job.notify.job_id, extranonce2, ntime, nonce),
                self.options.submit_timeout_s,
            )
        except TimeoutError as exc:
            # A pool that does not answer a share is dead or drowning, and a dead host that
            # sent no FIN is otherwise only noticed at the idle timeout: drop it, so the
            # owner fails over now and the share can go again after reconnecting.
            self._close(str(exc))
            raise
        accepted = reply.error is None and reply.result is True
        error = reply.error
        if error is not None:
            # the owner logs and counts reasons: a pool echoing our password gets it masked
            error = P.StratumError(error.code, self._scrub(error.message), error.data)
        if not accepted and error is None:
            error = P.StratumError(None, f"rejected (result {P._shown(reply.result)})")
        return SubmitReply(accepted, error, (time.monotonic() - t0) * 1000.0)

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> str:
        await self._closed.wait()
        return self.closed_reason or "closed"

    async def close(self, reason: str = "closed by us") -> None:
        self._close(reason, ours=True)
        if self._read_task is not None and self._read_task is not asyncio.current_task():
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._read_task
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)

    # ---------------------------------------------------------------------------- connecting

    async def _open(self) -> None:
        t = self.target
        ssl_ctx = tls_context(self.options) if t.tls else None
        pin = normalise_fingerprint(self.options.cert_sha256) if self.options.cert_sha256 else None
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(
                    t.host,
                    t.port,
                    ssl=ssl_ctx,
                    server_hostname=t.host if ssl_ctx else None,
                    limit=self.options.max_line_bytes + 1,
                ),
                self.options.connect_timeout_s,
            )
        except TimeoutError:
            raise StratumConnectError(
                f"connect to {t.host}:{t.port} timed out after {self.options.connect_timeout_s}s"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise StratumConnectError(
                f"TLS certificate of {t.host}:{t.port} refused: {exc.verify_message}"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise StratumConnectError(f"connect to {t.host}:{t.port}: {_describe(exc)}") from None
        _keepalive(self._writer, self.options)
        if pin is not None:
            sslobj = self._writer.get_extra_info("ssl_object")
            der = sslobj.getpeercert(binary_form=True) if sslobj else None
            got = hashlib.sha256(der).hexdigest() if der else ""
            if not hmac.compare_digest(got, pin):
                raise StratumConnectError(
                    f"TLS certificate of {t.host}:{t.port} does not match the pinned SHA-256 "
                    f"(got {got or 'no certificate'})"
                )

    async def _handshake(self) -> None:
        timeout = self.options.request_timeout_s
        reply = await self._request(
            "mining.subscribe", lambda i: P.subscribe(i, self.session_id), timeout
        )
        if reply.error is not None and self.session_id is not None:
            # some pools refuse the resume parameter: try once as a fresh session
            log.info("%s: subscribe with session refused (%s), retrying", self.label, reply.error)
            self.session_id = None
            reply = await self._request("mining.subscribe", lambda i: P.subscribe(i), timeout)
        if reply.error is not None:
            raise StratumConnectError(f"mining.subscribe refused: {self._scrub(str(reply.error))}")
        try:
            sub = P.parse_subscribe_result(reply.result)
        except P.ProtocolError as exc:
            raise StratumConnectError(str(exc)) from None
        self.resumed = (
            self.previous_extranonce1 is not None and sub.extranonce1 == self.previous_extranonce1
        )
        self.extranonce1, self.extranonce2_size = sub.extranonce1, sub.extranonce2_size
        if sub.session_id is not None:
            self.session_id = sub.session_id
        if self.options.extranonce_subscribe:
            # fire and forget: pools may ignore it or answer false; the reply is only logged
            self._send_nowait("mining.extranonce.subscribe", P.extranonce_subscribe)
        if self.options.suggest_difficulty is not None:
            d = self.options.suggest_difficulty
            self._send_nowait("mining.suggest_difficulty", lambda i: P.suggest_difficulty(i, d))
        reply = await self._request(
            "mining.authorize", lambda i: P.authorize(i, self.user, self._password), timeout
        )
        if reply.error is not None or reply.result is not True:
            why = reply.error or f"result {P._shown(reply.result)}"
            raise StratumConnectError(
                f"mining.authorize of {self.user!r} refused: {self._scrub(str(why))}"
            )
        self.authorized = True
        log.info(
            "%s: connected as %s (extranonce1 %s, extranonce2 %d bytes%s)",
            self.label,
            self.user,
            self.extranonce1.hex(),
            self.extranonce2_size,
            ", session resumed" if self.resumed else "",
        )

    # ---------------------------------------------------------------------------- requests

    def _send_line(self, line: bytes) -> None:
        if self._writer is None or self.is_closed:
            raise ConnectionLost(self.closed_reason or "not connected")
        self._writer.write(line)

    def _register(self, method: str, encode: Callable[[int], bytes]) -> asyncio.Future[P.Reply]:
        msg_id = self._next_id
        self._next_id += 1
        fut: asyncio.Future[P.Reply] = asyncio.get_running_loop().create_future()
        self._send_line(encode(msg_id))
        self._pending[msg_id] = (method, time.monotonic(), fut)
        return fut

    def _send_nowait(self, method: str, encode: Callable[[int], bytes]) -> None:
        fut = self._register(method, encode)
        fut.add_done_callback(lambda f: self._log_side_reply(method, f))

    def _log_side_reply(self, method: str, fut: asyncio.Future[P.Reply]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        reply = fut.result()
        if reply.error is not None or reply.result is not True:
            log.info("%s: %s not taken: %s", self.label, method, reply.error or reply.result)

    async def _request(
        self, method: str, encode: Callable[[int], bytes], timeout: float
    ) -> P.Reply:
        fut = self._register(method, encode)
        try:
            await self._drain()  # inside: a close while draining leaves fut with an error
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            raise TimeoutError(f"no reply to {method} within {timeout}s") from None
        finally:
            if not fut.done():
                fut.cancel()
                self._timed_out.add(self._forget(fut))
            elif not fut.cancelled():
                fut.exception()  # read here, or "Future exception was never retrieved"

    def _forget(self, fut: asyncio.Future[P.Reply]) -> int:
        for msg_id, (_m, _t, f) in list(self._pending.items()):
            if f is fut:
                del self._pending[msg_id]
                return msg_id
        return -1

    async def _drain(self) -> None:
        if self._writer is None:
            return
        try:
            # bounded: a pool that stops reading must not block our reader forever
            await asyncio.wait_for(self._writer.drain(), self.options.request_timeout_s)
        except TimeoutError:
            self._close(f"pool stopped reading for {self.options.request_timeout_s}s")
            raise ConnectionLost(self.closed_reason or "write stalled") from None
        except (OSError, RuntimeError) as exc:
            self._close(f"write failed: {_describe(exc)}")
            raise ConnectionLost(self.closed_reason or "write failed") from None

    # ---------------------------------------------------------------------------- reading

    async def _read_loop(self) -> None:
        assert self._reader is not None
        buf = bytearray()
        reason = "connection closed by the pool"
        try:
            while True:
                # a partial line must complete quickly; a silent link may idle much longer
                timeout = self.options.line_timeout_s if buf else self.options.idle_timeout_s
                try:
                    chunk = await asyncio.wait_for(self._reader.read(65536), timeout)
                except TimeoutError:
                    if buf:
                        reason = f"pool stalled mid-line for {timeout}s ({len(buf)} bytes pending)"
                    else:
                        reason = f"nothing from the pool for {timeout}s"
                    break
                if not chunk:
                    reason = "connection closed by the pool"
                    if buf:
                        reason += f" mid-line ({len(buf)} bytes dropped)"
                    break
                buf += chunk
                while True:
                    nl = buf.find(b"\n")
                    if nl < 0:
                        break
                    line = bytes(buf[:nl]).rstrip(b"\r")
                    del buf[: nl + 1]
                    if self.is_closed:
                        return
                    if line.strip():
                        self._handle_line(line)
                if len(buf) > self.options.max_line_bytes:
                    self._bad(f"line longer than {self.options.max_line_bytes} bytes")
                    reason = f"line longer than {self.options.max_line_bytes} bytes"
                    break
                if self.is_closed:
                    return
                await self._drain()
        except asyncio.CancelledError:
            raise
        except ConnectionLost:
            return
        except (OSError, ssl.SSLError) as exc:
            reason = f"read failed: {_describe(exc)}"
        except Exception as exc:  # never let pool input kill the task silently
            log.exception("%s: unexpected error in the reader", self.label)
            reason = f"internal error: {type(exc).__name__}"
        self._close(reason)

    def _handle_line(self, line: bytes) -> None:
        try:
            msg = P.parse_line(line, self.options.max_line_bytes)
        except P.ProtocolError as exc:
            self._bad(str(exc))
            return
        try:
            self._dispatch(msg)
        except ConnectionLost:
            raise
        except P.ProtocolError as exc:
            self._bad(str(exc))

    def _bad(self, what: str) -> None:
        self.bad_lines += 1
        self.last_error = self._scrub(what)
        log.warning("%s: bad message dropped: %s", self.label, self.last_error)
        now = time.monotonic()
        self._bad_times.append(now)
        while self._bad_times and now - self._bad_times[0] > self.options.bad_window_s:
            self._bad_times.popleft()
        if len(self._bad_times) > self.options.max_bad_lines:
            self._close(f"{len(self._bad_times)} bad messages within {self.options.bad_window_s}s")
            raise ConnectionLost("too many bad messages")

    def _dispatch(self, msg: P.Message) -> None:
        if not self.authorized and isinstance(msg, P.Notify | P.SetDifficulty | P.SetExtranonce):
            self._early.append(msg)  # jobs go out only once authorize has succeeded
        elif isinstance(msg, P.Reply):
            self._on_reply(msg)
        elif isinstance(msg, P.Notify):
            self._apply_notify(msg)
        elif isinstance(msg, P.SetDifficulty):
            # latched: shares of the current job keep the old target (pools enforce the new
            # one from the next job; a stricter pool gets a few low-difficulty rejects)
            self._next_difficulty = msg.difficulty
        elif isinstance(msg, P.SetExtranonce):
            self._next_extranonce = msg
        elif isinstance(msg, P.Ping):
            if msg.id is not None:
                self._send_line(P.reply_ping(msg.id))
        elif isinstance(msg, P.GetVersion):
            if msg.id is not None:
                self._send_line(P.reply_get_version(msg.id))
        elif isinstance(msg, P.ShowMessage):
            log.info("%s: message from the pool: %s", self.label, self._scrub(msg.text[:500]))
            if msg.id is not None:
                self._send_line(P.reply_show_message(msg.id))
        elif isinstance(msg, P.Reconnect):
            self._on_reconnect(msg)
        elif isinstance(msg, P.UnknownMethod):
            self._bad(f"unknown method {P._shown(msg.method)}")
            if msg.id is not None and not self.is_closed:
                self._send_line(P.reply_unknown_method(msg.id, msg.method))

    def _on_reply(self, reply: P.Reply) -> None:
        msg_id = reply.id
        if isinstance(msg_id, str) and msg_id.isascii() and msg_id.isdigit() and len(msg_id) < 12:
            msg_id = int(msg_id)  # some pools echo our numeric id as a string
        entry = self._pending.pop(msg_id, None) if isinstance(msg_id, int) else None
        if entry is None and msg_id in self._timed_out:
            self._timed_out.discard(msg_id)  # type: ignore[arg-type]
            log.info("%s: late reply to request %s ignored", self.label, reply.id)
            return
        if entry is None:
            # a duplicate, late or invented id: nothing waits for it
            raise P.ProtocolError(f"reply to unknown id {P._shown(reply.id)}")
        _method, sent, fut = entry
        sample = (time.monotonic() - sent) * 1000.0
        a = self.options.latency_alpha
        self.latency_ms = (
            sample if self.latency_ms is None else a * sample + (1 - a) * self.latency_ms
        )
        if not fut.done():
            fut.set_result(reply)

    def _apply_notify(self, notify: P.Notify) -> None:
        if self._next_difficulty is not None:
            self.difficulty, self._next_difficulty = self._next_difficulty, None
        if self._next_extranonce is not None:
            self.extranonce1 = self._next_extranonce.extranonce1
            self.extranonce2_size = self._next_extranonce.extranonce2_size
            self._next_extranonce = None
        job = Job(
            notify=notify,
            difficulty=self.difficulty,
            extranonce1=self.extranonce1,
            extranonce2_size=self.extranonce2_size,
            pool=self.label,
            connection=self.connection,
        )
        self._emit(job)

    def _on_reconnect(self, msg: P.Reconnect) -> None:
        host = msg.host or self.target.host
        port = msg.port or self.target.port
        if host.lower() != self.home_host.lower() and not self.options.allow_redirect:
            self._bad(f"client.reconnect to another host {host!r} refused (allow_redirect is off)")
            return
        wait = msg.wait_s or 0.0
        log.info("%s: pool asks to reconnect to %s:%d in %.1fs", self.label, host, port, wait)
        self._emit(Redirect(host, port, wait))
        self._close(f"client.reconnect to {host}:{port}")

    # ---------------------------------------------------------------------------- closing

    def _close(self, reason: str, ours: bool = False) -> None:
        if self.is_closed:
            return
        self.closed_reason = reason
        self._closed.set()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        pending, self._pending = self._pending, {}
        for method, _sent, fut in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLost(f"{method}: {reason}"))
        if self.authorized:
            # only a connection that was up is news to the owner; start() reports the rest
            log.log(
                logging.INFO if ours else logging.WARNING,
                "%s: disconnected: %s",
                self.label,
                reason,
            )
            self._emit(Disconnected(reason))

    def _emit(self, event: Event) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:  # the owner's bug must not take the connection down
            log.exception("%s: event handler failed on %s", self.label, type(event).__name__)

    def _scrub(self, text: str) -> str:
        """Pool text may echo what we sent: never let the password reach a log."""
        # A one- or two-letter password ("x") is a placeholder, not a secret, and replacing it
        # would garble every hex string in the text.
        if len(self._password) >= 3 and self._password in text:
            text = text.replace(self._password, "***")
        return text


def _keepalive(writer: asyncio.StreamWriter, options: ClientOptions) -> None:
    """TCP keepalive: a pool host that vanishes without a FIN is noticed in about
    idle + interval * count seconds instead of at the idle timeout."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE", options.keepalive_idle_s),
            ("TCP_KEEPINTVL", options.keepalive_interval_s),
            ("TCP_KEEPCNT", options.keepalive_count),
        ):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), max(1, int(value)))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
