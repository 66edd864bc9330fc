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
    st.sampled_from(
        [
            "[agent]",
            "[board]",
            "[thermal]",
            "[api]",
            "[[pools]]",
            "[x]",
            "[board.y]",
            "[tuner]",
            "[guardian]",
        ]
    ),
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


# ---------------------------------------------------------------------------- control and API keys

API_PASSWORD = "owner-pass-very-secret"
API_TOKEN = "tok_" + "Z" * 40

FULL = (
    GOOD.replace(
        "dangerous_temp_c = 85\n",
        "dangerous_temp_c = 85\n"
        + """\
rearm_temp_c = 45
cooldown_s = 90
max_trips = 5
rearm_freq_pct = 75
throttle_step_pct = 5
throttle_min_pct = 50
throttle_interval_s = 20
unthrottle_margin_c = 4
sensor_lost_s = 60
max_jump_c = 15
fan_grace_s = 20
fan_min_pct = 30
fan_max_pct = 90
kp = 3.5
ki = 0.2
kd = 2
bias_pct = 40
interval_s = 2
""",
    )
    + f"""
read_allow = ["127.0.0.1", "192.168.1.0/24", "fd00::/8"]
write_allow = ["127.0.0.0/8"]
cgminer_read_allow = ["10.0.0.0/8"]
cgminer_write_allow = []
user = "owner"
password = "{API_PASSWORD}"
token = "{API_TOKEN}"
login_max_failures = 3
login_lockout_s = 600
tls_cert = "/etc/doge-agent/cert.pem"
tls_key = "/etc/doge-agent/key.pem"

[tuner]
enabled = false
min_mhz = 200
max_mhz = 500
step_mhz = 6.25
hw_budget = 0.02
confidence = 0.9
min_samples = 100
low_rate_fraction = 0.4
fail_strikes = 4
core_fraction = 0.3
tune_voltage = false
voltage_min_v = 9.5
voltage_max_v = 10.5
voltage_step_v = 0.05
power_target_w = 700
retune_delta_c = 8
interval_s = 120

[guardian]
enabled = true
pause_below_usd_day = -0.5
resume_above_usd_day = 0.5
min_dwell_s = 600
price_max_age_s = 3600
stale_policy = "last_known"
electricity_usd_kwh = 0.08
ltc_reward = 6.25
doge_reward = 10000
merged_mining = false
ltc_difficulty = 25000000
doge_difficulty = 15000000
currency = "eur"
price_url = "https://prices.example.com/simple?ids=litecoin,dogecoin"
price_file = "/var/lib/doge-agent/prices.json"
refresh_s = 600
fetch_timeout_s = 5
watts_default = 850
interval_s = 30
"""
)


def test_a_full_file_loads_every_new_key(tmp_path: Path) -> None:
    conf = C.load(write(tmp_path, FULL), env={})
    t, tu, g, a = conf.thermal, conf.tuner, conf.guardian, conf.api
    assert (t.rearm_temp_c, t.cooldown_s, t.max_trips, t.rearm_freq_pct) == (45, 90, 5, 75)
    assert (t.throttle_step_pct, t.throttle_min_pct, t.throttle_interval_s) == (5, 50, 20)
    assert (t.unthrottle_margin_c, t.sensor_lost_s, t.max_jump_c, t.fan_grace_s) == (4, 60, 15, 20)
    assert (t.fan_min_pct, t.fan_max_pct, t.kp, t.ki, t.kd, t.bias_pct) == (30, 90, 3.5, 0.2, 2, 40)
    assert t.interval_s == 2.0 and isinstance(t.max_trips, int)
    assert (tu.enabled, tu.min_mhz, tu.max_mhz, tu.step_mhz) == (False, 200, 500, 6.25)
    assert (tu.hw_budget, tu.confidence, tu.min_samples, tu.fail_strikes) == (0.02, 0.9, 100, 4)
    assert (tu.low_rate_fraction, tu.core_fraction, tu.tune_voltage) == (0.4, 0.3, False)
    assert (tu.voltage_min_v, tu.voltage_max_v, tu.voltage_step_v) == (9.5, 10.5, 0.05)
    assert (tu.power_target_w, tu.retune_delta_c, tu.interval_s) == (700, 8, 120)
    assert (g.enabled, g.pause_below_usd_day, g.resume_above_usd_day) == (True, -0.5, 0.5)
    assert (g.min_dwell_s, g.price_max_age_s, g.stale_policy) == (600, 3600, "last_known")
    assert (g.electricity_usd_kwh, g.ltc_reward, g.doge_reward, g.merged_mining) == (
        0.08, 6.25, 10000, False)  # fmt: skip
    assert (g.ltc_difficulty, g.doge_difficulty, g.currency) == (25e6, 15e6, "eur")
    assert g.price_url == "https://prices.example.com/simple?ids=litecoin,dogecoin"
    assert (g.price_file, g.refresh_s, g.fetch_timeout_s) == ("/var/lib/doge-agent/prices.json",
                                                              600, 5)  # fmt: skip
    assert (g.watts_default, g.interval_s) == (850, 30)
    assert a.read_allow == ("127.0.0.1", "192.168.1.0/24", "fd00::/8")
    assert a.write_allow == ("127.0.0.0/8",) and a.cgminer_read_allow == ("10.0.0.0/8",)
    assert a.cgminer_write_allow == ()  # an empty list: nobody
    assert (a.user, a.password, a.password_enc, a.token) == ("owner", API_PASSWORD, None, API_TOKEN)
    assert (a.login_max_failures, a.login_lockout_s) == (3, 600)
    assert (a.tls_cert, a.tls_key) == ("/etc/doge-agent/cert.pem", "/etc/doge-agent/key.pem")
    with pytest.raises(dataclasses.FrozenInstanceError):
        conf.tuner.max_mhz = 800  # type: ignore[misc]


def test_new_sections_default_like_the_modules() -> None:
    from agent.control.guardian import GuardianOptions
    from agent.control.thermal import ThermalOptions
    from agent.control.tuner import TunerOptions

    conf = C.loads("")
    assert ThermalOptions.from_config(conf.thermal) == ThermalOptions()
    # a TunerOptions built directly is active; the config keeps the tuner opt-in
    opt_in = dataclasses.replace(TunerOptions(), enabled=False)
    assert TunerOptions.from_config(conf.tuner) == opt_in
    assert GuardianOptions.from_config(conf.guardian) == GuardianOptions()
    assert conf.guardian.enabled is False and conf.tuner.enabled is False  # both opt-in
    assert conf.tuner.power_target_w is None and conf.guardian.price_url is None
    a = conf.api
    assert (a.read_allow, a.write_allow) == (D.WEB_READ_ALLOW, D.WEB_WRITE_ALLOW)
    assert (a.cgminer_read_allow, a.cgminer_write_allow) == (D.CGMINER_READ_ALLOW,
                                                             D.CGMINER_WRITE_ALLOW)  # fmt: skip
    assert (a.user, a.password, a.password_enc, a.token, a.tls_cert) == ("root", None, None,
                                                                         None, None)  # fmt: skip
    assert (a.login_max_failures, a.login_lockout_s) == (D.WEB_LOGIN_MAX_FAILURES,
                                                         D.WEB_LOGIN_LOCKOUT_S)  # fmt: skip


def test_each_module_builds_its_options_from_the_config() -> None:
    from agent.api.cgminer import CgminerOptions
    from agent.api.http import WebOptions
    from agent.api.stock_cgi import StockCgiOptions
    from agent.control.guardian import GuardianOptions
    from agent.control.thermal import ThermalOptions
    from agent.control.tuner import TunerOptions
    from agent.security.access import AccessPolicy

    conf = C.loads(FULL)
    th = ThermalOptions.from_config(conf.thermal)
    for f in dataclasses.fields(C.ThermalConfig):
        assert getattr(th, f.name) == getattr(conf.thermal, f.name), f.name
    tu = TunerOptions.from_config(conf.tuner)
    for f in dataclasses.fields(C.TunerConfig):
        assert getattr(tu, f.name) == getattr(conf.tuner, f.name), f.name
    gu = GuardianOptions.from_config(conf.guardian)
    for f in dataclasses.fields(C.GuardianConfig):
        assert getattr(gu, f.name) == getattr(conf.guardian, f.name), f.name
    # every config key is one the module reads (no key silently ignored)
    assert {f.name for f in dataclasses.fields(C.ThermalConfig)} <= set(
        ThermalOptions.__dataclass_fields__)  # fmt: skip
    assert {f.name for f in dataclasses.fields(C.TunerConfig)} <= set(
        TunerOptions.__dataclass_fields__)  # fmt: skip
    assert set(GuardianOptions.__dataclass_fields__) == {
        f.name for f in dataclasses.fields(C.GuardianConfig)}  # fmt: skip

    web = WebOptions.from_config(conf, password=API_PASSWORD, token=API_TOKEN)
    assert web.listen == conf.api.http_listen
    assert (web.read_allow, web.write_allow) == (conf.api.read_allow, conf.api.write_allow)
    assert (web.tls_cert_file, web.tls_key_file) == (conf.api.tls_cert, conf.api.tls_key)
    a = conf.api
    cgi = StockCgiOptions(password=API_PASSWORD, user=a.user, read_allow=a.read_allow,
                          write_allow=a.write_allow, login_max_failures=a.login_max_failures,
                          login_lockout_s=a.login_lockout_s)  # fmt: skip
    assert cgi.user == "owner" and API_PASSWORD not in repr(cgi)
    policy = AccessPolicy(list(a.cgminer_read_allow), list(a.cgminer_write_allow))
    assert policy.may_read("10.1.2.3") and not policy.may_write("127.0.0.1")
    assert CgminerOptions(listen=a.cgminer_listen).listen == "127.0.0.1:4028"
    web_policy = AccessPolicy(list(a.read_allow), list(a.write_allow))
    assert web_policy.may_read("192.168.1.9") and web_policy.may_read("fd00::1")


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ("[thermal]\nrearm_temp_c = -5", "thermal.rearm_temp_c", "[0, 125]"),
        ("[thermal]\ncooldown_s = -1", "thermal.cooldown_s", "[0, 86400]"),
        ("[thermal]\nmax_trips = 1.5", "thermal.max_trips", "integer in 1..100"),
        ("[thermal]\nmax_trips = 0", "thermal.max_trips", "1..100"),
        ("[thermal]\nrearm_freq_pct = 0", "thermal.rearm_freq_pct", "(0, 100]"),
        ("[thermal]\nthrottle_step_pct = 101", "thermal.throttle_step_pct", "(0, 100]"),
        ("[thermal]\nthrottle_min_pct = 0", "thermal.throttle_min_pct", "(0, 100]"),
        ("[thermal]\nthrottle_interval_s = 0", "thermal.throttle_interval_s", "(0, 3600]"),
        ("[thermal]\nunthrottle_margin_c = -1", "thermal.unthrottle_margin_c", "[0, 50]"),
        ("[thermal]\nsensor_lost_s = 0", "thermal.sensor_lost_s", "(0, 3600]"),
        ("[thermal]\nmax_jump_c = 0", "thermal.max_jump_c", "(0, 125]"),
        ("[thermal]\nfan_grace_s = inf", "thermal.fan_grace_s", "got inf"),
        ("[thermal]\nfan_min_pct = -1", "thermal.fan_min_pct", "[0, 100]"),
        ("[thermal]\nfan_max_pct = 120", "thermal.fan_max_pct", "[0, 100]"),
        ('[thermal]\nkp = "4"', "thermal.kp", 'got "4"'),
        ("[thermal]\nki = -0.1", "thermal.ki", "[0, 100]"),
        ("[thermal]\nkd = true", "thermal.kd", "got True"),
        ("[thermal]\nbias_pct = 101", "thermal.bias_pct", "[0, 100]"),
        ("[thermal]\ninterval_s = 0", "thermal.interval_s", "[0.05, 60]"),
        ("[thermal]\nsentinels_c = [0]", "thermal.sentinels_c", "unknown key"),
        ("[tuner]\nenabled = 1", "tuner.enabled", "true or false"),
        ("[tuner]\nmin_mhz = 40", "tuner.min_mhz", "[50, 800]"),
        ("[tuner]\nmax_mhz = 900", "tuner.max_mhz", "[50, 800]"),
        ("[tuner]\nstep_mhz = 0", "tuner.step_mhz", "(0, 100]"),
        ("[tuner]\nhw_budget = 1", "tuner.hw_budget", "(0, 1)"),
        ("[tuner]\nconfidence = 0.5", "tuner.confidence", "(0.5, 1)"),
        ("[tuner]\nmin_samples = 0", "tuner.min_samples", "1..1000000"),
        ("[tuner]\nlow_rate_fraction = 0", "tuner.low_rate_fraction", "(0, 1]"),
        ("[tuner]\nfail_strikes = 2.0", "tuner.fail_strikes", "integer"),
        ("[tuner]\ncore_fraction = 2", "tuner.core_fraction", "(0, 1]"),
        ('[tuner]\ntune_voltage = "yes"', "tuner.tune_voltage", "true or false"),
        ("[tuner]\nvoltage_min_v = 8", "tuner.voltage_min_v", "[9, 11]"),
        ("[tuner]\nvoltage_max_v = 12", "tuner.voltage_max_v", "[9, 11]"),
        ("[tuner]\nvoltage_step_v = 0", "tuner.voltage_step_v", "(0, 1]"),
        ("[tuner]\npower_target_w = 0", "tuner.power_target_w", "(0, 10000]"),
        ("[tuner]\nretune_delta_c = 0", "tuner.retune_delta_c", "(0, 100]"),
        ("[tuner]\ninterval_s = 0.5", "tuner.interval_s", "[1, 86400]"),
        ("[tuner]\nticket_difficulty = 1", "tuner.ticket_difficulty", "unknown key"),
        ('[guardian]\nenabled = "true"', "guardian.enabled", "true or false"),
        ('[guardian]\npause_below_usd_day = "0"', "guardian.pause_below_usd_day", "number"),
        ("[guardian]\nresume_above_usd_day = nan", "guardian.resume_above_usd_day", "got nan"),
        ("[guardian]\nmin_dwell_s = -1", "guardian.min_dwell_s", "[0, 604800]"),
        ("[guardian]\nprice_max_age_s = -1", "guardian.price_max_age_s", "[0, 2.592e+06]"),
        ('[guardian]\nstale_policy = "stop"', "guardian.stale_policy", "keep_mining, pause"),
        ("[guardian]\nelectricity_usd_kwh = -0.1", "guardian.electricity_usd_kwh", "[0, 10]"),
        ("[guardian]\nltc_reward = -1", "guardian.ltc_reward", "[0, 1000]"),
        ("[guardian]\ndoge_reward = -1", "guardian.doge_reward", "[0, 1e+07]"),
        ("[guardian]\nmerged_mining = 0", "guardian.merged_mining", "true or false"),
        ("[guardian]\nltc_difficulty = 0", "guardian.ltc_difficulty", "(0, 1e+18]"),
        ("[guardian]\ndoge_difficulty = -5", "guardian.doge_difficulty", "(0, 1e+18]"),
        ('[guardian]\ncurrency = "USD"', "guardian.currency", "currency code"),
        ('[guardian]\nprice_url = "ftp://x/p"', "guardian.price_url", "http:// or https://"),
        ('[guardian]\nprice_url = "https://"', "guardian.price_url", "with a host"),
        ('[guardian]\nprice_url = "http://h:99999/"', "guardian.price_url", "http://"),
        ('[guardian]\nprice_file = ""', "guardian.price_file", "non-empty string"),
        ("[guardian]\nrefresh_s = 0", "guardian.refresh_s", "[1, 604800]"),
        ("[guardian]\nfetch_timeout_s = 0", "guardian.fetch_timeout_s", "(0, 300]"),
        ("[guardian]\nwatts_default = 0", "guardian.watts_default", "(0, 10000]"),
        ("[guardian]\ninterval_s = 0", "guardian.interval_s", "[1, 86400]"),
        ("[guardian]\nprice = 1", "guardian.price", "unknown key"),
        ("guardian = 1", "guardian", "must be a table"),
        ('[api]\nread_allow = "10.0.0.0/8"', "api.read_allow", "must be an array of networks"),
        ('[api]\nread_allow = ["10.0.0.0/8", "lan"]', "api.read_allow[1]", "'lan' is not"),
        ('[api]\nwrite_allow = ["10.0.0.1/8"]', "api.write_allow[0]", "did you mean '10.0.0.0/8'"),
        ("[api]\ncgminer_read_allow = [1]", "api.cgminer_read_allow[0]", "got 1"),
        ('[api]\ncgminer_write_allow = ["::1/200"]', "api.cgminer_write_allow[0]", "not an IPv4"),
        ('[api]\nuser = ""', "api.user", "1..64 printable"),
        ('[api]\nuser = "a:b"', "api.user", "without :"),
        ('[api]\npassword_enc = "plain"', "api.password_enc", "Fernet token"),
        ('[api]\ntoken = "short"', "api.token", "16..512"),
        ("[api]\nlogin_max_failures = 0", "api.login_max_failures", "1..1000"),
        ("[api]\nlogin_lockout_s = 0", "api.login_lockout_s", "[1, 86400]"),
        ('[api]\ntls_cert = ""', "api.tls_cert", "non-empty string"),
        ('[api]\ntls_cert = "/c.pem"', "api.tls_key", "set tls_cert and tls_key together"),
        ('[api]\ntls_key = "/k.pem"', "api.tls_cert", "missing"),
    ],
)
def test_each_bad_new_key_is_named_by_its_path(text: str, path: str, fragment: str) -> None:
    errors = errors_of(text)
    assert any(e.startswith(f"{path}: ") and fragment in e for e in errors), errors


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ("[thermal]\nrearm_temp_c = 60", "thermal.rearm_temp_c", "below target_temp_c (60)"),
        ("[thermal]\nrearm_temp_c = 90", "thermal.rearm_temp_c", "below dangerous_temp_c (85)"),
        ("[thermal]\ntarget_temp_c = 40", "thermal.rearm_temp_c", "below target_temp_c (40)"),
        ("[thermal]\nfan_min_pct = 80\nfan_max_pct = 70", "thermal.fan_max_pct", "at least"),
        ("[thermal]\nfan_max_pct = 10", "thermal.fan_max_pct", "at least fan_min_pct (20)"),
        ("[thermal]\nfan_min_pct = 100.5", "thermal.fan_min_pct", "[0, 100]"),
        ("[thermal]\nthrottle_min_pct = 90", "thermal.throttle_min_pct", "at most rearm_freq_pct"),
        ("[tuner]\nmin_mhz = 700", "tuner.min_mhz", "below max_mhz (650)"),
        ("[tuner]\nmin_mhz = 400\nmax_mhz = 400", "tuner.max_mhz", "above min_mhz (400)"),
        ("[tuner]\nmax_mhz = 90", "tuner.max_mhz", "above min_mhz (100)"),
        ("[tuner]\nvoltage_min_v = 10.5\nvoltage_max_v = 10", "tuner.voltage_max_v", "at least"),
        ("[guardian]\nresume_above_usd_day = 0", "guardian.resume_above_usd_day", "above"),
        ("[guardian]\npause_below_usd_day = 1", "guardian.pause_below_usd_day", "below"),
        (
            f'[api]\npassword = "{API_PASSWORD}"\npassword_enc = "{TOKEN}"',
            "api.password",
            "not both",
        ),
    ],
)
def test_cross_checks_name_the_key(text: str, path: str, fragment: str) -> None:
    errors = errors_of(text)
    assert any(e.startswith(f"{path}: ") and fragment in e for e in errors), errors
    assert not any(API_PASSWORD in e or TOKEN in e for e in errors)


def test_cross_checks_pass_at_their_edges() -> None:
    conf = C.loads(
        "[thermal]\nrearm_temp_c = 59.9\nfan_min_pct = 50\nfan_max_pct = 50\n"
        "throttle_min_pct = 80\nrearm_freq_pct = 80\n"
        "[tuner]\nvoltage_min_v = 10\nvoltage_max_v = 10\nmin_mhz = 50\nmax_mhz = 800\n"
        "[guardian]\npause_below_usd_day = 0.1\nresume_above_usd_day = 0.1000001"
    )
    from agent.control.thermal import ThermalOptions
    from agent.control.tuner import TunerOptions

    assert ThermalOptions.from_config(conf.thermal).fan_max_pct == 50
    assert TunerOptions.from_config(conf.tuner).max_mhz == 800


def test_all_new_errors_are_collected() -> None:
    text = ("[tuner]\nmin_mhz = 1\n[guardian]\nstale_policy = 1\n[api]\nread_allow = ['x']\n"
            "token = 'x'\n[thermal]\nkp = -1")  # fmt: skip
    paths = sorted(e.split(":")[0] for e in errors_of(text))
    assert paths == ["api.read_allow[0]", "api.token", "guardian.stale_policy", "thermal.kp",
                     "tuner.min_mhz"]  # fmt: skip


def test_environment_overrides_new_keys(tmp_path: Path) -> None:
    env = {
        "DOGE_AGENT__TUNER__MAX_MHZ": "500",
        "DOGE_AGENT__TUNER__ENABLED": "false",
        "DOGE_AGENT__TUNER__POWER_TARGET_W": "650.5",
        "DOGE_AGENT__THERMAL__REARM_TEMP_C": "40",
        "DOGE_AGENT__THERMAL__MAX_TRIPS": "7",
        "DOGE_AGENT__GUARDIAN__ENABLED": "true",
        "DOGE_AGENT__GUARDIAN__STALE_POLICY": "pause",
        "DOGE_AGENT__GUARDIAN__PRICE_URL": "http://10.0.0.2:8000/prices",
        "DOGE_AGENT__API__READ_ALLOW": '["10.0.0.0/8", "::1"]',
        "DOGE_AGENT__API__TOKEN": "1234567890123456",  # kept a string: digits only
        "DOGE_AGENT__API__USER": "admin",
        "DOGE_AGENT__API__PASSWORD_ENC": TOKEN,  # replaces the file's plain password
    }
    conf = C.load(write(tmp_path, FULL), env=env)
    tuner = conf.tuner
    assert (tuner.max_mhz, tuner.enabled, tuner.power_target_w) == (500, False, 650.5)
    assert (conf.thermal.rearm_temp_c, conf.thermal.max_trips) == (40, 7)
    assert (conf.guardian.enabled, conf.guardian.stale_policy) == (True, "pause")
    assert conf.guardian.price_url == "http://10.0.0.2:8000/prices"
    assert conf.api.read_allow == ("10.0.0.0/8", "::1")
    assert (conf.api.token, conf.api.user) == ("1234567890123456", "admin")
    assert (conf.api.password, conf.api.password_enc) == (None, TOKEN)
    conf = C.loads(GOOD, env={"DOGE_AGENT__API__PASSWORD": "1234"})
    assert conf.api.password == "1234"
    errors = errors_of("", {"DOGE_AGENT__TUNER__MIN_MHZ": "lots", "DOGE_AGENT__GUARDIAN__X": "1",
                            "DOGE_AGENT__API__WRITE_ALLOW": "10.0.0.0/8"})  # fmt: skip
    assert any(e.startswith("tuner.min_mhz:") and '"lots"' in e for e in errors), errors
    assert any(e.startswith("guardian.x: unknown key") for e in errors), errors
    assert any(e.startswith("api.write_allow: must be an array") for e in errors), errors


def test_api_and_guardian_secrets_never_appear_in_errors_or_repr() -> None:
    conf = C.loads(FULL)
    for shown in (repr(conf), str(conf), repr(conf.api), f"{conf.api}"):
        assert API_PASSWORD not in shown and API_TOKEN not in shown
        assert "password='***'" in shown and "token='***'" in shown
    enc = C.loads(f'[api]\npassword_enc = "{TOKEN}"').api
    assert TOKEN not in repr(enc) and "password_enc='***'" in repr(enc)
    assert "password=None" in repr(enc)  # unset is shown as unset
    url = C.loads('[guardian]\nprice_url = "https://me:' + SECRET + '@prices.example/p"').guardian
    assert url.price_url is not None and SECRET in url.price_url
    assert SECRET not in repr(url) and "***@prices.example" in repr(url)
    bad = [
        f'[api]\npassword = ["{API_PASSWORD}"]',
        f'[api]\npassword_enc = "{API_PASSWORD}"',
        f'[api]\ntoken = "{API_PASSWORD} has spaces"',
        f'[api]\ntoken = "{API_TOKEN}!"',
        f'[api]\npassword = "{API_PASSWORD}"\npassword_enc = "{TOKEN}"',
        f'[guardian]\nprice_url = "gopher://me:{SECRET}@h/"',
    ]
    for text in bad:
        errors = errors_of(text)
        assert errors, text
        assert not any(s in e for e in errors for s in (API_PASSWORD, API_TOKEN, TOKEN, SECRET))
    errors = errors_of("", {"DOGE_AGENT__API__TOKEN": API_PASSWORD + " x"})
    assert errors[0].startswith("api.token:") and API_PASSWORD not in errors[0]


def test_encrypted_pool_and_api_passwords_validate_and_resolve(tmp_path: Path) -> None:
    from agent.security.secrets import SecretBox, ensure_key, resolve_pool_passwords

    key = ensure_key(tmp_path)
    box = SecretBox(key)
    pool_enc, api_enc = box.encrypt(SECRET), box.encrypt(API_PASSWORD)
    text = (
        f'[agent]\nstate_dir = "{tmp_path}"\n[[pools]]\nurl = "stratum+tcp://a:1"\n'
        f'user = "u"\npassword_enc = "{pool_enc}"\n[api]\npassword_enc = "{api_enc}"\n'
    )
    conf = C.loads(text)
    assert conf.api.password_enc == api_enc and conf.api.password is None
    assert resolve_pool_passwords(conf, key) == [SECRET]
    assert box.decrypt(conf.api.password_enc) == API_PASSWORD
    assert api_enc not in repr(conf) and pool_enc not in repr(conf)


_NUMBERS = st.sampled_from([-1, 0, 0.01, 0.5, 0.96, 1, 9, 9.5, 10, 11, 12.5, 20, 45, 50, 59.9, 60,
                            75, 85, 100, 125, 650, 800, 1e6, True, False])  # fmt: skip
_OPTION_CLASSES = {
    "thermal": ("ThermalConfig", "agent.control.thermal", "ThermalOptions"),
    "tuner": ("TunerConfig", "agent.control.tuner", "TunerOptions"),
    "guardian": ("GuardianConfig", "agent.control.guardian", "GuardianOptions"),
}


@pytest.mark.parametrize("section", list(_OPTION_CLASSES))
@given(data=st.data())
def test_property_a_valid_config_always_builds_the_modules_options(
    section: str, data: st.DataObject
) -> None:
    import importlib

    config_name, module, options_name = _OPTION_CLASSES[section]
    names = [f.name for f in dataclasses.fields(getattr(C, config_name))]
    names = [n for n in names if n not in ("mode", "stale_policy", "currency", "price_url",
                                           "price_file")]  # fmt: skip
    table = data.draw(st.dictionaries(st.sampled_from(names), _NUMBERS, max_size=6))
    config, errors = C.validate({section: table})
    if config is None:
        assert errors and all(e.startswith(section + ".") for e in errors)
        return
    options = getattr(importlib.import_module(module), options_name)
    options.from_config(getattr(config, section))  # never raises on a valid config
