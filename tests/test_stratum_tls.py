"""stratum+ssl: a local TLS pool with a self-signed CA; CA file, wrong CA, pinned fingerprint."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import ssl
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from stratum_fake_pool import FakePool

from agent.stratum.client import (
    ClientOptions,
    ClientTarget,
    Job,
    StratumClient,
    StratumConnectError,
)
from agent.stratum.pools import PoolManager, PoolOptions, PoolSpec


def run(coro: Coroutine[Any, Any, Any], timeout: float = 15.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Pki:
    def __init__(self, tmp: Path) -> None:
        ca_key, ca = make_ca("doge-agent test CA")
        key, cert = make_server_cert(ca_key, ca)
        _other_key, other_ca = make_ca("some other CA")
        self.ca_file = tmp / "ca.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.wrong_ca_file = tmp / "wrong-ca.pem"
        self.wrong_ca_file.write_bytes(other_ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file = tmp / "server.pem"
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_file = tmp / "server.key"
        self.key_file.write_bytes(_pem_key(key))
        self.fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


async def connect(pool: FakePool, **opts: Any) -> StratumClient:
    client = StratumClient(
        ClientTarget("127.0.0.1", pool.port, tls=True),
        "w.1",
        "pw-secret",
        options=ClientOptions(connect_timeout_s=3, request_timeout_s=3, **opts),
    )
    await client.start()
    return client


def test_tls_with_ca_file(pki: Pki) -> None:
    async def main() -> None:
        pool = await FakePool(ssl_ctx=pki.server_context()).start()
        client = await connect(pool, ca_file=str(pki.ca_file))
        assert client.authorized
        await client.close()
        await pool.kill()

    run(main())


def test_tls_default_refuses_self_signed_and_wrong_ca(pki: Pki) -> None:
    async def main() -> None:
        pool = await FakePool(ssl_ctx=pki.server_context()).start()
        # default: the system CAs do not know our test CA
        with pytest.raises(StratumConnectError, match="certificate"):
            await connect(pool)
        with pytest.raises(StratumConnectError, match="certificate"):
            await connect(pool, ca_file=str(pki.wrong_ca_file))
        assert not pool.conns or all(not c.all for c in pool.conns)  # nothing was sent
        await pool.kill()

    run(main())


def test_tls_pinned_fingerprint(pki: Pki) -> None:
    async def main() -> None:
        pool = await FakePool(ssl_ctx=pki.server_context()).start()
        colons = ":".join(pki.fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
        client = await connect(pool, cert_sha256=colons)  # the pin replaces CA checks
        assert client.authorized
        await client.close()
        wrong = "00" * 32
        with pytest.raises(StratumConnectError, match="pinned SHA-256"):
            await connect(pool, cert_sha256=wrong)
        # the refused connection never got to send the password
        assert all("pw-secret" not in str(c.all) for c in pool.conns[1:])
        await pool.kill()

    run(main())


def test_tls_through_the_pool_manager(pki: Pki) -> None:
    async def main() -> None:
        pool = await FakePool(ssl_ctx=pki.server_context()).start()
        assert pool.url.startswith("stratum+ssl://")
        jobs: asyncio.Queue[Job] = asyncio.Queue()
        mgr = PoolManager(
            [PoolSpec(pool.url, "w.1", "pw", ca_file=str(pki.ca_file))],
            PoolOptions(),
            on_job=jobs.put_nowait,
        )
        await mgr.start()
        job = await asyncio.wait_for(jobs.get(), 5)
        result = await mgr.submit(job, b"\0\0\0\0", job.notify.ntime, 5)
        assert result.outcome == "accepted"
        await mgr.stop()
        await pool.kill()

    run(main())
