"""The doge-agent command.

Exit codes: 0 ok, 1 failure, 2 bad usage or bad config."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import signal
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import TextIO

from agent import __version__, scrypt
from agent import defaults as D
from agent.config import Config
from agent.hardware.cpu import CpuBoard, Nonce, Work, synthetic_work
from agent.mining.targets import difficulty_to_target
from agent.state import State

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("agent")


# ---------------------------------------------------------------------------- shared helpers


def difficulty_arg(text: str) -> float:
    """A difficulty as 256, 0.0625 or 1/16."""
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= D.MAX_TICKET_DIFFICULTY:
        raise argparse.ArgumentTypeError(f"must be in (0, 2**32], got {text}")
    return float(value)


def seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"must be in (0, 86400], got {text}")
    return value


def demo_seconds_arg(text: str) -> float:
    """Like seconds_arg, but 0 means until Ctrl-C."""
    return 0.0 if text.strip() in ("0", "0.0") else seconds_arg(text)


def threads_arg(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= D.MAX_CPU_THREADS:
        raise argparse.ArgumentTypeError(f"must be an integer in 1..{D.MAX_CPU_THREADS}")
    return int(text)


class SyntheticMiner:
    """The CPU board on random work, every nonce verified and counted in State.

    Until Stratum exists nothing is submitted: a nonce meeting the share target stays pending."""

    def __init__(
        self,
        threads: int,
        ticket_difficulty: float,
        state: State,
        on_verified: Callable[[Nonce, bool], None] | None = None,
    ) -> None:
        self.state = state
        self.ticket_difficulty = ticket_difficulty
        self.share_target = difficulty_to_target(1)
        self.works: dict[int, Work] = {}
        self._next_id = 1
        self._on_verified = on_verified
        self.bad = 0
        self.board = CpuBoard(
            threads,
            ticket_difficulty,
            self._on_nonce,
            on_exhausted=lambda _work: self.new_work(),
            on_hashes=lambda _chip, n: state.add_hashes(0, n),
        )
        state.set_chain(0, chips=threads, frequency_mhz=0.0)

    def new_work(self) -> None:
        work = synthetic_work(self._next_id, clean=True, target=self.share_target)
        self._next_id += 1
        self.works = {work.work_id: work}  # clean work: older ones are gone
        self.board.set_work(work)

    async def start(self) -> None:
        await self.board.start()
        self.new_work()

    async def stop(self) -> None:
        await self.board.stop()

    def _on_nonce(self, found: Nonce) -> None:
        work = self.works.get(found.work_id)
        if work is None:  # the board promises never to report retired work
            raise RuntimeError(f"nonce of retired work {found.work_id}")
        header = work.header76 + found.nonce.to_bytes(4, "little")
        good = (
            scrypt.pow_hash(header) == found.raw_hash
            and scrypt.hash_meets(found.raw_hash, self.board.ticket_target)
        )
        if not good:
            self.bad += 1
            outcome = "hw_errors"
        elif scrypt.hash_meets(found.raw_hash, work.target):
            outcome = "pending"  # a share: it waits for a pool client
        else:
            outcome = "below_target"
        self.state.record_nonce(found.chain, self.ticket_difficulty, outcome)
        if self._on_verified is not None:
            self._on_verified(found, good)


def _missing_features() -> list[str]:
    missing = []
    if importlib.util.find_spec("agent.stratum.client") is None:
        missing.append("the Stratum pool client (issue 4)")
    if importlib.util.find_spec("agent.api.http") is None:
        missing.append("the status page and /api/status")
    if importlib.util.find_spec("agent.emulator.hashboard") is None:
        missing.append("the emulated BM1485 board (issue 5)")
    return missing


# ---------------------------------------------------------------------------- commands


def cmd_selftest(args: argparse.Namespace, out: TextIO) -> int:
    from agent import selftest

    return selftest.run(out)


def cmd_bench(args: argparse.Namespace, out: TextIO) -> int:
    try:
        from agent import benchmark
    except ImportError as e:
        print(f"bench: not available in this build ({e})", file=sys.stderr)
        return EXIT_FAIL
    return int(benchmark.main(list(args.bench_args)))


def cmd_config_check(args: argparse.Namespace, out: TextIO) -> int:
    from agent import config

    errors = config.check(args.file)
    for error in errors:
        print(error, file=out)
    if errors:
        print(f"{args.file}: {len(errors)} error(s)", file=out)
        return EXIT_USAGE
    print(f"{args.file}: ok", file=out)
    return EXIT_OK


def cmd_secrets_encrypt(args: argparse.Namespace, out: TextIO) -> int:
    """Print a Fernet token for a secret read from stdin or a prompt.

    Never from argv: command lines show in `ps` and in shell history."""
    import getpass

    from agent.security.secrets import SecretBox, SecretsError

    if sys.stdin.isatty():
        secret = getpass.getpass("secret: ")
        if getpass.getpass("again: ") != secret:
            print("secrets encrypt: the two entries differ", file=sys.stderr)
            return EXIT_USAGE
    else:
        secret = sys.stdin.read()
        # Only the line ending `echo` or a file adds: spaces may be part of the password.
        secret = secret.removesuffix("\n").removesuffix("\r")
        if "\n" in secret:
            print("secrets encrypt: expected one line on stdin", file=sys.stderr)
            return EXIT_USAGE
    if not secret:
        print("secrets encrypt: empty secret", file=sys.stderr)
        return EXIT_USAGE
    try:
        box = SecretBox.for_state_dir(args.state_dir)
    except SecretsError as e:
        print(f"secrets encrypt: {e}", file=sys.stderr)
        return EXIT_FAIL
    print(box.encrypt(secret), file=out)
    return EXIT_OK


def cmd_secrets(args: argparse.Namespace, out: TextIO) -> int:
    return cmd_secrets_encrypt(args, out)


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    if args.board == "synthetic":
        print(f"doge-agent {__version__} demo: self-test, then the CPU board on random work",
              file=out)  # fmt: skip
    else:
        print(f"doge-agent {__version__} demo: self-test, then the agent on the {args.board} "
              "board against the local pool", file=out)  # fmt: skip
    if cmd_selftest(args, out) != EXIT_OK:
        print("demo: the self-test failed; not mining with a wrong scrypt core", file=out)
        return EXIT_FAIL
    if args.board != "synthetic":
        from agent.demo import run_demo

        seconds = D.DEMO_SECONDS if args.seconds is None else args.seconds
        return asyncio.run(run_demo(seconds, args.board, args.threads, out))
    if args.seconds is None:
        args.seconds = D.DEMO_SECONDS
    elif args.seconds == 0:
        print("demo: --seconds 0 (until Ctrl-C) is for the emulated and cpu boards", file=out)
        return EXIT_USAGE
    return asyncio.run(_demo(args, out))


async def _demo(args: argparse.Namespace, out: TextIO) -> int:
    state = State()
    printed = 0

    def show(found: Nonce, good: bool) -> None:
        nonlocal printed
        printed += 1
        if printed <= args.max_print:
            verdict = "verified" if good else "WRONG HASH"
            where = f"thread {found.chip}, work {found.work_id}"
            shown = found.raw_hash[::-1].hex()[:24]  # display order, as explorers show it
            print(f"  nonce 0x{found.nonce:08x} ({where}) hash {shown}... {verdict}", file=out)
        elif printed == args.max_print + 1:
            print("  ... further nonces are counted, not printed", file=out)

    miner = SyntheticMiner(args.threads, args.difficulty, state, on_verified=show)
    print(
        f"\nCPU board: {args.threads} thread(s), backend {scrypt.backend()}, ticket difficulty "
        f"{args.difficulty:g} (one nonce per {args.difficulty * 65536:.0f} hashes on average), "
        f"{args.seconds:g} s",
        file=out,
    )
    started = time.monotonic()
    await miner.start()
    try:
        await asyncio.sleep(args.seconds)
    finally:
        await miner.stop()
    elapsed = time.monotonic() - started
    snap = state.snapshot()
    hashes = miner.board.hashes_done()
    shares = snap["shares"]
    estimate = snap["nonces"] * args.difficulty * 65536 / elapsed
    print(
        f"\nnonces found: {snap['nonces']} ({snap['nonces'] - miner.bad} verified with pow_hash, "
        f"{miner.bad} wrong); {shares['pending']} meet pool difficulty 1, "
        f"{shares['below_target']} only the ticket",
        file=out,
    )
    print(
        f"hashrate: {hashes / elapsed:,.0f} H/s counted ({hashes:,} hashes in {elapsed:.1f} s); "
        f"{estimate:,.0f} H/s estimated from nonces x difficulty x 65536",
        file=out,
    )
    missing = _missing_features()
    if missing:
        print("not in this build yet: " + "; ".join(missing) + " (later issues)", file=out)
    if snap["nonces"] == 0:
        print("warning: no nonce found; try a longer --seconds or an easier --difficulty", file=out)
    return EXIT_FAIL if miner.bad else EXIT_OK


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from agent import config as cfg

    try:
        conf = cfg.load(args.config)
    except cfg.ConfigError as e:
        for error in e.errors:
            print(error, file=sys.stderr)
        return EXIT_USAGE
    from agent.logs import setup_logging

    setup_logging(conf)  # JSON lines file with rotation + the console; never raises
    return asyncio.run(_run(conf))


async def _run(conf: Config) -> int:
    import concurrent.futures

    from agent.service import MiningService

    loop = asyncio.get_running_loop()
    # the share path's re-check (scrypt, GIL released), state writes and config reads run here
    # (chip nonces are verified on the C core's own threads): a few threads, not asyncio's
    # default of cores + 4 (each keeps a scrypt scratch, a stack, an arena)
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
        D.AGENT_EXECUTOR_THREADS, thread_name_prefix="agent-worker"))  # fmt: skip
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = MiningService(conf)
    # SIGHUP: read the config file again; an invalid one keeps the agent on the old config
    loop.add_signal_handler(signal.SIGHUP, service.request_reload)
    try:
        return await service.run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def _log_status(snap: dict) -> None:
    s = snap["shares"]
    counts = f"below_target {s['below_target']}, pending {s['pending']}, hw {s['hw_errors']}"
    log.info(
        "hashrate %.0f H/s, %d hashes, %d nonces (%s)",
        snap["hashrate_hs"], snap["hashes"], snap["nonces"], counts,
    )  # fmt: skip


def cmd_emulate(args: argparse.Namespace, out: TextIO) -> int:
    """Serve an emulated BM1485 board's chains on pseudo-terminals until SIGINT or SIGTERM."""
    if args.root is not None:
        return _emulate_board(args, out)
    import threading

    from agent.emulator.hashboard import EmulatedBoard

    board = EmulatedBoard(
        args.chains,
        args.chips,
        ticket_difficulty=args.difficulty,
        rate_scale=args.rate_scale,
    ).start()
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        for chain in board.chains:
            print(f"chain {chain.chain}: {chain.path}", file=out, flush=True)
        print(
            f"{args.chains} x {args.chips} BM1485 chips, ticket difficulty {args.difficulty:g} "
            "for mask 0xFF; Ctrl-C to stop",
            file=out,
            flush=True,
        )
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        board.stop()
    return EXIT_OK


def _emulate_board(args: argparse.Namespace, out: TextIO) -> int:
    """The whole emulated L3+ (chains, I2C parts, fans, thermal model) in this process, for an
    agent in another one: `[board] kind = "emulated"` with `emulator_dir` = the root."""
    from agent.emulator.server import serve

    def ready(desc: dict) -> None:
        for i, path in enumerate(desc["uarts"]):
            print(f"chain {i}: {path}", file=out)
        print(f"i2c bus: {desc['i2c_bus']}\nsysfs root: {desc['sysfs_root']}", file=out)
        print(f'agent config: [board] kind = "emulated", emulator_dir = "{args.root}"; '
              "Ctrl-C to stop", file=out, flush=True)  # fmt: skip

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(args.root, stop, ready, chains=args.chains, chips=args.chips,
                    ticket_difficulty=args.difficulty, rate_scale=args.rate_scale,
                    ambient_c=args.ambient_c, seed=args.seed)  # fmt: skip

    try:
        asyncio.run(main())
    except OSError as e:
        print(f"emulate: {args.root}: {e}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="doge-agent",
        description="Open firmware for Scrypt (Litecoin / Dogecoin) ASIC miners.",
        epilog="Exit codes: 0 ok, 1 failure, 2 bad usage or bad config.",
    )
    p.add_argument("--version", action="version", version=f"doge-agent {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser(
        "selftest",
        help="check the scrypt core against known vectors",
        description="Check the C scrypt core against known vectors on every backend this CPU "
        "runs; exit 1 on any mismatch.",
    )
    s.set_defaults(func=cmd_selftest)

    s = sub.add_parser(
        "bench",
        help="print the scrypt hash-rate table",
        add_help=False,  # --help goes to the benchmark's own parser
        description="Benchmark (options: doge-agent bench --help).",
    )
    s.add_argument("bench_args", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser(
        "config",
        help="configuration tools",
        description="Configuration tools. check FILE: validate a config file as the agent would "
        "read it (exit 0 valid, 2 invalid).",
    )
    actions = s.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = actions.add_parser(
        "check",
        help="validate a config file, naming each bad key by its path",
        description="Validate FILE with its environment overlay and DOGE_AGENT__SECTION__KEY "
        "overrides; print each error with its key path; exit 2 when invalid.",
    )
    c.add_argument("file", metavar="FILE", type=Path)
    c.set_defaults(func=cmd_config_check)

    s = sub.add_parser(
        "secrets",
        help="secrets at rest (pool passwords, API credentials)",
        description="Secrets at rest. encrypt: read a secret from stdin or a no-echo prompt and "
        "print a password_enc token for the config file.",
    )
    actions = s.add_subparsers(dest="secrets_command", metavar="ACTION", required=True)
    c = actions.add_parser(
        "encrypt",
        help="print a password_enc token for a secret read from stdin or a prompt",
        description="Read one secret from stdin (or prompt for it on a terminal; never from the "
        "command line) and print a Fernet token for password_enc, encrypted with this board's key "
        "(created in the state directory if it does not exist yet).",
    )
    c.add_argument(
        "--state-dir",
        type=Path,
        default=Path(D.STATE_DIR),
        help=f"where the board's key lives (default {D.STATE_DIR})",
    )
    c.set_defaults(func=cmd_secrets)

    s = sub.add_parser(
        "demo",
        help="self-test, then the agent on the emulated L3+ against the local pool",
        description="Run the self-test, then the whole agent on the emulated L3+ (or the CPU "
        "board) mining against a local Stratum pool, with its status page, JSON API and cgminer "
        "API on loopback; --board synthetic mines random work on the CPU board without a pool, "
        "printing every nonce found (verified with pow_hash).",
    )
    s.add_argument(
        "--board",
        choices=("emulated", "cpu", "synthetic"),
        default="emulated",
        help="what hashes (default emulated)",
    )
    s.add_argument(
        "--seconds",
        type=demo_seconds_arg,
        default=None,
        help=f"how long to mine; 0 = until Ctrl-C (default {D.DEMO_SECONDS:g})",
    )
    s.add_argument(
        "--threads",
        type=threads_arg,
        default=D.CPU_THREADS,
        help=f"CPU threads (default {D.CPU_THREADS})",
    )
    s.add_argument(
        "--difficulty",
        type=difficulty_arg,
        default=D.DEMO_TICKET_DIFFICULTY,
        help="ticket difficulty every reported nonce meets, e.g. 1/16 or 0.0625 "
        f"(default {Fraction(D.DEMO_TICKET_DIFFICULTY)})",
    )
    s.add_argument("--max-print", type=int, default=40, help="nonces printed one per line")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser(
        "run",
        help="run the agent until SIGTERM or SIGINT",
        description="Run the agent with a config file until SIGTERM or SIGINT, then shut down "
        "cleanly (exit 0).",
    )
    s.add_argument("-c", "--config", required=True, type=Path, metavar="FILE", help="TOML file")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser(
        "emulate",
        help="serve an emulated BM1485 board on pseudo-terminals",
        description="Emulate BM1485 chains behind pseudo-terminals (one per chain), print their "
        "paths, and answer until SIGINT or SIGTERM. Nonces are found with real scrypt at an easy "
        "ticket difficulty.",
    )
    s.add_argument("--chains", type=int, default=D.CHAINS, help=f"chains (default {D.CHAINS})")
    s.add_argument(
        "--chips",
        type=int,
        default=D.CHIPS_PER_CHAIN,
        help=f"chips per chain (default {D.CHIPS_PER_CHAIN})",
    )
    s.add_argument(
        "--difficulty",
        type=difficulty_arg,
        default=D.EMULATED_TICKET_DIFFICULTY,
        help="ticket difficulty an emulated chip's mask 0xFF stands for (default 1/1024)",
    )
    s.add_argument(
        "--rate-scale", type=float, default=1.0, help="multiply the modelled hash rate (default 1)"
    )
    s.add_argument(
        "--root",
        type=Path,
        default=None,
        metavar="DIR",
        help="serve the whole board (I2C parts on DIR/link.sock, fans and GPIOs in DIR, thermal "
        "model) for an agent with [board] emulator_dir = DIR; without it, the chains only",
    )
    s.add_argument(
        "--ambient-c",
        type=float,
        default=D.EMULATOR_AMBIENT_C,
        help=f"with --root: ambient temperature (default {D.EMULATOR_AMBIENT_C:g})",
    )
    s.add_argument("--seed", type=int, default=None, help="with --root: seed of the chips' luck")
    s.set_defaults(func=cmd_emulate)

    from agent import cli_ssh  # status, pools, logs: the maintenance commands for SSH

    cli_ssh.add_parsers(sub)
    return p


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # everything after "bench" belongs to the benchmark's parser
        return cmd_bench(argparse.Namespace(bench_args=argv[1:]), out or sys.stdout)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad usage, 0 on --help
        return int(e.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args, out or sys.stdout))
    except KeyboardInterrupt:
        return EXIT_FAIL
