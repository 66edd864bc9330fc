"""The maintenance commands for someone on the board over SSH: status, pools, logs.

They talk to the running agent through its local web API (GET /api/status, POST
/api/control/<action> with the owner password) and read its JSON log file. Exit codes: 0 ok,
1 failure (the agent is not reachable, refused the action, or the log cannot be read), 2 usage."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import re
import ssl
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from agent import defaults as D

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
PASSWORD_ENV = "DOGE_AGENT_PASSWORD"
CONFIG_HELP = "the agent's TOML file: the API address, user and log file are read from it"


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------- helpers


def _config(args: argparse.Namespace) -> Any:
    """The Config of -c FILE, or None without -c; CliError(2) when the file is invalid."""
    path = getattr(args, "config", None)
    if path is None:
        return None
    from agent import config as cfg

    try:
        return cfg.load(path)
    except cfg.ConfigError as e:
        raise CliError(f"{path}: invalid config:\n  " + "\n  ".join(e.errors), EXIT_USAGE) from None


def url_from_listen(listen: str, tls: bool = False) -> str:
    """http://host:port for a listen address; a wildcard host becomes loopback."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


def base_url(args: argparse.Namespace) -> str:
    if args.url:
        if not re.match(r"^https?://[^\s/]+", args.url):
            raise CliError(f"--url must be http://host:port, got {args.url!r}", EXIT_USAGE)
        return args.url.rstrip("/")
    conf = _config(args)
    if conf is None:
        return D.CLI_URL
    listen = conf.api.http_listen
    if listen.endswith(":0"):
        raise CliError(
            f"{args.config}: api.http_listen = {listen!r} is a random port: give --url", EXIT_USAGE
        )
    return url_from_listen(listen, tls=bool(conf.api.tls_cert))


def _context(url: str) -> ssl.SSLContext | None:
    """HTTPS to this board's own address: its certificate is usually self-signed."""
    if not url.startswith("https://"):
        return None
    ctx = ssl.create_default_context()
    if re.match(r"^https://(127\.|\[::1\]|localhost[:/])", url):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def request(url: str, timeout: float, body: dict[str, Any] | None = None,
            auth: tuple[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
    """(HTTP status, parsed JSON) or CliError with a message a person can act on."""
    # Imported here: `doge-agent run` builds this module's parsers too, and urllib.request (with
    # http.client and email) would cost the running agent ~1.5 MB of RSS.
    import urllib.error
    import urllib.request

    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    req = urllib.request.Request(url, data=data, headers=headers,
                                 method="POST" if body is not None else "GET")  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=_context(url)) as resp:
            status, raw = resp.status, resp.read(8 << 20)
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read(1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        where = url.split("/api/")[0]
        raise CliError(
            f"the agent is not reachable at {where}: {reason} "
            "(is it running? see systemctl status doge-agent; or give --url or -c)"
        ) from None
    try:
        return status, json.loads(raw.decode("utf-8", "replace")) if raw else None
    except ValueError:
        return status, None


def _password() -> str:
    password = os.environ.get(PASSWORD_ENV)
    if password:
        return password
    if sys.stdin.isatty():
        import getpass

        try:
            return getpass.getpass("owner password: ")
        except (EOFError, KeyboardInterrupt):
            raise CliError("no password given", EXIT_USAGE) from None
    raise CliError(f"the owner password is needed: set {PASSWORD_ENV} or run on a terminal "
                   "(it is never taken from the command line)", EXIT_USAGE)  # fmt: skip


def _user(args: argparse.Namespace) -> str:
    if args.user:
        return str(args.user)
    conf = _config(args)
    return conf.api.user if conf is not None else D.STOCK_CGI_USER


def control(args: argparse.Namespace, action: str, body: dict[str, Any]) -> Any:
    url = base_url(args) + f"/api/control/{action}"
    status, data = request(url, args.timeout, body, (_user(args), _password()))
    error = data.get("error") if isinstance(data, dict) else None
    if status == 401:
        raise CliError("the agent refused the credentials (wrong user or password)")
    if status == 403:
        raise CliError("the agent does not take controls from this address (api.write_allow)")
    if status == 429:
        raise CliError("too many attempts: the agent locked this address out for a while")
    if status >= 400 or not isinstance(data, dict) or not data.get("ok"):
        raise CliError(f"{action} refused: {error or f'HTTP {status}'}")
    return data.get("result")


def snapshot(args: argparse.Namespace) -> dict[str, Any]:
    status, data = request(base_url(args) + "/api/status", args.timeout)
    if status != 200 or not isinstance(data, dict):
        raise CliError(f"/api/status answered HTTP {status}" + ("" if data else " (not JSON)"))
    return data


class Paint:
    """ANSI colour only on a terminal and only without NO_COLOR (https://no-color.org)."""

    def __init__(self, out: TextIO) -> None:
        isatty = getattr(out, "isatty", None)
        self.on = bool(isatty and isatty()) and not os.environ.get("NO_COLOR")

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.on and code else text


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def rate(hs: Any) -> str:
    v = _num(hs)
    if v is None:
        return "-"
    for unit, scale in (("GH/s", 1e9), ("MH/s", 1e6), ("kH/s", 1e3)):
        if v >= scale:
            return f"{v / scale:.2f} {unit}"
    return f"{v:.0f} H/s"


def duration(seconds: Any) -> str:
    v = _num(seconds)
    if v is None or v < 0:
        return "-"
    s = int(v)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d}d{h:02d}h{m:02d}m" if d else f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _cell(value: Any, fmt: str = "{}") -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return fmt.format(value) if fmt != "{}" else f"{value:g}"
    text = str(value)
    return "".join(c if c.isprintable() else "?" for c in text)[:60]


def table(headers: list[str], rows: list[list[str]], paint: Paint,
          colours: list[str] | None = None) -> list[str]:  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]  # fmt: skip
    lines = [paint("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
                   "1")]  # fmt: skip
    for n, row in enumerate(rows):
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        lines.append(paint(line, colours[n]) if colours else line)
    return lines


POOL_COLOURS = {"alive": "32", "connecting": "33", "subscribing": "33", "authorizing": "33",
                "dead": "31", "backoff": "31", "disconnected": "31", "stopped": "2"}  # fmt: skip


def render_status(snap: dict[str, Any], paint: Paint) -> str:
    def get(d: Any, key: str) -> Any:
        return d.get(key) if isinstance(d, dict) else None

    def rows(key: str) -> list[dict[str, Any]]:
        value = snap.get(key)
        return [x for x in value if isinstance(x, dict)] if isinstance(value, list) else []

    out: list[str] = []
    guardian = snap.get("guardian") if isinstance(snap.get("guardian"), dict) else {}
    g_state = str(get(guardian, "state") or "-")
    g_colour = "32" if g_state == "mining" else "33"
    out.append(
        f"doge-agent {_cell(snap.get('version'))}  up {duration(snap.get('uptime_s'))}  "
        f"hashrate {paint(rate(snap.get('hashrate_hs')), '1')}  "
        f"guardian {paint(g_state, g_colour)}"
        + (f" ({_cell(get(guardian, 'reason'))})" if get(guardian, "reason") else "")
    )
    shares = snap.get("shares") if isinstance(snap.get("shares"), dict) else {}
    names = ("accepted", "rejected", "stale", "below_target", "hw_errors", "pending")
    out.append("shares  " + "  ".join(f"{n.replace('_', ' ')} {_cell(get(shares, n))}"
                                      for n in names))  # fmt: skip
    chains = rows("chains")
    out.append("")
    out += table(
        ["CHAIN", "CHIPS", "FREQ MHz", "HASHRATE", "TEMP C", "HW ERR", "NONCES"],
        [[_cell(c.get("id")), _cell(c.get("chips")), _cell(c.get("frequency_mhz"), "{:.0f}"),
          rate(c.get("hashrate_hs")), _cell(c.get("temp_c"), "{:.1f}"),
          _cell(c.get("hw_errors")), _cell(c.get("nonces"))] for c in chains],
        paint,
    ) if chains else ["chains: none reported"]  # fmt: skip
    fans = rows("fans")
    out.append("")
    out += table(
        ["FAN", "RPM", "DUTY %"],
        [[str(i), _cell(f.get("rpm")), _cell(f.get("duty_pct"), "{:.0f}")]
         for i, f in enumerate(fans)],
        paint,
    ) if fans else ["fans: none (CPU board, or immersion)"]  # fmt: skip
    pools = rows("pools")
    out.append("")
    out += (
        pool_table(pools, paint) if pools else ["pools: none configured or connected"]
    )  # fmt: skip
    return "\n".join(out)


def pool_table(pools: list[dict[str, Any]], paint: Paint) -> list[str]:
    rows, colours = [], []
    for i, p in enumerate(pools):
        status = str(p.get("status") or "-")
        latency = _num(p.get("latency_ms"))
        enabled = p.get("enabled")
        rows.append([
            _cell(p.get("index", i)), ("*" if p.get("active") else "") , _cell(p.get("url")),
            _cell(p.get("user")) if "user" in p else "", status if enabled is not False
            else "disabled", "-" if latency is None else f"{latency:.0f} ms",
            _cell(p.get("accepted")), _cell(p.get("rejected")),
        ])  # fmt: skip
        colours.append(POOL_COLOURS.get(status, "") if enabled is not False else "2")
    headers = ["#", "ACTIVE", "URL", "USER", "STATUS", "LATENCY", "ACCEPTED", "REJECTED"]
    if not any(r[3] for r in rows):  # no user column without the owner's listing
        headers.pop(3)
        for r in rows:
            r.pop(3)
    if not any(r[1] for r in rows):
        headers.pop(1)
        for r in rows:
            r.pop(1)
    return table(headers, rows, paint, colours)


# ---------------------------------------------------------------------------- commands


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    snap = snapshot(args)
    if args.json:
        print(json.dumps(snap, indent=2, sort_keys=True), file=out)
    else:
        print(render_status(snap, Paint(out)), file=out)
    return EXIT_OK


def cmd_pools(args: argparse.Namespace, out: TextIO) -> int:
    action = args.pools_command or "list"
    if action == "list":
        snap = snapshot(args)
        stats = [p for p in snap.get("pools", []) if isinstance(p, dict)]
        pools: list[dict[str, Any]] = stats
        if os.environ.get(PASSWORD_ENV):  # the owner's listing: indices and enabled flags
            owned = control(args, "pools", {})
            if isinstance(owned, list):
                by_url = {p.get("url"): p for p in stats}
                pools = [{**by_url.get(o.get("url"), {}), **o} for o in owned
                         if isinstance(o, dict)]  # fmt: skip
        if args.json:
            print(json.dumps(pools, indent=2, sort_keys=True), file=out)
        elif not pools:
            print("no pools", file=out)
        else:
            print("\n".join(pool_table(pools, Paint(out))), file=out)
        return EXIT_OK
    actions = {"switch": "switch_pool", "enable": "enable_pool", "disable": "disable_pool"}
    result = control(args, actions[action], {"index": args.index})
    print(_cell(result) if isinstance(result, str) else json.dumps(result), file=out)
    return EXIT_OK


UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_arg(text: str) -> dt.datetime:
    """'30s', '10m', '2h', '1d' ago, or an ISO-8601 time (UTC unless it says otherwise)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if m:
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=float(m[1]) * UNITS[m[2]])
    from agent.logs import parse_time

    when = parse_time(text)
    if when is None:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (e.g. 10m, 2h, 2026-01-02T03:04)")
    return when


def count_arg(text: str) -> int:
    if not text.isdigit() or int(text) > 10_000_000:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}")
    return int(text)


def timeout_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"must be in (0, 600], got {text}")
    return value


def index_arg(text: str) -> int:
    if not text.isdigit() or int(text) > 1000:
        raise argparse.ArgumentTypeError(f"a pool index is a number from 0, got {text!r}")
    return int(text)


def log_file(args: argparse.Namespace) -> Path:
    if args.file is not None:
        return Path(args.file)
    conf = _config(args)
    if conf is not None:
        from agent.logs import log_path

        return log_path(conf)
    return Path(D.STATE_DIR) / D.LOG_FILE


def cmd_logs(args: argparse.Namespace, out: TextIO) -> int:
    from agent import logs

    path = log_file(args)
    found = logs.files_oldest_first(path)
    if not found and not args.follow:
        raise CliError(f"no log file at {path} (give --file or -c FILE)")
    unreadable = [p for p in found if not os.access(p, os.R_OK)]
    if unreadable:
        raise CliError(f"cannot read {unreadable[0]}: permission denied (try sudo)")
    colour = Paint(out).on
    for entry in logs.tail(path, args.lines, args.level, args.since):
        print(logs.render(entry, colour), file=out)
    out.flush()
    if not args.follow:
        return EXIT_OK
    follower = logs.Follower(path)
    try:
        while True:
            for line in follower.poll():
                entry = logs.parse_line(line)
                if entry is not None and logs.wanted(entry, args.level, args.since):
                    print(logs.render(entry, colour), file=out, flush=True)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        follower.close()


def run(func: Any, args: argparse.Namespace, out: TextIO) -> int:
    try:
        return int(func(args, out))
    except CliError as e:
        print(f"doge-agent {args.command}: {e}", file=sys.stderr)
        return e.code
    except BrokenPipeError:  # `doge-agent logs | head`
        return EXIT_OK


# ---------------------------------------------------------------------------- parser


def _api_options(p: argparse.ArgumentParser, with_user: bool = False, sub: bool = False) -> None:
    """The options that find the agent. On an action's own parser (sub) they default to
    SUPPRESS, so `pools -c F switch 1` and `pools switch 1 -c F` both work."""

    def d(value: Any) -> Any:
        return argparse.SUPPRESS if sub else value

    p.add_argument("-c", "--config", type=Path, metavar="FILE", default=d(None), help=CONFIG_HELP)
    p.add_argument(
        "--url",
        default=d(None),
        help=f"the agent's web API (default: from -c FILE's api.http_listen, else {D.CLI_URL})",
    )
    p.add_argument(
        "--timeout",
        type=timeout_arg,
        default=d(D.CLI_TIMEOUT_S),
        metavar="S",
        help=f"seconds to wait for the agent (default {D.CLI_TIMEOUT_S:g})",
    )
    if with_user:
        p.add_argument(
            "--user",
            default=d(None),
            help=f"the owner's user name (default: api.user from -c FILE, else "
            f"{D.STOCK_CGI_USER}); the password comes from ${PASSWORD_ENV} or a prompt",
        )
        p.add_argument("--json", action="store_true", default=d(False), help="list as JSON")


def add_parsers(sub: Any) -> None:
    """Add status, pools and logs to the doge-agent command's subparsers."""
    s = sub.add_parser(
        "status",
        help="the running agent at a glance: hashrate, chains, fans, pools, guardian",
        description="Show the running agent's state as a compact table, read from its local "
        "API (GET /api/status): hashrate, shares, each chain's chips, frequency, temperature "
        "and HW errors, the fans, each pool's status, latency and accepted/rejected shares, the "
        "guardian and the uptime. Colour only on a terminal without NO_COLOR.",
        epilog="Exit codes: 0 ok, 1 the agent is not reachable or answered an error, 2 usage.",
    )
    _api_options(s)
    s.add_argument("--json", action="store_true", help="print the raw /api/status snapshot")
    s.set_defaults(func=lambda a, o: run(cmd_status, a, o))

    s = sub.add_parser(
        "pools",
        help="list the pools; switch to, enable or disable one",
        description="Without ACTION: list the pools with their status, latency and shares (with "
        f"${PASSWORD_ENV} set, the owner's listing: config indices, users, enabled flags). The "
        "actions change the running agent through POST /api/control with the owner password, "
        f"read from ${PASSWORD_ENV} or a no-echo prompt, never from the command line. Changes "
        "last until the agent restarts; edit the config file to keep them.",
        epilog="Exit codes: 0 ok, 1 the agent is not reachable or refused, 2 usage.",
    )
    _api_options(s, with_user=True)
    actions = s.add_subparsers(dest="pools_command", metavar="ACTION")
    a = actions.add_parser("list", help="list the pools (the default)",
                           description="List the pools.")  # fmt: skip
    _api_options(a, with_user=True, sub=True)
    for name, what in (
        ("switch", "make pool N the preferred one (and enable it)"),
        ("enable", "enable pool N"),
        ("disable", "disable pool N (the last enabled pool cannot be disabled)"),
    ):
        a = actions.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")
        a.add_argument("index", type=index_arg, metavar="N", help="the pool's index (# column)")
        _api_options(a, with_user=True, sub=True)
    s.set_defaults(func=lambda a, o: run(cmd_pools, a, o))

    s = sub.add_parser(
        "logs",
        help="show the agent's JSON log readably (tail, follow, filter)",
        description="Print the agent's JSON log file (and its rotated backups) as readable "
        "lines: time (UTC), level, logger, message, extra fields and tracebacks. Corrupt or "
        "partial lines are shown raw, marked with '?'.",
        epilog="Exit codes: 0 ok, 1 no log file, 2 usage.",
    )
    s.add_argument("-c", "--config", type=Path, metavar="FILE", help=CONFIG_HELP)
    s.add_argument(
        "--file",
        type=Path,
        metavar="PATH",
        help=f"the log file (default: from -c FILE, else {Path(D.STATE_DIR) / D.LOG_FILE})",
    )
    s.add_argument(
        "-n", "--lines", type=count_arg, default=50, metavar="N",
        help="show the last N entries (default 50; 0 with -f: only new ones)",
    )  # fmt: skip
    s.add_argument("-f", "--follow", action="store_true", help="keep printing new entries")
    s.add_argument(
        "--level", choices=("debug", "info", "warning", "error", "critical"),
        help="only entries at this level or above",
    )  # fmt: skip
    s.add_argument(
        "--since", type=since_arg, metavar="WHEN",
        help="only entries from WHEN on: 30s, 10m, 2h, 1d ago, or an ISO-8601 time (UTC)",
    )  # fmt: skip
    s.add_argument("--interval", type=timeout_arg, default=0.5, help=argparse.SUPPRESS)
    s.set_defaults(func=lambda a, o: run(cmd_logs, a, o))
