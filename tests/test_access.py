"""security.access: allow lists, login lockout, Digest (checked against an independent RFC 7616
computation), Basic and Bearer, and headers from hostile clients."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.security.access import (
    AccessConfigError,
    AccessPolicy,
    DigestAuth,
    LoginGuard,
    check_basic,
    check_bearer,
    parse_digest,
)


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# ---------------------------------------------------------------------------- AccessPolicy


def test_cidr_matching_v4_v6_and_bare_addresses() -> None:
    p = AccessPolicy(["192.168.1.0/24", "10.0.0.7", "fd00::/8", "::1"], ["192.168.1.10"])
    assert p.may_read("192.168.1.200")
    assert not p.may_read("192.168.2.1")
    assert p.may_read("10.0.0.7") and not p.may_read("10.0.0.8")  # bare IP is /32
    assert p.may_read("fd12:3456::1") and not p.may_read("fe80::1")
    assert p.may_read("::1") and not p.may_read("::2")  # bare IPv6 is /128
    assert p.may_write("192.168.1.10") and not p.may_write("192.168.1.11")


def test_ipv4_mapped_ipv6_peers_match_ipv4_networks() -> None:
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
    p = AccessPolicy(["192.168.1.0/24"], ["::ffff:10.0.0.0/104"])
    assert p.may_read("::ffff:192.168.1.5")
    assert not p.may_read("::ffff:192.168.9.5")
    assert p.may_write("10.1.2.3") and p.may_write("::ffff:10.1.2.3")
    assert not p.may_read("::ffff:c0a8:0105x")


def test_garbage_peers_are_refused_and_empty_lists_allow_nobody() -> None:
    p = AccessPolicy(["0.0.0.0/0", "::/0"], [])
    for bad in ("", "localhost", "1.2.3", "1.2.3.4.5", "::g", "x" * 1000, None, 42):
        assert not p.may_read(bad)  # type: ignore[arg-type]
    assert p.may_read("[::1]") and p.may_read("fe80::1%eth0")
    assert not p.may_write("127.0.0.1")


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        (["192.168.1.0/24", "192.168.1.300/24"], "read_allow[1]: '192.168.1.300/24'"),
        (["foo"], "read_allow[0]: 'foo'"),
        (["10.0.0.0/33"], "read_allow[0]: '10.0.0.0/33'"),
        (["192.168.1.5/24"], "did you mean '192.168.1.0/24'"),
        ([""], "read_allow[0]: ''"),
        ([7], "read_allow[0]: must be a string"),
        ("10.0.0.0/8", "read_allow: must be a list"),
    ],
)
def test_bad_cidrs_are_named(entries: list, named: str) -> None:
    with pytest.raises(AccessConfigError) as err:
        AccessPolicy(entries, [])
    assert named in str(err.value)
    with pytest.raises(AccessConfigError, match="write_allow"):
        AccessPolicy([], entries)


# ---------------------------------------------------------------------------- LoginGuard


def test_lockout_after_max_failures_and_release_after_lockout_s() -> None:
    clock = FakeClock()
    g = LoginGuard(max_failures=3, lockout_s=60, clock=clock)
    for _ in range(2):
        g.failed("10.0.0.5")
    assert not g.locked("10.0.0.5")
    g.failed("10.0.0.5")
    assert g.locked("10.0.0.5") and not g.locked("10.0.0.6")
    clock.t += 59.9
    assert g.locked("10.0.0.5")
    g.failed("10.0.0.5")  # tries while locked do not extend the lockout
    assert g.remaining_s("10.0.0.5") == pytest.approx(0.1)
    clock.t += 0.1
    assert not g.locked("10.0.0.5")
    g.failed("10.0.0.5")  # the count starts again after a lockout
    assert not g.locked("10.0.0.5")


def test_old_failures_are_forgotten_and_success_resets() -> None:
    clock = FakeClock()
    g = LoginGuard(max_failures=3, lockout_s=60, clock=clock)
    g.failed("1.1.1.1")
    g.failed("1.1.1.1")
    clock.t += 61
    g.failed("1.1.1.1")  # the two old ones have aged out
    assert not g.locked("1.1.1.1")
    g.failed("1.1.1.1")
    g.succeeded("1.1.1.1")
    g.failed("1.1.1.1")
    g.failed("1.1.1.1")
    assert not g.locked("1.1.1.1")


def test_lockout_covers_mapped_ipv4_and_the_ipv6_slash64() -> None:
    g = LoginGuard(max_failures=2, lockout_s=60, clock=FakeClock())
    g.failed("192.168.1.9")
    g.failed("::ffff:192.168.1.9")
    assert g.locked("192.168.1.9")
    g.failed("2001:db8:1:2::1")
    g.failed("2001:db8:1:2::ffff")  # rotating within its own /64 does not help
    assert g.locked("2001:db8:1:2::1234") and not g.locked("2001:db8:1:3::1")


def test_login_guard_memory_is_bounded_oldest_forgotten() -> None:
    g = LoginGuard(max_failures=5, lockout_s=60, clock=FakeClock(), max_clients=100)
    for i in range(10_000):
        g.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(g) == 100
    g.failed("10.0.39.15")  # i = 9999: the most recent one is still there
    assert len(g) == 100


# ---------------------------------------------------------------------------- Digest, independently


def _h(alg: str, text: str) -> str:
    fn = hashlib.sha256 if alg == "SHA-256" else hashlib.md5
    return fn(text.encode()).hexdigest()


def rfc_response(alg, user, realm, password, method, uri, nonce, nc, cnonce) -> str:
    """RFC 7616 section 3.4.1 (qop=auth), written from the RFC, not from our module."""
    ha1 = _h(alg, f"{user}:{realm}:{password}")
    ha2 = _h(alg, f"{method}:{uri}")
    return _h(alg, f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")


def test_the_independent_computation_matches_the_rfc_examples() -> None:
    # RFC 2617 section 3.5
    assert rfc_response("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life", "GET",
                        "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "00000001",
                        "0a4f113b") == "6629fae49393a05397450978507c4ef1"
    # RFC 7616 section 3.9.1
    args = ("Mufasa", "http-auth@example.org", "Circle of Life", "GET", "/dir/index.html",
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", "00000001",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
    assert rfc_response("MD5", *args) == "8ca523f5e9506fed4657c9700eebdbec"
    assert rfc_response("SHA-256", *args) == (
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )


def _challenge_params(challenge: str) -> dict[str, str]:
    assert challenge.startswith("Digest ")
    return {k: a or b for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]+))', challenge)}


def answer(auth: DigestAuth, user: str, password: str, method: str, uri: str, *,
           nc: str = "00000001", cnonce: str = "0a4f113b", nonce: str | None = None,
           response_uri: str | None = None) -> str:
    c = _challenge_params(auth.challenge())
    assert c["qop"] == "auth"
    nonce = nonce or c["nonce"]
    alg = c["algorithm"]
    resp = rfc_response(alg, user, c["realm"], password, method, response_uri or uri, nonce, nc,
                        cnonce)
    return (f'Digest username="{user}", realm="{c["realm"]}", nonce="{nonce}", uri="{uri}", '
            f'algorithm={alg}, response="{resp}", opaque="{c["opaque"]}", qop=auth, nc={nc}, '
            f'cnonce="{cnonce}"')


@pytest.mark.parametrize("alg", ["MD5", "SHA-256"])
def test_digest_full_challenge_response_is_accepted(alg: str) -> None:
    d = DigestAuth("antMiner Configuration", "root", "s3cret pass", algorithm=alg)
    hdr = answer(d, "root", "s3cret pass", "POST", "/cgi-bin/set_miner_conf.cgi")
    assert d.check("POST", "/cgi-bin/set_miner_conf.cgi", hdr)


def test_digest_refuses_wrong_password_user_uri_method() -> None:
    d = DigestAuth("antMiner Configuration", "root", "right")
    uri = "/cgi-bin/get_system_info.cgi"
    assert not d.check("GET", uri, answer(d, "root", "wrong", "GET", uri))
    assert not d.check("GET", uri, answer(d, "admin", "right", "GET", uri))
    # The header names another uri than the request's...
    assert not d.check("GET", uri, answer(d, "root", "right", "GET", "/other"))
    # ...or hashes another uri than it names.
    assert not d.check("GET", uri, answer(d, "root", "right", "GET", uri, response_uri="/x"))
    assert not d.check("POST", uri, answer(d, "root", "right", "GET", uri))
    assert d.check("GET", uri, answer(d, "root", "right", "GET", uri))


def test_digest_expired_and_forged_nonces_are_refused_as_stale() -> None:
    clock = FakeClock()
    d = DigestAuth("r", "root", "pw", nonce_ttl_s=300, clock=clock)
    hdr = answer(d, "root", "pw", "GET", "/")
    clock.t += 301
    res = d.verify("GET", "/", hdr)
    assert not res.ok and res.stale and "expired" in res.reason
    assert "stale=true" in d.challenge(stale=True)
    forged = answer(d, "root", "pw", "GET", "/", nonce="A" * 43)
    assert not d.check("GET", "/", forged)
    other = DigestAuth("r", "root", "pw", clock=clock)  # another process: another nonce key
    assert not d.check("GET", "/", answer(other, "root", "pw", "GET", "/"))


def test_digest_nc_replay_is_refused_and_counting_up_is_accepted() -> None:
    d = DigestAuth("r", "root", "pw")
    c = _challenge_params(d.challenge())
    first = answer(d, "root", "pw", "GET", "/", nonce=c["nonce"], nc="00000001")
    assert d.check("GET", "/", first)
    assert not d.check("GET", "/", first)  # the very same header again
    assert d.verify("GET", "/", first).reason == "nc replayed"
    assert d.check("GET", "/", answer(d, "root", "pw", "GET", "/", nonce=c["nonce"],
                                      nc="00000002"))
    assert not d.check("GET", "/", answer(d, "root", "pw", "GET", "/", nonce=c["nonce"],
                                          nc="00000002", cnonce="other"))


def test_digest_eviction_never_reopens_a_replay() -> None:
    d = DigestAuth("r", "root", "pw", max_nonces=2)
    used = [answer(d, "root", "pw", "GET", "/") for _ in range(3)]
    for hdr in used:
        assert d.check("GET", "/", hdr)
    # The first nonce was evicted from the nc table: replaying it must still fail.
    assert not d.check("GET", "/", used[0])
    assert all(not d.check("GET", "/", hdr) for hdr in used)


def test_digest_with_an_empty_password_never_authenticates() -> None:
    d = DigestAuth("r", "root", "")
    assert not d.check("GET", "/", answer(d, "root", "", "GET", "/"))


def test_digest_repr_and_refusals_carry_no_credentials() -> None:
    d = DigestAuth("r", "root", "hunter2-password")
    assert "hunter2" not in repr(d) and "root" not in repr(d)
    res = d.verify("GET", "/", answer(d, "root", "hunter2-passwordX", "GET", "/"))
    assert "hunter2" not in res.reason


def test_digest_parser_handles_quoting() -> None:
    p = parse_digest(r'Digest username="ro\"ot", realm="a, b", nc=00000001, qop=auth')
    assert p == {"username": 'ro"ot', "realm": "a, b", "nc": "00000001", "qop": "auth"}
    assert parse_digest('Digest a="1", a="2"') is None  # duplicates are ambiguous
    assert parse_digest("Basic abc") is None
    assert parse_digest('Digest a="unterminated') is None


def test_digest_works_with_httpx_as_pyasic_uses_it() -> None:
    httpx = pytest.importorskip("httpx")
    d = DigestAuth("antMiner Configuration", "root", "root")

    def handler(req):
        if d.check(req.method, req.url.raw_path.decode(), req.headers.get("authorization")):
            return httpx.Response(200, text="ok")
        return httpx.Response(401, headers={"WWW-Authenticate": d.challenge()})

    transport = httpx.MockTransport(handler)
    with httpx.Client(transport=transport, auth=httpx.DigestAuth("root", "root")) as c:
        assert c.get("http://miner/cgi-bin/get_system_info.cgi?x=1").status_code == 200
    with httpx.Client(transport=transport, auth=httpx.DigestAuth("root", "nope")) as c:
        assert c.get("http://miner/cgi-bin/get_system_info.cgi").status_code == 401


@given(st.one_of(st.none(), st.text(max_size=600), st.text(max_size=300).map(
    lambda s: "Digest " + s)))
def test_any_header_never_raises(header: str | None) -> None:
    d = DigestAuth("r", "root", "pw")
    assert d.check("GET", "/", header) is False
    assert check_basic(header, "root", "pw") in (True, False)
    assert check_bearer(header, "tok") in (True, False)
    parse_digest(header)


@given(st.dictionaries(
    st.sampled_from(["username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce",
                     "algorithm", "opaque", "x"]),
    st.text(max_size=50), max_size=11))
def test_well_formed_headers_with_hostile_values_never_raise(params: dict[str, str]) -> None:
    d = DigestAuth("r", "root", "pw")
    quoted = ", ".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in params.items())
    assert d.check("GET", "/", "Digest " + quoted) is False


# ---------------------------------------------------------------------------- Basic and Bearer


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic() -> None:
    assert check_basic(_basic("root", "pä:ss"), "root", "pä:ss")  # ':' in a password is fine
    assert check_basic("basic " + _basic("root", "pw")[6:], "root", "pw")  # scheme is case-free
    assert not check_basic(_basic("root", "px"), "root", "pw")
    assert not check_basic(_basic("admin", "pw"), "root", "pw")
    assert not check_basic(_basic("root", ""), "root", "")  # empty password never works
    assert not check_basic("Basic !!!", "root", "pw")
    assert not check_basic("Basic " + base64.b64encode(b"nocolon").decode(), "root", "pw")
    assert not check_basic(None, "root", "pw")
    assert not check_basic("Bearer x", "root", "pw")


def test_bearer() -> None:
    assert check_bearer("Bearer abc.DEF-123", "abc.DEF-123")
    assert not check_bearer("Bearer abc.DEF-12", "abc.DEF-123")
    assert not check_bearer("Bearer ", "")
    assert not check_bearer(None, "tok")
    assert not check_bearer("Basic tok", "tok")
    assert not check_bearer("Bearer tök", "tok")
