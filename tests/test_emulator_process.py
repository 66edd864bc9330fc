"""The emulated L3+ in its own process (`doge-agent emulate --root DIR`), the agent attached with
`[board] emulator_dir`: the chips on ptys, the I2C parts over the link socket, the fans and GPIOs
in the shared folder. The agent runs the same driver code it runs on the board; the emulator's
CPU and memory are no longer the agent's. Fault injection reaches the emulator over the link."""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import defaults as D
from agent.config import loads
from agent.emulator.board import EmulatedL3Plus
from agent.emulator.pool import FixedDifficulty, StratumPool
from agent.emulator.server import EmulatorProcess, EmulatorServer, read_description
from agent.hardware.linkbus import LinkBus, LinkError
from agent.service import MiningService, StartupError
from agent.stratum.pools import PoolOptions

WAIT_S = 60.0


def attached_config(state: Path, root: Path, pool_port: int) -> str:
    return (
        '[api]\nhttp_listen = "127.0.0.1:0"\ncgminer_listen = "127.0.0.1:0"\n'
        f'[agent]\nstate_dir = "{state}"\n'
        f'[[pools]]\nurl = "stratum+tcp://127.0.0.1:{pool_port}"\nuser = "w.1"\n'
        f'[board]\nkind = "emulated"\nemulator_dir = "{root}"\n'
    )


async def until(pred: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)  # polling a counter against a deadline


def test_agent_mines_on_an_emulator_in_its_own_process(tmp_path: Path) -> None:
    root = tmp_path / "board"
    with EmulatorProcess(root) as emu:
        control = emu.control()

        async def main() -> None:
            pool = StratumPool(policy=FixedDifficulty(1 / 256))
            await pool.start()
            conf = loads(attached_config(tmp_path / "state", root, pool.port))
            service = MiningService(conf, pool_options=PoolOptions(stability_s=0.5))
            stop = asyncio.Event()
            runner = asyncio.create_task(service.run(stop))
            await asyncio.wait_for(service.ready.wait(), WAIT_S)
            assert service.emulator is None  # nothing of the emulator runs in this process
            await until(lambda: pool.stats.accepted >= 3, "shares accepted by the pool")
            snap = service.state.snapshot()
            assert [c["chips"] for c in snap["chains"]] == [72] * 4
            # temperatures came through the chips' I2C master (UART) and the fans through sysfs
            await until(lambda: all(c["temp_c"] is not None
                                    for c in service.state.snapshot()["chains"]), "chip temps")

            # a fault injected over the link is seen by the agent, with chain and chip
            control.chain(1, "vanish", 30)
            await until(lambda: any(e.kind == "chip_lost" and e.chain == 1 and e.chip is not None
                                    for e in service.events), "the vanished chip reported")
            control.chain(1, "restore", 30)
            await until(lambda: any(e.kind == "chip_back" and e.chain == 1
                                    for e in service.events), "the chip back")  # fmt: skip

            # a PIC that stops acknowledging is a named problem, and mining goes on
            control.board("fail_pic", 2, "nack")
            await until(lambda: any("pic" in k.lower() for k in service.board.problems),
                        "the PIC problem on the board")  # fmt: skip
            control.board("fail_pic", 2, None)
            start = pool.stats.accepted
            await until(lambda: pool.stats.accepted >= start + 2, "shares after the faults")
            # every nonce the chips put on their lines reaches the agent's count
            emitted = sum(c["nonces_out"] for c in control.stats()["chains"])
            await until(lambda: service.state.snapshot()["nonces"] >= emitted, "every nonce")
            snap = service.state.snapshot()
            assert snap["nonces"] == sum(snap["shares"].values())

            stop.set()
            assert await asyncio.wait_for(runner, WAIT_S) == 0
            # the agent powered the chains down on the way out: the emulator sees DC-DC off
            await until(lambda: all(c["power_w"] == 0 for c in control.stats()["chains"]),
                        "the emulated chains to draw no power")  # fmt: skip
            await pool.stop()

        asyncio.run(main())
        control.close()
    assert emu.proc.returncode == 0
    assert not (root / D.EMULATOR_FILE).exists()


def test_link_bus_behaves_like_an_smbus(tmp_path: Path) -> None:
    root = tmp_path / "board"
    with EmulatorProcess(root) as emu:
        bus = LinkBus(emu.description["i2c_bus"])
        with pytest.raises(OSError) as no_ack:
            bus.read_byte_data(0x33, 0)  # nobody at 0x33: what smbus2 raises on the board
        assert no_ack.value.errno == errno.EREMOTEIO
        temp = bus.read_i2c_block_data(0x48, 0, 2)  # the emulated controller-side TMP75
        assert len(temp) == 2 and 15 <= temp[0] <= 60
        with pytest.raises(OSError) as bad:
            bus.read_byte_data(0x48, 300)
        assert bad.value.errno == errno.EINVAL and "register" in str(bad.value)
        bus.close()
    with pytest.raises(LinkError, match=r"link\.sock"):  # the emulator has gone
        LinkBus(emu.description["i2c_bus"]).read_byte(0x50)


def test_attaching_without_a_running_emulator_says_what_to_do(tmp_path: Path) -> None:
    root = tmp_path / "board"
    root.mkdir()
    conf = loads(attached_config(tmp_path / "state", root, 1))
    with pytest.raises(ValueError, match="start the emulator first"):
        read_description(root)
    (root / D.EMULATOR_FILE).write_text(json.dumps({
        "pid": 2**22 + 7, "uarts": [], "i2c_bus": "unix:x", "sysfs_root": str(root),
        "chains": 4, "chips_per_chain": 72}))  # fmt: skip

    async def main() -> None:
        service = MiningService(conf)
        with pytest.raises(StartupError, match="is not running"):
            await service._make_units()

    asyncio.run(main())


def test_emulator_dir_is_only_for_the_emulated_kind() -> None:
    from agent.config import ConfigError

    text = '[board]\nkind = "cpu"\nemulator_dir = "/tmp/x"\n'
    with pytest.raises(ConfigError, match=r"board\.emulator_dir"):
        loads(text)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> EmulatorServer:
    board = EmulatedL3Plus(tmp_path_factory.mktemp("board"))  # never started: no threads
    return EmulatorServer(board, "/nonexistent/link.sock")


@settings(max_examples=300, deadline=None)
@given(line=st.one_of(
    st.binary(max_size=200),
    st.builds(lambda o: json.dumps(o).encode(), st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=8), kids,
                                                                  max_size=5),
        max_leaves=20)),
    st.builds(lambda op, call, args: json.dumps({"op": op, "call": call, "args": args}).encode(),
              st.sampled_from(["i2c", "chain", "board", "set", "stats", "x"]),
              st.sampled_from(["read_byte", "read_byte_data", "write_i2c_block_data", "vanish",
                               "kill_fan", "__init__", "close", "nope"]),
              st.lists(st.integers(-5, 300) | st.text(max_size=3) | st.none(), max_size=4)),
))  # fmt: skip
def test_property_link_server_answers_every_line(server: EmulatorServer, line: bytes) -> None:
    """Hostile lines on the link: one reply line each, "ok" or an error naming what was wrong."""
    reply = json.loads(server.handle_line(line))
    assert set(reply) in ({"ok"}, {"error", "errno"})
    if "error" in reply:
        assert reply["error"] and isinstance(reply["errno"], int)
