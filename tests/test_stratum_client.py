"""stratum.client against a scripted pool on 127.0.0.1, including a hostile one."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Coroutine
from typing import Any

import pytest
from stratum_fake_pool import Conn, FakePool, notify, set_difficulty

from agent.stratum import protocol as P
from agent.stratum.client import (
    ClientOptions,
    ClientTarget,
    ConnectionLost,
    Disconnected,
    Event,
    Job,
    Redirect,
    StratumClient,
    StratumConnectError,
)

SECRET = "hunter2-very-secret"


def run(coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class Events:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def __call__(self, event: Event) -> None:
        self.queue.put_nowait(event)

    async def next(self, kind: type, timeout: float = 5.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                ev = await self.queue.get()
                if isinstance(ev, kind):
                    return ev


def make_client(pool: FakePool, events: Events, **opts: Any) -> StratumClient:
    return StratumClient(
        ClientTarget("127.0.0.1", pool.port),
        "wallet.worker",
        SECRET,
        options=ClientOptions(**opts),
        on_event=events,
    )


STARTED: dict[str, asyncio.Event] = {}


async def started() -> None:
    """Wait until the test's client.start() returned (scripts call it before hostile bytes)."""
    await STARTED.setdefault("ev", asyncio.Event()).wait()


def mark_started() -> None:
    STARTED.setdefault("ev", asyncio.Event()).set()


@pytest.fixture(autouse=True)
def _fresh_started() -> None:
    STARTED.clear()


async def handshake(conn: Conn, *, before_auth: list[Any] = ()) -> None:  # type: ignore[assignment]
    sub = await conn.expect("mining.subscribe")
    conn.send(
        {"id": sub["id"], "result": [[["mining.notify", "n1"]], "0a0b0c0d", 4], "error": None}
    )
    auth = await conn.expect("mining.authorize")
    for m in before_auth:
        conn.send(m)
    conn.send({"id": auth["id"], "result": True, "error": None})


def test_handshake_job_submit_and_latency(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        pool = await FakePool().start()
        events = Events()
        client = make_client(pool, events, suggest_difficulty=0.5)
        await client.start()
        job: Job = await events.next(Job)
        assert job.notify.job_id == "j1"
        assert job.difficulty == 2.0  # set_difficulty came before the first notify
        assert job.extranonce1 == bytes.fromhex("f000000f") and job.extranonce2_size == 4
        conn = pool.conns[0]
        methods = [m.get("method") for m in conn.all]
        assert methods[:4] == [
            "mining.subscribe",
            "mining.extranonce.subscribe",
            "mining.suggest_difficulty",
            "mining.authorize",
        ]
        assert conn.all[0]["params"] == [P.CLIENT_VERSION]
        reply = await client.submit(job, b"\x00\x00\x00\x01", job.notify.ntime, 0x1234)
        assert reply.accepted and reply.error is None
        sub = await pool.submits.get()
        assert sub["params"] == ["wallet.worker", "j1", "00000001", "52a4b2f4", "00001234"]
        assert client.latency_ms is not None and client.latency_ms >= 0
        assert client.session_id == "sf000000f"
        pool.accept_shares = False
        reply = await client.submit(job, b"\x00\x00\x00\x02", job.notify.ntime, 1)
        assert not reply.accepted and reply.error is not None and reply.error.code == 23
        await client.close()
        await pool.kill()

    run(main())
    assert SECRET not in caplog.text


def test_server_requests_answered(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def script(conn: Conn) -> None:
        await handshake(conn)
        conn.send({"id": 40, "method": "client.get_version", "params": []})
        conn.send({"id": 41, "method": "mining.ping", "params": []})
        conn.send({"id": 42, "method": "client.show_message", "params": ["maintenance at 5"]})
        conn.send({"id": 43, "method": "mining.frobnicate", "params": []})
        await conn.writer.drain()
        replies = {}
        async with asyncio.timeout(5):
            while len(replies) < 4:
                msg = await conn.received.get()
                if "result" in msg:
                    replies[msg["id"]] = msg
        assert replies[40]["result"] == P.CLIENT_VERSION
        assert replies[41]["result"] == "pong"
        assert replies[42]["result"] is True
        assert replies[43]["error"][0] == 20
        done.set()

    done = asyncio.Event()

    async def main() -> None:
        pool = await FakePool(script=script).start()
        client = make_client(pool, Events())
        await client.start()
        await asyncio.wait_for(done.wait(), 5)
        assert client.bad_lines == 1  # the unknown method
        await client.close()
        await pool.kill()

    run(main())
    assert "maintenance at 5" in caplog.text
    assert "frobnicate" in caplog.text


def test_notify_before_authorize_reply_and_latched_difficulty() -> None:
    async def script(conn: Conn) -> None:
        await handshake(conn, before_auth=[set_difficulty(4), notify("early")])
        await step.wait()
        conn.send(set_difficulty(16))
        conn.send({"id": 50, "method": "mining.ping", "params": []})
        await conn.writer.drain()
        await pinged.wait()
        conn.send(notify("next", clean=False))
        await conn.writer.drain()
        await asyncio.Event().wait()

    step, pinged = asyncio.Event(), asyncio.Event()

    async def main() -> None:
        pool = await FakePool(script=script).start()
        events = Events()
        client = make_client(pool, events)
        await client.start()
        job = await events.next(Job)
        assert job.notify.job_id == "early" and job.difficulty == 4.0
        step.set()
        # the ping reply proves the set_difficulty before it was read: it must not apply yet
        conn = pool.conns[0]
        async with asyncio.timeout(5):
            while True:
                msg = await conn.received.get()
                if msg.get("id") == 50:
                    break
        assert client.difficulty == 4.0
        pinged.set()
        job2 = await events.next(Job)
        assert job2.notify.job_id == "next" and job2.difficulty == 16.0
        await client.close()
        await pool.kill()

    run(main())


def test_set_extranonce_applies_from_next_notify() -> None:
    async def script(conn: Conn) -> None:
        await handshake(conn, before_auth=[notify("a")])
        conn.send({"id": None, "method": "mining.set_extranonce", "params": ["deadbeef01", 6]})
        conn.send(notify("b"))
        await conn.writer.drain()
        await asyncio.Event().wait()

    async def main() -> None:
        pool = await FakePool(script=script).start()
        events = Events()
        client = make_client(pool, events)
        await client.start()
        a = await events.next(Job)
        b = await events.next(Job)
        assert a.extranonce1 == bytes.fromhex("0a0b0c0d") and a.extranonce2_size == 4
        assert b.extranonce1 == bytes.fromhex("deadbeef01") and b.extranonce2_size == 6
        await client.close()
        await pool.kill()

    run(main())


def test_garbage_is_dropped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)

    async def script(conn: Conn) -> None:
        await handshake(conn, before_auth=[notify("a")])
        conn.send(b"this is not json\n")
        conn.send(b'{"id":null,"method":"mining.notify","params":["x","00",1]}\n')
        conn.send(b"\xff\xfe\xfd\n")
        conn.send({"id": 999, "result": True, "error": None})  # nobody asked
        conn.send(set_difficulty(-3))
        conn.send(notify("b"))
        await conn.writer.drain()
        await asyncio.Event().wait()

    async def main() -> None:
        pool = await FakePool(script=script).start()
        events = Events()
        client = make_client(pool, events)
        await client.start()
        await events.next(Job)
        b = await events.next(Job)
        assert b.notify.job_id == "b" and b.difficulty == 1.0
        assert client.bad_lines == 5
        assert not client.is_closed
        await client.close()
        await pool.kill()

    run(main())
    assert "not JSON" in caplog.text
    assert "reply to unknown id 999" in caplog.text
    assert "at least 9 params" in caplog.text


def test_flood_of_garbage_disconnects() -> None:
    async def script(conn: Conn) -> None:
        await handshake(conn)
        await started()
        conn.send(b"garbage\n" * 50)
        await conn.writer.drain()
        await asyncio.Event().wait()

    async def main() -> None:
        pool = await FakePool(script=script).start()
        events = Events()
        client = make_client(pool, events, max_bad_lines=10)
        await client.start()
        mark_started()
        ev = await events.next(Disconnected)
        assert "bad messages" in ev.reason
        assert client.bad_lines == 11
        await pool.kill()

    run(main())


def test_stall_mid_line_disconnects() -> None:
    async def script(conn: Conn) -> None:
        await handshake(conn)
        await started()
        conn.send(b'{"id":null,"method":"mining.no')
        await conn.writer.drain()
        await asyncio.Event().wait()

    async def main() -> None:
        pool = await FakePool(script=script).start()
        events = Events()
        client = make_client(pool, events, line_timeout_s=0.3, idle_timeout_s=30)
        await client.start()
        mark_started()
        ev = await events.next(Disconnected)
        assert "stalled mid-line" in ev.reason
        await pool.kill()

    run(main())


def test_silent_pool_times_out_and_huge_line_disconnects() -> None:
    async def silent(conn: Conn) -> None:
        await handshake(conn)
        await asyncio.Event().wait()

    async def huge(conn: Conn) -> None:
        await handshake(conn)
        await started()
        conn.send(b"x" * 5000)
        await conn.writer.drain()
        await asyncio.Event().wait()

    async def main() -> None:
        pool = await FakePool(script=silent).start()
        events = Events()
        client = make_client(pool, events, idle_timeout_s=0.3)
        await client.start()
        assert "nothing from the pool" in (await events.next(Disconnected)).reason
        await pool.kill()

        pool = await FakePool(script=huge).start()
        events = Events()
        client = make_client(pool, events, max_line_bytes=1024)
        await client.start()
        mark_started()
        assert "longer than 1024" in (await events.next(Disconnected)).reason
        await pool.kill()

    run(main())


def test_reconnect_to_another_host_refused_same_host_honoured() -> None:
    async def script(conn: Conn) -> None:
        await handshake(conn)
        conn.send({"id": None, "method": "client.reconnect", "params": ["evil.example", 3333, 0]})
        conn.send({"id": 7, "method": "mining.ping", "params": []})
        await conn.writer.drain()
        await go.wait()
        conn.send({"id": None, "method": "client.reconnect", "params": [None, "4444", 1]})
        await conn.writer.drain()
        await asyncio.Event().wait()

    go = asyncio.Event()

    async def main() -> None:
        pool = await FakePool(script=script).start()
        events = Events()
        client = make_client(pool, events)
        await client.start()
        conn = pool.conns[0]
        async with asyncio.timeout(5):
            while (await conn.received.get()).get("id") != 7:
                pass
        assert client.bad_lines == 1 and not client.is_closed
        go.set()
        red = await events.next(Redirect)
        assert (red.host, red.port, red.wait_s) == ("127.0.0.1", 4444, 1.0)
        assert "client.reconnect" in await client.wait_closed()
        await pool.kill()

    run(main())


def test_authorize_refused_and_no_secret_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def script(conn: Conn) -> None:
        sub = await conn.expect("mining.subscribe")
        conn.send({"id": sub["id"], "result": [["mining.notify", "n"], "00", 4], "error": None})
        auth = await conn.expect("mining.authorize")
        # a hostile pool echoing the password back in its error and a message
        conn.send({"id": None, "method": "client.show_message", "params": [f"pw={SECRET}"]})
        conn.send({"id": auth["id"], "result": None, "error": [24, f"bad pw {SECRET}", None]})
        await conn.writer.drain()
        await asyncio.Event().wait()

    async def main() -> None:
        pool = await FakePool(script=script).start()
        client = make_client(pool, Events())
        with pytest.raises(StratumConnectError) as info:
            await client.start()
        assert "mining.authorize" in str(info.value) and SECRET not in str(info.value)
        assert client.is_closed
        await pool.kill()

    run(main())
    assert "pw=***" in caplog.text
    assert SECRET not in caplog.text


def test_submit_timeout_and_connection_lost() -> None:
    async def script(conn: Conn) -> None:
        await handshake(conn, before_auth=[notify("a")])
        await conn.expect("mining.submit")  # never answered
        await conn.expect("mining.submit")
        conn.writer.transport.abort()

    async def main() -> None:
        pool = await FakePool(script=script).start()
        events = Events()
        client = make_client(pool, events, submit_timeout_s=0.2)
        await client.start()
        job = await events.next(Job)
        with pytest.raises(TimeoutError):
            await client.submit(job, b"\0\0\0\0", 1, 1)
        with pytest.raises(ConnectionLost):
            await client.submit(job, b"\0\0\0\0", 1, 2)
        await events.next(Disconnected)
        with pytest.raises(ConnectionLost):
            await client.submit(job, b"\0\0\0\0", 1, 3)
        await pool.kill()

    run(main())


def test_connect_refused_and_bad_subscribe() -> None:
    async def bad_sub(conn: Conn) -> None:
        sub = await conn.expect("mining.subscribe")
        conn.send({"id": sub["id"], "result": [[], "00", 99], "error": None})
        await asyncio.Event().wait()

    async def main() -> None:
        pool = await FakePool().start()
        port = pool.port
        await pool.kill()
        client = StratumClient(ClientTarget("127.0.0.1", port), "u", SECRET)
        with pytest.raises(StratumConnectError, match=r"connect to 127\.0\.0\.1"):
            await client.start()
        pool = await FakePool(script=bad_sub).start()
        client = make_client(pool, Events())
        with pytest.raises(StratumConnectError, match="extranonce2_size"):
            await client.start()
        await pool.kill()

    run(main())


def test_fuzzed_lines_over_a_socket(caplog: pytest.LogCaptureFixture) -> None:
    """Mutated and random lines through a real socket: every one is dropped or handled, the
    reader never dies, and a good notify afterwards still becomes a job."""
    caplog.set_level(logging.WARNING)
    rng = random.Random(20261201)
    good = [
        json.dumps(notify("z")).encode(),
        json.dumps(set_difficulty(3)).encode(),
        json.dumps({"id": 5, "result": True, "error": None}).encode(),
        # (no client.reconnect here: a mutation that lands on our own host is a legal redirect)
        json.dumps({"id": 8, "method": "mining.set_extranonce", "params": ["00", 4]}).encode(),
        json.dumps({"id": 9, "method": "client.show_message", "params": ["x"]}).encode(),
    ]
    lines = []
    for _ in range(400):
        base = bytearray(rng.choice(good))
        for _ in range(rng.randint(1, 4)):
            op = rng.randint(0, 2)
            pos = rng.randrange(len(base))
            if op == 0:
                base[pos] = rng.randrange(256)
            elif op == 1:
                del base[pos : pos + rng.randint(1, 8)]
            else:
                base[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        lines.append(bytes(base).replace(b"\n", b" "))
    lines += [bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))).replace(b"\n", b"")]

    async def script(conn: Conn) -> None:
        await handshake(conn)
        await started()
        for line in lines:
            conn.send(line + b"\n")
        conn.send(notify("final"))
        await conn.writer.drain()
        await asyncio.Event().wait()

    async def main() -> None:
        pool = await FakePool(script=script).start()
        events = Events()
        client = make_client(pool, events, max_bad_lines=10_000, allow_redirect=False)
        await client.start()
        mark_started()
        async with asyncio.timeout(10):
            while True:
                ev = await events.queue.get()
                if isinstance(ev, Job) and ev.notify.job_id == "final":
                    break
                assert not isinstance(ev, Disconnected), ev
        assert client.bad_lines > 100
        await client.close()
        await pool.kill()

    run(main())
    assert "unexpected error" not in caplog.text
