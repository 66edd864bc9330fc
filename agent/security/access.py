"""Access-control primitives for every listening surface: network allow lists, a login lockout,
HTTP Digest (RFC 7616, MD5 like stock Antminer firmware, or SHA-256), Basic and Bearer checks.

Everything here is pure and synchronous with an injectable clock. Nothing here logs, and no
credential is ever put in an exception message or a repr."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import re
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

Clock = Callable[[], float]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Bounds on what a client may send us: a header longer than this is refused before parsing.
MAX_AUTH_HEADER_CHARS = 4096


class AccessConfigError(ValueError):
    """An allow list entry that is not a network; the message names the list and the entry."""


# ---------------------------------------------------------------------------- addresses


def parse_ip(ip: str) -> IPAddress | None:
    """The address a peer connected from, or None when `ip` is not one.

    IPv4-mapped IPv6 (::ffff:a.b.c.d, what a dual-stack socket reports for IPv4 peers) becomes the
    IPv4 address, so one IPv4 allow list covers both kinds of socket. A scope (%eth0) is dropped."""
    if not isinstance(ip, str) or not ip or len(ip) > 64:
        return None
    text = ip.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _parse_networks(name: str, entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    if isinstance(entries, str):
        # A single string would otherwise be iterated character by character.
        raise AccessConfigError(f"{name}: must be a list of networks, got a single string")
    nets: list[IPNetwork] = []
    for i, entry in enumerate(entries):
        where = f"{name}[{i}]"
        if not isinstance(entry, str):
            raise AccessConfigError(f"{where}: must be a string like '192.168.1.0/24', "
                                    f"got {type(entry).__name__}")
        text = entry.strip()
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            if "host bits set" in str(exc):
                fixed = ipaddress.ip_network(text, strict=False)
                raise AccessConfigError(
                    f"{where}: {entry!r} has host bits set; did you mean {str(fixed)!r}?"
                ) from None
            raise AccessConfigError(
                f"{where}: {entry!r} is not an IPv4/IPv6 address or network "
                f"(like '192.168.1.0/24', '10.0.0.7' or 'fd00::/8')"
            ) from None
        if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
            # ::ffff:a.b.c.d/N written by hand: match it as the IPv4 network it means.
            mapped = net.network_address.ipv4_mapped
            if mapped is not None:
                net = ipaddress.ip_network(f"{mapped}/{net.prefixlen - 96}")
        nets.append(net)
    return tuple(nets)


def _matches(nets: tuple[IPNetwork, ...], ip: str) -> bool:
    addr = parse_ip(ip)
    if addr is None:
        return False
    return any(addr.version == net.version and addr in net for net in nets)


class AccessPolicy:
    """Who may read and who may write, by source network.

    An empty list allows nobody. The two lists are independent: a surface that writes checks
    may_write (and its own authentication); it does not imply read access."""

    def __init__(self, read_allow: list[str], write_allow: list[str]) -> None:
        self.read_networks = _parse_networks("read_allow", read_allow)
        self.write_networks = _parse_networks("write_allow", write_allow)

    def may_read(self, ip: str) -> bool:
        return _matches(self.read_networks, ip)

    def may_write(self, ip: str) -> bool:
        return _matches(self.write_networks, ip)

    def __repr__(self) -> str:
        r = [str(n) for n in self.read_networks]
        w = [str(n) for n in self.write_networks]
        return f"AccessPolicy(read_allow={r!r}, write_allow={w!r})"


# ---------------------------------------------------------------------------- login lockout


def client_key(ip: str) -> str:
    """The identity a lockout is kept under: the IPv4 address, or the IPv6 /64.

    One IPv6 host owns a whole /64 and can rotate through it, so counting per address would let it
    guess forever; an unparseable peer string is kept as given (still bounded by the table)."""
    addr = parse_ip(ip)
    if addr is None:
        return str(ip)[:64]
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


@dataclass
class _Failures:
    count: int
    first_s: float
    locked_until_s: float


class LoginGuard:
    """Lock a client out for `lockout_s` after `max_failures` failed logins.

    Failures older than `lockout_s` are forgotten, so a typo a day never locks the owner out.
    At most `max_clients` clients are tracked; beyond that the least recently seen is forgotten,
    which keeps memory bounded under a flood of addresses (pair it with a RateLimiter)."""

    def __init__(
        self,
        max_failures: int,
        lockout_s: float,
        clock: Clock = time.monotonic,
        max_clients: int = 4096,
    ) -> None:
        if not (isinstance(max_failures, int) and max_failures >= 1):
            raise ValueError(f"max_failures must be an integer >= 1, got {max_failures!r}")
        if not (lockout_s >= 0 and lockout_s != float("inf")):
            raise ValueError(f"lockout_s must be a finite number >= 0, got {lockout_s!r}")
        if not (isinstance(max_clients, int) and max_clients >= 1):
            raise ValueError(f"max_clients must be an integer >= 1, got {max_clients!r}")
        self.max_failures = max_failures
        self.lockout_s = float(lockout_s)
        self.max_clients = max_clients
        self._clock = clock
        self._table: OrderedDict[str, _Failures] = OrderedDict()
        self.lockouts = 0  # counted for metrics

    def __len__(self) -> int:
        return len(self._table)

    def locked(self, ip: str) -> bool:
        entry = self._table.get(client_key(ip))
        return entry is not None and self._clock() < entry.locked_until_s

    def remaining_s(self, ip: str) -> float:
        """Seconds until `ip` may try again (0 when not locked): for a Retry-After header."""
        entry = self._table.get(client_key(ip))
        if entry is None:
            return 0.0
        return max(0.0, entry.locked_until_s - self._clock())

    def failed(self, ip: str) -> None:
        key = client_key(ip)
        now = self._clock()
        entry = self._table.get(key)
        if entry is None:
            while len(self._table) >= self.max_clients:
                self._table.popitem(last=False)
            entry = _Failures(0, now, 0.0)
            self._table[key] = entry
        else:
            self._table.move_to_end(key)
        if now < entry.locked_until_s:
            return  # already locked: tries while locked are refused anyway, do not extend
        if now - entry.first_s > self.lockout_s:
            entry.count, entry.first_s = 0, now
        entry.count += 1
        if entry.count >= self.max_failures:
            entry.locked_until_s = now + self.lockout_s
            entry.count, entry.first_s = 0, now
            self.lockouts += 1

    def succeeded(self, ip: str) -> None:
        self._table.pop(client_key(ip), None)


# ---------------------------------------------------------------------------- Basic and Bearer


def _scheme_value(authorization: str | None, scheme: str) -> str | None:
    if not isinstance(authorization, str) or len(authorization) > MAX_AUTH_HEADER_CHARS:
        return None
    parts = authorization.strip().split(None, 1)
    if len(parts) != 2 or parts[0].lower() != scheme:
        return None
    return parts[1].strip()


def _eq(a: str, b: str) -> bool:
    # compare_digest on str refuses non-ASCII; bytes keeps it constant-time for any text.
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


def check_basic(authorization: str | None, user: str, password: str) -> bool:
    """True when `authorization` is `Basic base64(user:password)` for exactly these credentials.

    An empty configured password never authenticates: safe by default."""
    if not password:
        return False
    value = _scheme_value(authorization, "basic")
    if value is None:
        return False
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    got_user, sep, got_password = decoded.partition(":")
    if not sep:
        return False
    # Both comparisons always run, so timing does not tell which half was wrong.
    user_ok = _eq(got_user, user)
    password_ok = _eq(got_password, password)
    return user_ok and password_ok


def check_bearer(authorization: str | None, token: str) -> bool:
    """True when `authorization` is `Bearer <token>`; an empty configured token never matches."""
    if not token:
        return False
    value = _scheme_value(authorization, "bearer")
    if value is None:
        return False
    return _eq(value, token)


# ---------------------------------------------------------------------------- Digest

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda b: hashlib.md5(b).hexdigest(),  # the protocol's choice, not ours
    "SHA-256": lambda b: hashlib.sha256(b).hexdigest(),
}

# One auth-param: name = token | quoted-string (RFC 7235), quoted-string with \-escapes.
_PARAM = re.compile(
    r'\s*([A-Za-z0-9_\-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)', re.DOTALL
)
_NC = re.compile(r"[0-9a-fA-F]{8}")


def parse_digest(authorization: str | None) -> dict[str, str] | None:
    """The auth-params of a `Digest ...` header, lower-cased names; None when it is not one.

    Defensive by construction: bounded length, a strict grammar, duplicates refused."""
    value = _scheme_value(authorization, "digest")
    if not value:
        return None
    params: dict[str, str] = {}
    pos = 0
    while pos < len(value):
        m = _PARAM.match(value, pos)
        if m is None or m.end() == pos:
            return None
        name = m.group(1).lower()
        if name in params:
            return None  # two values for one name: ambiguous, refuse rather than pick one
        quoted = m.group(2)
        params[name] = re.sub(r"\\(.)", r"\1", quoted, flags=re.DOTALL) if quoted is not None \
            else m.group(3)
        pos = m.end()
    return params


@dataclass(frozen=True)
class DigestResult:
    ok: bool
    reason: str  # why it was refused, safe to log (never a credential)
    stale: bool = False  # the nonce was good but expired: re-challenge with stale=true


class DigestAuth:
    """HTTP Digest authentication, qop=auth, with server nonces that expire and nc replay checks.

    A nonce is self-authenticating (an HMAC under a per-process key over its issue time and a serial
    number), so issuing one costs no memory. The nc values seen for each nonce are kept in a bounded
    table; when a nonce is evicted from it, every nonce issued up to that one is refused from then
    on (the client gets stale=true and retries), so eviction can never reopen a replay."""

    def __init__(
        self,
        realm: str,
        user: str,
        password: str,
        *,
        algorithm: str = "MD5",
        nonce_ttl_s: float = 300.0,
        max_nonces: int = 1024,
        clock: Clock = time.monotonic,
    ) -> None:
        if algorithm not in _HASHES:
            raise ValueError(f"algorithm must be one of {sorted(_HASHES)}, got {algorithm!r}")
        if '"' in realm or "\\" in realm:
            raise ValueError("realm must not contain quotes or backslashes")
        self.realm = realm
        self.algorithm = algorithm
        self.nonce_ttl_s = float(nonce_ttl_s)
        self.max_nonces = max_nonces
        self._user = user
        self._hash = _HASHES[algorithm]
        # Only HA1 is kept: the password itself is not needed after this point.
        self._ha1 = self._hash(f"{user}:{realm}:{password}".encode())
        self._empty = not password
        self._key = os.urandom(32)
        self._clock = clock
        self._serial = 0
        self._opaque = base64.urlsafe_b64encode(os.urandom(12)).decode()
        self._seen: OrderedDict[int, int] = OrderedDict()  # serial -> highest nc accepted
        self._floor = 0  # nonces with serial <= floor and not in _seen are refused

    def __repr__(self) -> str:
        return f"DigestAuth(realm={self.realm!r}, algorithm={self.algorithm!r}, user=***)"

    # -- nonces

    def _new_nonce(self) -> str:
        self._serial += 1
        issued_ms = int(self._clock() * 1000)
        body = struct.pack(">qQ", issued_ms, self._serial)
        mac = hmac.new(self._key, body, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(body + mac).decode().rstrip("=")

    def _open_nonce(self, nonce: str) -> tuple[float, int] | None:
        if len(nonce) != 43:  # 32 bytes, unpadded urlsafe base64
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=")
        except (binascii.Error, ValueError):
            return None
        if len(raw) != 32:
            return None
        body, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, hmac.new(self._key, body, hashlib.sha256).digest()[:16]):
            return None
        issued_ms, serial = struct.unpack(">qQ", body)
        return issued_ms / 1000.0, serial

    def challenge(self, stale: bool = False) -> str:
        """A WWW-Authenticate header value with a fresh nonce."""
        value = (
            f'Digest realm="{self.realm}", qop="auth", nonce="{self._new_nonce()}", '
            f'opaque="{self._opaque}", algorithm={self.algorithm}'
        )
        return value + (", stale=true" if stale else "")

    # -- checking

    def check(self, method: str, uri: str, authorization: str | None) -> bool:
        return self.verify(method, uri, authorization).ok

    def verify(self, method: str, uri: str, authorization: str | None) -> DigestResult:
        try:
            return self._verify(method, uri, authorization)
        except Exception:  # a parser bug must refuse, never crash the request handler
            return DigestResult(False, "malformed authorization")

    def _verify(self, method: str, uri: str, authorization: str | None) -> DigestResult:
        if self._empty:
            return DigestResult(False, "no password configured")
        p = parse_digest(authorization)
        if p is None:
            return DigestResult(False, "not a Digest authorization")
        need = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
        missing = [k for k in need if not p.get(k)]
        if missing:
            return DigestResult(False, f"missing {', '.join(missing)}")
        if p.get("algorithm", "MD5").upper() != self.algorithm:
            return DigestResult(False, "wrong algorithm")
        if p["qop"] != "auth":
            return DigestResult(False, "qop must be auth")
        if p["realm"] != self.realm:
            return DigestResult(False, "wrong realm")
        if "opaque" in p and not _eq(p["opaque"], self._opaque):
            return DigestResult(False, "wrong opaque")
        if p["uri"] != uri:
            return DigestResult(False, "uri does not match the request")
        if not _NC.fullmatch(p["nc"]):
            return DigestResult(False, "bad nc")
        nc = int(p["nc"], 16)
        opened = self._open_nonce(p["nonce"])
        if opened is None:
            return DigestResult(False, "unknown nonce", stale=True)
        issued_s, serial = opened
        if self._clock() - issued_s > self.nonce_ttl_s:
            return DigestResult(False, "nonce expired", stale=True)
        last_nc = self._seen.get(serial)
        if last_nc is None and serial <= self._floor:
            return DigestResult(False, "nonce no longer tracked", stale=True)
        if last_nc is not None and nc <= last_nc:
            return DigestResult(False, "nc replayed")

        ha2 = self._hash(f"{method}:{p['uri']}".encode())
        expected = self._hash(
            f"{self._ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:auth:{ha2}".encode()
        )
        user_ok = _eq(p["username"], self._user)
        response_ok = _eq(p["response"].lower(), expected)
        if not (user_ok and response_ok):
            return DigestResult(False, "wrong credentials")

        # Record nc only once the response is proven, so a guesser cannot burn a client's nc.
        self._seen[serial] = nc
        self._seen.move_to_end(serial)
        while len(self._seen) > self.max_nonces:
            old, _ = self._seen.popitem(last=False)
            self._floor = max(self._floor, old)
        return DigestResult(True, "ok")
