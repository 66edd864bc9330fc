"""Config: the contract of DESIGN.md, errors naming key paths, env overrides, overlays, secrets."""

from __future__ import annotations

import dataclasses
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import config as C
from agent import defaults as D

SECRET = "hunter2-very-secret"
TOKEN = "gAAAAA" + "B" * 94  # Fernet-shaped

GOOD = f"""
[agent]
environment = "production"
state_dir = "/var/lib/doge-agent"

[[pools]]
url = "stratum+tcp://127.0.0.1:3333"
user = "wallet.worker"
password = "{SECRET}"
priority = 1

[[pools]]
url = "stratum+ssl://pool.example.com:3443"
user = "wallet.backup"
password_enc = "{TOKEN}"
priority = 0

[board]
kind = "emulated"
chains = 4
chips_per_chain = 72
threads = 1
ticket_difficulty = 0.0009765625

[thermal]
mode = "air"
target_temp_c = 60
hot_temp_c = 75
dangerous_temp_c = 85

[api]
http_listen = "127.0.0.1:8080"
cgminer_listen = "127.0.0.1:4028"
"""


def write(tmp_path: Path, text: str, name: str = "agent.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(C.ConfigError) as info:
        C.loads(text, env=env)
    return info.value.errors


def test_the_design_example_loads(tmp_path: Path) -> None:
    conf = C.load(write(tmp_path, GOOD), env={})
    assert conf.board.kind == "emulated"
    assert conf.board.ticket_difficulty == 1 / 1024
    assert conf.thermal.hot_temp_c == 75.0
    assert conf.api.cgminer_listen == "127.0.0.1:4028"
    # pools are in priority order, lowest first
    assert [p.user for p in conf.pools] == ["wallet.backup", "wallet.worker"]
    assert conf.pools[0].tls and conf.pools[0].host == "pool.example.com"
    assert conf.pools[1].port == 3333 and conf.pools[1].password == SECRET
    assert conf.sources == (str(tmp_path / "agent.toml"),)
    assert C.check(tmp_path / "agent.toml", env={}) == []


def test_config_is_frozen() -> None:
    conf = C.loads(GOOD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        conf.board.threads = 8  # type: ignore[misc]


def test_empty_file_gives_the_defaults() -> None:
    conf = C.loads("")
    assert conf.thermal.target_temp_c == D.TARGET_TEMP_C
    assert conf.api.http_listen == D.HTTP_LISTEN
    assert conf.agent.state_dir == D.STATE_DIR
    assert conf.pools == ()


def test_l3plus_ticket_defaults_to_the_chip_mask() -> None:
    assert C.loads('[board]\nkind = "l3plus"').board.ticket_difficulty == 256
    assert C.loads('[board]\nkind = "cpu"').board.ticket_difficulty == D.TICKET_DIFFICULTY


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ('[board]\nthreads = "x"', "board.threads", 'must be an integer in 1..256, got "x"'),
        ("[board]\nthreads = 0", "board.threads", "1..256, got 0"),
        ("[board]\nthreads = true", "board.threads", "got True"),
        ('[board]\nkind = "s9"', "board.kind", "one of l3plus, emulated, cpu, remote"),
        ("[board]\nticket_difficulty = 0", "board.ticket_difficulty", "number in (0,"),
        ("[board]\nticket_difficulty = nan", "board.ticket_difficulty", "got nan"),
        ("[board]\nchains = 99", "board.chains", "1..16"),
        ("[board]\nuarts = []", "board.uarts", "array of strings"),
        ("[board]\nwarp = 9", "board.warp", "unknown key"),
        ('[agent]\nenvironment = "test"', "agent.environment", "development, staging"),
        ('[agent]\nstate_dir = ""', "agent.state_dir", "non-empty string"),
        ('[thermal]\nmode = "oil"', "thermal.mode", "air, immersion"),
        ("[thermal]\ntarget_temp_c = 500", "thermal.target_temp_c", "[0, 125]"),
        ("[thermal]\nhot_temp_c = 90", "thermal.dangerous_temp_c", "above hot_temp_c"),
        ('[api]\nhttp_listen = "8080"', "api.http_listen", "host:port"),
        ('[api]\ncgminer_listen = "h:70000"', "api.cgminer_listen", "0..65535"),
        ("[extra]\nx = 1", "extra", "unknown section"),
        ("board = 3", "board", "must be a table"),
        ("pools = 3", "pools", "array of tables"),
        ('[[pools]]\nurl = "http://a:1"\nuser = "u"', "pools[0].url", "stratum+tcp://"),
        ('[[pools]]\nurl = "stratum+tcp://a"\nuser = "u"', "pools[0].url", "host:port"),
        ('[[pools]]\nurl = "stratum+tcp://a:1"', "pools[0].user", "missing"),
        ('[[pools]]\nuser = "u"', "pools[0].url", "missing"),
        ('[[pools]]\nurl = "stratum+tcp://a:1"\nuser = "u"\nprio = 1', "pools[0].prio", "unknown"),
        (
            '[[pools]]\nurl = "stratum+tcp://a:1"\nuser = "u"\npassword_enc = "nope"',
            "pools[0].password_enc",
            "Fernet token",
        ),
        ('[board]\nkind = "remote"', "board.host", "missing"),
    ],
)
def test_each_bad_key_is_named_by_its_path(text: str, path: str, fragment: str) -> None:
    errors = errors_of(text)
    assert any(e.startswith(f"{path}: ") and fragment in e for e in errors), errors


def test_all_errors_are_collected(tmp_path: Path) -> None:
    text = '[board]\nthreads = "x"\nchains = 0\n[api]\nhttp_listen = 5\n[thermal]\nmode = "x"'
    errors = C.check(write(tmp_path, text), env={})
    paths = sorted(e.split(":")[0] for e in errors)
    assert paths == ["api.http_listen", "board.chains", "board.threads", "thermal.mode"]


def test_unreadable_and_invalid_files_are_errors_not_exceptions(tmp_path: Path) -> None:
    missing = tmp_path / "none.toml"
    assert "cannot read" in C.check(missing, env={})[0]
    assert "not valid TOML" in C.check(write(tmp_path, "[board\n"), env={})[0]
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe[board]")
    assert "not UTF-8" in C.check(tmp_path / "bin.toml", env={})[0]
    with pytest.raises(C.ConfigError, match="cannot read"):
        C.load(missing, env={})


def test_environment_overrides(tmp_path: Path) -> None:
    env = {
        "DOGE_AGENT__API__HTTP_LISTEN": "0.0.0.0:80",
        "DOGE_AGENT__BOARD__THREADS": "4",
        "DOGE_AGENT__BOARD__TICKET_DIFFICULTY": "0.5",
        "DOGE_AGENT__BOARD__UARTS": '["/dev/ttyO1", "/dev/ttyO2"]',
        "DOGE_AGENT__POOLS__1__PASSWORD": "1234",  # kept a string for a string key
        "DOGE_AGENT_SCRYPT_BACKEND": "portable",  # not ours: one underscore
        "HOME": "/root",
    }
    conf = C.load(write(tmp_path, GOOD), env=env)
    assert conf.api.http_listen == "0.0.0.0:80"
    assert conf.board.threads == 4
    assert conf.board.ticket_difficulty == 0.5
    assert conf.board.uarts == ("/dev/ttyO1", "/dev/ttyO2")
    assert [p.password for p in conf.pools if p.user == "wallet.backup"] == ["1234"]


def test_environment_can_add_a_pool_and_is_validated() -> None:
    env = {
        "DOGE_AGENT__POOLS__0__URL": "stratum+tcp://10.0.0.1:3333",
        "DOGE_AGENT__POOLS__0__USER": "w.1",
    }
    conf = C.loads("", env=env)
    assert conf.pools[0].url == "stratum+tcp://10.0.0.1:3333"
    assert conf.pools[0].password == D.POOL_PASSWORD
    errors = errors_of("", {"DOGE_AGENT__BOARD__THREADS": "many", "DOGE_AGENT__FOO__BAR": "1"})
    assert any(e.startswith("board.threads:") and '"many"' in e for e in errors)
    assert any(e.startswith("foo.bar:") and "DOGE_AGENT__FOO__BAR" in e for e in errors)
    errors = errors_of("", {"DOGE_AGENT__POOLS__3__URL": "stratum+tcp://a:1"})
    assert errors[0].startswith("pools[3].url:")


def test_overlay_file_is_merged_over_the_main_one(tmp_path: Path) -> None:
    main = write(tmp_path, GOOD.replace('"production"', '"staging"'))
    overlay = '[board]\nthreads = 8\n[api]\nhttp_listen = "0.0.0.0:8080"'
    write(tmp_path, overlay, "agent.staging.toml")
    write(tmp_path, "[board]\nthreads = 999", "agent.production.toml")  # not selected
    conf = C.load(main, env={})
    assert conf.board.threads == 8
    assert conf.board.chains == 4  # kept from the main file
    assert conf.api.http_listen == "0.0.0.0:8080"
    assert conf.sources == (str(main), str(tmp_path / "agent.staging.toml"))
    # the environment variable picks the overlay too: 999 threads come from the production one
    errors = C.check(main, env={"DOGE_AGENT__AGENT__ENVIRONMENT": "production"})
    assert errors == ["board.threads: must be an integer in 1..256, got 999"]


def test_overlay_errors_and_absence(tmp_path: Path) -> None:
    main = write(tmp_path, '[agent]\nenvironment = "development"')
    assert C.load(main, env={}).sources == (str(main),)  # no overlay file: fine
    write(tmp_path, "[board\n", "agent.development.toml")
    assert "agent.development.toml: not valid TOML" in C.check(main, env={})[0]
    write(tmp_path, '[agent]\nenvironment = "staging"', "agent.development.toml")
    assert C.check(main, env={})[0].startswith("agent.environment:")


def test_secrets_never_appear_in_errors_or_repr(tmp_path: Path) -> None:
    conf = C.loads(GOOD)
    for shown in (repr(conf), str(conf), repr(conf.pools), f"{conf.pools[1]}"):
        assert SECRET not in shown and TOKEN not in shown
        assert "***" in shown
    bad = [
        f'[[pools]]\nurl = "stratum+tcp://a:1"\nuser = "u"\npassword = ["{SECRET}"]',
        f'[[pools]]\nurl = "stratum+tcp://a:1"\nuser = "u"\npassword_enc = "{SECRET}"',
        f'[[pools]]\nurl = "stratum+tcp://a:1"\nuser = "u"\npassword = "{SECRET}"\n'
        f'password_enc = "{TOKEN}"',
        f'[[pools]]\nurl = "stratum+tcp://me:{SECRET}@a:1"\nuser = "u"',
        f'[[pools]]\nurl = "stratum+tcp://a:1"\nuser = "u"\npasword = "{SECRET}"',
    ]
    for text in bad:
        errors = errors_of(text)
        assert errors and all(e.startswith("pools[0].") for e in errors), errors
        assert not any(SECRET in e or TOKEN in e for e in errors), errors
    errors = C.check(write(tmp_path, f'[[pools]]\npassword = "{SECRET}\n'), env={})
    assert errors and not any(SECRET in e for e in errors)
    errors = errors_of("", {"DOGE_AGENT__POOLS__0__PASSWORD_ENC": SECRET})
    assert errors and not any(SECRET in e for e in errors)


def test_duplicate_pools_are_an_error() -> None:
    pool = '[[pools]]\nurl = "stratum+tcp://a:1"\nuser = "u"\n'
    assert errors_of(pool + pool) == ["pools[1]: same url and user as pools[0]"]


# A TOML-ish generator: known and unknown sections and keys with values of every type.
keys = st.sampled_from(
    [k for section in C.SCHEMA.values() for k in section] + ["x", "pools", "1", "a.b", ""]
)
scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True),
    st.booleans(),
    st.text(max_size=20),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
documents = st.dictionaries(
    st.sampled_from([*C.SCHEMA, "extra"]),
    st.dictionaries(keys, values, max_size=5) | st.lists(st.dictionaries(keys, values), max_size=3)
    | values,
    max_size=6,
)  # fmt: skip


@given(documents)
def test_property_validate_never_raises(data: dict) -> None:
    config, errors = C.validate(data)
    assert (config is None) == bool(errors)
    assert all(isinstance(e, str) and ": " in e for e in errors)


toml_values = st.sampled_from(
    ['"x"', "0", "-1", "1e400", "nan", "inf", "true", "[]", '["a", 1]', "{a = 1}", "1979-05-27",
     '"stratum+tcp://a:1"', '"127.0.0.1:0"', '"cpu"', "0.0009765625", "300", '""', '"\\u0000"']
)  # fmt: skip
toml_lines = st.one_of(
    st.sampled_from(["[agent]", "[board]", "[thermal]", "[api]", "[[pools]]", "[x]", "[board.y]"]),
    st.builds(lambda k, v: f"{k} = {v}", keys.filter(lambda k: k.isidentifier()), toml_values),
    st.text(alphabet=string.printable, max_size=30),
)


@given(st.lists(toml_lines, max_size=15))
def test_property_check_never_raises_on_toml_ish_files(lines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "agent.toml"
        path.write_text("\n".join(lines))
        errors = C.check(path, env={})
        if not errors:
            assert isinstance(C.load(path, env={}), C.Config)
        assert all(isinstance(e, str) and e for e in errors)


@given(st.dictionaries(st.sampled_from(["BOARD__THREADS", "API__HTTP_LISTEN", "POOLS__0__URL",
                                        "X", "POOLS__X__Y", "BOARD__", "THERMAL__MODE"]),
                       st.text(max_size=20)))  # fmt: skip
def test_property_env_overrides_never_raise(env: dict[str, str]) -> None:
    env = {D.ENV_PREFIX + k: v.replace("\x00", "") for k, v in env.items()}
    try:
        C.loads(GOOD, env=env)
    except C.ConfigError as e:
        assert e.errors
