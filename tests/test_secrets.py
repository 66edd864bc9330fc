"""security.secrets: the per-board key file, encrypt/decrypt with clear errors, the log filter,
`doge-agent secrets encrypt`, and an encrypted pool password that never reaches a log line."""

from __future__ import annotations

import base64
import io
import logging
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from agent import cli, config
from agent.security.secrets import (
    KEY_FILE_NAME,
    SecretBox,
    SecretFilter,
    SecretsError,
    decrypt,
    encrypt,
    ensure_key,
    install_secret_filter,
    key_path,
    redact,
    resolve_pool_passwords,
)

ROOT = Path(__file__).resolve().parent.parent
SECRET = "hunter2-Pool-Passw0rd"


# ---------------------------------------------------------------------------- the key file


def test_key_file_is_created_0600_and_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = ensure_key(state)
    assert path == state / KEY_FILE_NAME == key_path(state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    Fernet(path.read_bytes().strip())  # a valid key
    first = path.read_bytes()
    assert ensure_key(state) == path and path.read_bytes() == first  # never replaced
    assert sorted(p.name for p in state.iterdir()) == [KEY_FILE_NAME]  # no temp file left


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    keys: list[bytes] = []

    def start() -> None:
        keys.append(ensure_key(tmp_path).read_bytes())

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_key_readable_or_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = ensure_key(tmp_path)
    path.chmod(mode)
    with pytest.raises(SecretsError, match=rf"mode {mode:04o}.*chmod 600"):
        ensure_key(tmp_path)
    with pytest.raises(SecretsError, match="group or others"):
        SecretBox(path)


def test_a_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    path = key_path(tmp_path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key at all")
    os.close(fd)
    with pytest.raises(SecretsError, match="not a valid Fernet key") as err:
        ensure_key(tmp_path)
    assert "not a key at all" not in str(err.value)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"QUJD",
        base64.urlsafe_b64encode(bytes(31)),
        base64.urlsafe_b64encode(bytes(33)),
        base64.urlsafe_b64encode(bytes(32))[:-1],
        b"A" * 45,
    ],
)
def test_the_key_check_agrees_with_fernet(tmp_path: Path, content: bytes) -> None:
    # The key file is checked without the cryptography package: it must refuse what Fernet refuses.
    with pytest.raises(ValueError):
        Fernet(content)
    path = key_path(tmp_path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content + b"\n")
    os.close(fd)
    with pytest.raises(SecretsError, match="not a valid Fernet key"):
        ensure_key(tmp_path)


def test_a_key_made_by_fernet_is_accepted(tmp_path: Path) -> None:
    path = key_path(tmp_path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    key = Fernet.generate_key()
    os.write(fd, key + b"\n")
    os.close(fd)
    assert ensure_key(tmp_path) == path
    assert decrypt(Fernet(key).encrypt(SECRET.encode()).decode(), path) == SECRET


def test_the_key_file_is_made_and_checked_without_cryptography(tmp_path: Path) -> None:
    # Its Rust extension costs ~8 MB of RSS: the agent loads it only to encrypt or decrypt.
    code = (
        "import sys\nfrom agent.security import secrets\nimport agent.service\n"
        f"secrets.ensure_key({str(tmp_path)!r})\nsecrets.ensure_key({str(tmp_path)!r})\n"
        "assert not [m for m in sys.modules if m.startswith('cryptography')], 'imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_env(), timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    Fernet(key_path(tmp_path).read_bytes().strip())


def test_a_symlinked_key_is_refused(tmp_path: Path) -> None:
    real = ensure_key(tmp_path / "elsewhere")
    (tmp_path / "state").mkdir()
    key_path(tmp_path / "state").symlink_to(real)
    with pytest.raises(SecretsError, match="not a regular file"):
        ensure_key(tmp_path / "state")


def test_an_unwritable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SecretsError, match="cannot create key file"):
        ensure_key(blocker / "state")


# ---------------------------------------------------------------------------- encrypt / decrypt


def test_round_trip_and_tokens_pass_the_config_check(tmp_path: Path) -> None:
    path = ensure_key(tmp_path)
    for text in (SECRET, "ünïcödé pässwörd", " spaces kept ", "x"):
        token = encrypt(text, path)
        assert (len(text) < 4 or text not in token) and token.startswith("gAAAAA")
        assert decrypt(token, path) == text
        assert config.fernet_token(token)[1] is None  # the shape config.py accepts


def test_wrong_key_names_the_field_and_never_the_secret(tmp_path: Path) -> None:
    token = encrypt(SECRET, ensure_key(tmp_path / "board-a"))
    other = ensure_key(tmp_path / "board-b")
    with pytest.raises(SecretsError) as err:
        decrypt(token, other, "password_enc of pools[0]")
    msg = str(err.value)
    assert msg.startswith("password_enc of pools[0] cannot be decrypted with this board's key")
    assert str(other) in msg and "doge-agent secrets encrypt" in msg
    assert SECRET not in msg and token not in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__


@pytest.mark.parametrize("token", ["", "gAAAAAgarbage", "ü", "gAAAAA" + "A" * 100])
def test_damaged_tokens_are_a_clear_error(tmp_path: Path, token: str) -> None:
    box = SecretBox(ensure_key(tmp_path))
    with pytest.raises(SecretsError, match="the token cannot be decrypted"):
        box.decrypt(token)


def test_reprs_show_no_key(tmp_path: Path) -> None:
    path = ensure_key(tmp_path)
    box = SecretBox(path)
    key = path.read_text().strip()
    assert key not in repr(box) and str(path) in repr(box)
    f = SecretFilter([SECRET])
    assert SECRET not in repr(f)


# ---------------------------------------------------------------------------- redaction in logs


def test_redact_masks_every_form() -> None:
    tricky = 'pa"ss\\word\n'
    assert redact(f"a {SECRET} b {SECRET}", [SECRET]) == "a *** b ***"
    assert redact(repr({"pw": tricky}), [tricky]) == "{'pw': '***'}"
    assert redact('{"pw": "pa\\"ss\\\\word\\n"}', [tricky]) == '{"pw": "***"}'
    assert redact("abcdef", ["abc", "abcdef"]) == "***"  # longest first
    assert redact("nothing here", ["", SECRET]) == "nothing here"


@pytest.fixture
def secret_log(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    f = SecretFilter([SECRET])
    caplog.handler.addFilter(f)
    yield caplog, f
    caplog.handler.removeFilter(f)


def test_filter_masks_messages_args_extras_and_tracebacks(secret_log) -> None:
    caplog, _ = secret_log
    log = logging.getLogger("agent.test_secrets")
    log.info("plain %s", SECRET)
    log.info(f"f-string {SECRET}")
    log.info("dict %r", {"password": SECRET})
    log.info("mapping %(pw)s", {"pw": SECRET})
    log.warning("bad args %s %s", SECRET)  # a logging bug must not leak either
    log.info("extra", extra={"pool_password": SECRET})
    try:
        raise RuntimeError(f"auth failed for {SECRET}")
    except RuntimeError:
        log.exception("failure")
    log.info("stack", stack_info=True)
    text = caplog.text + "".join(str(vars(r)) for r in caplog.records)
    assert SECRET not in text
    assert text.count("***") >= 7
    assert caplog.records[-2].exc_text and "RuntimeError: auth failed for ***" in caplog.text


def test_filter_ignores_placeholder_passwords_and_can_be_extended(secret_log) -> None:
    caplog, f = secret_log
    f.add("x")  # the conventional "no password": masking it would garble every line
    f.add("later-added-secret")
    logging.getLogger("agent.t").info("max x index later-added-secret")
    assert "max x index ***" in caplog.text


def test_install_adds_the_filter_to_every_root_handler() -> None:
    logger = logging.getLogger("agent.test_secrets.install")
    logger.propagate = False
    stream = io.StringIO()
    h1, h2 = logging.StreamHandler(stream), logging.StreamHandler(stream)
    logger.addHandler(h1)
    logger.addHandler(h2)
    try:
        f = SecretFilter([SECRET])
        install_secret_filter(f, logger)
        install_secret_filter(f, logger)  # idempotent
        assert h1.filters == [f] and h2.filters == [f]
        logger.warning("pw=%s", SECRET)
        assert stream.getvalue() == "pw=***\npw=***\n"
    finally:
        logger.removeHandler(h1)
        logger.removeHandler(h2)


# ---------------------------------------------------------------------------- the command


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOGE_AGENT")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_cli_reads_stdin_and_the_token_decrypts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "secrets", "encrypt", "--state-dir", str(state)],
        input=SECRET + "\n", capture_output=True, text=True, env=_env(), timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip()
    assert SECRET not in proc.stdout + proc.stderr
    assert stat.S_IMODE(key_path(state).stat().st_mode) == 0o600
    assert SecretBox(key_path(state)).decrypt(token) == SECRET


def test_cli_in_process_refuses_empty_and_argv_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdin", io.StringIO(" with spaces \r\n"))
    assert cli.main(["secrets", "encrypt", "--state-dir", str(tmp_path)], out=out) == 0
    assert decrypt(out.getvalue().strip(), key_path(tmp_path)) == " with spaces "

    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    assert cli.main(["secrets", "encrypt", "--state-dir", str(tmp_path)]) == 2
    assert "empty secret" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("a\nb\n"))
    assert cli.main(["secrets", "encrypt", "--state-dir", str(tmp_path)]) == 2
    # A secret on the command line would show in `ps`: there is no such argument.
    assert cli.main(["secrets", "encrypt", "--state-dir", str(tmp_path), SECRET]) == 2


def test_cli_reports_a_bad_key_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ensure_key(tmp_path).chmod(0o644)
    monkeypatch.setattr(sys, "stdin", io.StringIO(SECRET))
    assert cli.main(["secrets", "encrypt", "--state-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "chmod 600" in err and SECRET not in err


# ---------------------------------------------------------------------------- through config.load


def _write_config(tmp_path: Path, token: str) -> Path:
    conf = tmp_path / "agent.toml"
    conf.write_text(
        f'[agent]\nstate_dir = "{tmp_path / "state"}"\n\n'
        '[[pools]]\nurl = "stratum+tcp://127.0.0.1:3333"\nuser = "wallet.w1"\n'
        f'password_enc = "{token}"\npriority = 0\n\n'
        '[[pools]]\nurl = "stratum+tcp://127.0.0.1:3334"\nuser = "wallet.w2"\npriority = 1\n'
    )
    return conf


def test_encrypted_pool_password_through_config_load_never_reaches_a_log(
    tmp_path: Path, secret_log
) -> None:
    caplog, f = secret_log
    f.discard(SECRET)  # registered below, from what the config resolves, as the agent must do
    key = ensure_key(tmp_path / "state")
    conf = config.load(_write_config(tmp_path, encrypt(SECRET, key)), env={})
    assert SECRET not in repr(conf) and SECRET not in str(conf.pools)

    passwords = resolve_pool_passwords(conf, key_path(conf.agent.state_dir))
    assert passwords == [SECRET, "x"]
    for pw in passwords:
        f.add(pw)

    log = logging.getLogger("agent.stratum.client")
    log.info("config %s", conf)
    log.info("authorize %s with %s", conf.pools[0].user, passwords[0])
    log.debug("sent %r", {"method": "mining.authorize", "params": ["wallet.w1", passwords[0]]})
    log.warning("pool said: %s", f"Invalid password {passwords[0]}")
    assert SECRET not in caplog.text
    assert "wallet.w1" in caplog.text and "***" in caplog.text


def test_a_pool_password_from_another_board_names_the_pool(tmp_path: Path) -> None:
    foreign = encrypt(SECRET, ensure_key(tmp_path / "other-board"))
    key = ensure_key(tmp_path / "state")
    conf = config.load(_write_config(tmp_path, foreign), env={})
    with pytest.raises(SecretsError) as err:
        resolve_pool_passwords(conf, key)
    msg = str(err.value)
    assert msg.startswith("password_enc of pools[0] (stratum+tcp://127.0.0.1:3333) cannot be "
                          "decrypted with this board's key")
    assert SECRET not in msg and foreign not in msg
