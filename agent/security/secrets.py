"""Secrets at rest: a per-board Fernet key in state_dir, and keeping secrets out of the logs.

The key file is created once (mode 0600, atomically, never overwritten) and checked at every
start: a key others can read is refused, as is a file that is not a key. No message, exception or
repr made here ever contains a secret or the key.

The key file is made and checked without the cryptography package (a Fernet key is 32 random
bytes, url-safe base64): its Rust extension costs ~8 MB of RSS, so it is imported only when a
token is encrypted or decrypted (a password_enc in the config, `doge-agent secrets encrypt`)."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.config import Config

KEY_FILE_NAME = "secrets.key"
MASK = "***"


class SecretsError(Exception):
    """A key file or a token that cannot be used; the message says what to do, never the secret."""


def key_path(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / KEY_FILE_NAME


# ---------------------------------------------------------------------------- the key file


def new_key() -> bytes:
    """A new Fernet key, exactly as Fernet.generate_key() makes it."""
    return base64.urlsafe_b64encode(os.urandom(32))


def _check_key(data: bytes) -> None:
    """ValueError unless `data` is a key that Fernet() accepts (the same decoding and length;
    binascii.Error, for bad base64, is a ValueError)."""
    if len(base64.urlsafe_b64decode(data)) != 32:
        raise ValueError("not a valid Fernet key")


def _check_key_file(path: Path) -> bytes:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise SecretsError(f"key file {path} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        # A symlink could point the agent at a key someone else controls.
        raise SecretsError(f"key file {path} is not a regular file (a symlink?); refusing it")
    if st.st_mode & 0o077:
        raise SecretsError(
            f"key file {path} has mode {stat.S_IMODE(st.st_mode):04o}: readable or writable by "
            f"group or others; refusing it (fix: chmod 600 {path})"
        )
    euid = os.geteuid()
    if euid != 0 and st.st_uid != euid:
        raise SecretsError(f"key file {path} belongs to uid {st.st_uid}, not to us ({euid})")
    try:
        with open(path, "rb") as f:
            data = f.read(1024).strip()
        _check_key(data)
    except (ValueError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a valid Fernet key"
        raise SecretsError(
            f"key file {path} cannot be used: {reason}. Restore it from a backup; if it is lost, "
            f"delete it and re-encrypt every password_enc with 'doge-agent secrets encrypt'"
        ) from None
    return data


def _create_key_file(path: Path) -> None:
    """Write a new key so that `path` either does not exist or holds a whole key, even on a crash.

    The key is written to a private temporary file, synced, then hard-linked into place: link()
    never replaces an existing file, so two agents starting at once keep the first key."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A random name: threads of one process (same pid) must not share a temporary file.
    tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.write(fd, new_key() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)  # the new name survives a power cut
    finally:
        os.close(dfd)


def ensure_key(state_dir: str | os.PathLike[str]) -> Path:
    """The board's key file, created at first start; raises SecretsError if it is unusable."""
    path = key_path(state_dir)
    if not os.path.lexists(path):
        try:
            _create_key_file(path)
        except OSError as exc:
            raise SecretsError(f"cannot create key file {path}: {exc.strerror}") from None
    _check_key_file(path)
    return path


class SecretBox:
    """Encrypts and decrypts with one board's key. Its repr shows the path, never the key."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from cryptography.fernet import Fernet  # here, not at the top: see the module doc

        self.path = Path(path)
        self._fernet = Fernet(_check_key_file(self.path))

    @classmethod
    def for_state_dir(cls, state_dir: str | os.PathLike[str]) -> SecretBox:
        return cls(ensure_key(state_dir))

    def __repr__(self) -> str:
        return f"SecretBox(path={str(self.path)!r})"

    def encrypt(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError("encrypt() takes a str")
        return self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str, what: str = "the token") -> str:
        """The plaintext of `token`; `what` names it in errors (e.g. "password_enc of pools[0]")."""
        from cryptography.fernet import InvalidToken

        try:
            data = self._fernet.decrypt(token.encode("ascii") if isinstance(token, str) else token)
        except (InvalidToken, UnicodeEncodeError, TypeError):
            raise SecretsError(
                f"{what} cannot be decrypted with this board's key ({self.path}): it was "
                f"encrypted with another key or is damaged; encrypt it again on this board with "
                f"'doge-agent secrets encrypt'"
            ) from None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretsError(f"{what} decrypts to bytes that are not UTF-8 text") from None


def encrypt(text: str, key_file: str | os.PathLike[str]) -> str:
    return SecretBox(key_file).encrypt(text)


def decrypt(token: str, key_file: str | os.PathLike[str], what: str = "the token") -> str:
    return SecretBox(key_file).decrypt(token, what)


def resolve_pool_passwords(config: Config, key_file: str | os.PathLike[str]) -> list[str]:
    """Each pool's password in config.pools order (priority order), password_enc decrypted.

    Raises SecretsError naming the pool's key (index in priority order, and its url)."""
    box: SecretBox | None = None
    out: list[str] = []
    for i, pool in enumerate(config.pools):
        if pool.password_enc is not None:
            box = box or SecretBox(key_file)
            out.append(box.decrypt(pool.password_enc, f"password_enc of pools[{i}] ({pool.url})"))
        else:
            out.append(pool.password if pool.password is not None else "")
    return out


# ---------------------------------------------------------------------------- keeping logs clean


def _forms(secret: str) -> set[str]:
    # The same secret as it appears once escaped by repr() or JSON (a log of a dict or a message).
    forms = {
        secret,
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    return {f for f in forms if f}


def _all_forms(secrets: Iterable[str]) -> tuple[str, ...]:
    forms: set[str] = set()
    for s in secrets:
        if s:
            forms |= _forms(s)
    # Longest first, so a secret that contains another is masked whole.
    return tuple(sorted(forms, key=len, reverse=True))


def _mask(text: str, forms: tuple[str, ...]) -> str:
    for form in forms:
        if form in text:
            text = text.replace(form, MASK)
    return text


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of every secret (and its escaped forms) replaced by ***."""
    return _mask(text, _all_forms(secrets))


# LogRecord attributes that are not user data: everything else (extra=...) is checked too.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}


class SecretFilter(logging.Filter):
    """Masks registered secrets in every record: message, args, exception text, stack and extras.

    Install it on the handlers (a filter on a logger does not see records of its children):
    `install_secret_filter(f)` adds it to every root handler. Secrets shorter than `min_chars` are
    not masked: masking "x" (the conventional pool password) would garble every line and protects
    nothing, since a 1-3 character password is guessed at once anyway."""

    def __init__(self, secrets: Iterable[str] = (), min_chars: int = 4) -> None:
        super().__init__()
        self.min_chars = min_chars
        # Replaced whole, never mutated: a thread logging while another adds a secret always sees
        # a consistent set, and the escaped forms are computed once, not per record.
        self._secrets: frozenset[str] = frozenset()
        self._forms: tuple[str, ...] = ()
        for s in secrets:
            self.add(s)

    def __repr__(self) -> str:
        return f"SecretFilter({len(self._secrets)} secrets)"

    def _set(self, secrets: frozenset[str]) -> None:
        forms = _all_forms(secrets)
        self._secrets, self._forms = secrets, forms

    def add(self, secret: str) -> None:
        if isinstance(secret, str) and len(secret) >= self.min_chars:
            self._set(self._secrets | {secret})

    def discard(self, secret: str) -> None:
        self._set(self._secrets - {secret})

    def _clean(self, text: str) -> str:
        return _mask(text, self._forms)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._forms:
            return True
        try:
            message = record.getMessage()
        except Exception:  # bad %-args: still log, but never let a secret through the fallback
            message = f"{record.msg!s} {record.args!r}"
        # Render once and drop the args: a secret may hide in any arg's str() or repr().
        record.msg, record.args = self._clean(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
            record.exc_info = None  # formatters then print exc_text, not a fresh traceback
        if record.stack_info:
            record.stack_info = self._clean(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _RECORD_ATTRS:
                record.__dict__[name] = self._clean_value(value)
        return True

    def _clean_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._clean(value)
        if isinstance(value, (int, float, bool)) or value is None:
            return value
        text = str(value)
        cleaned = self._clean(text)
        return value if cleaned == text else cleaned


def install_secret_filter(
    secret_filter: SecretFilter, logger: logging.Logger | None = None
) -> None:
    """Add the filter to every handler of `logger` (the root logger by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if secret_filter not in handler.filters:
            handler.addFilter(secret_filter)
