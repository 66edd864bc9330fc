"""Every default value of the agent, in one place, with its unit in the name.

Other modules import from here; config.py fills unset keys from these values."""

from __future__ import annotations

# [agent]
ENVIRONMENT = "production"
ENVIRONMENTS = ("development", "staging", "production")
STATE_DIR = "/var/lib/doge-agent"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_LEVEL = "info"

# [[pools]]
POOL_PRIORITY = 0
POOL_SCHEMES = ("stratum+tcp", "stratum+ssl")
POOL_PASSWORD = "x"  # what pools conventionally accept when no password is set

# [board]
BOARD_KINDS = ("l3plus", "emulated", "cpu", "remote")
BOARD_KIND = "emulated"
CHAINS = 4
CHIPS_PER_CHAIN = 72
MAX_CHAINS = 16
MAX_CHIPS_PER_CHAIN = 256
CPU_THREADS = 1
MAX_CPU_THREADS = 256
# A real BM1485 answers every nonce whose hash meets difficulty 256 (ticket mask 0xFF).
BM1485_TICKET_DIFFICULTY = 256.0
# Emulated and CPU boards use a far easier ticket so a CPU finds nonces every second or so.
TICKET_DIFFICULTY = 1 / 1024
MAX_TICKET_DIFFICULTY = float(1 << 32)
# The CPU board scans this many nonces per scan() call: small enough that stop() and clean work
# take effect within a few ms, large enough to keep the C core's lanes full.
CPU_CHUNK_NONCES = 256
# Nonce space of one work; each CPU thread gets a disjoint stride of it.
NONCE_SPACE = 1 << 32

# [thermal]
THERMAL_MODES = ("air", "immersion")
THERMAL_MODE = "air"
TARGET_TEMP_C = 60.0
HOT_TEMP_C = 75.0
DANGEROUS_TEMP_C = 85.0
MIN_TEMP_C = 0.0
MAX_TEMP_C = 125.0

# [api]
HTTP_LISTEN = "127.0.0.1:8080"
CGMINER_LISTEN = "127.0.0.1:4028"

# Environment variables that override config keys: DOGE_AGENT__SECTION__KEY.
ENV_PREFIX = "DOGE_AGENT__"

# state.py: the hashrate estimate is a moving window over this many seconds.
HASHRATE_WINDOW_S = 60.0

# demo: how long the CPU board runs, and an easier ticket so a slow CPU still finds some nonces.
DEMO_SECONDS = 10.0
DEMO_TICKET_DIFFICULTY = 1 / 16  # one nonce per 4096 hashes: a few per second per thread

# run: how often the status line is logged
STATUS_LOG_INTERVAL_S = 30.0

# stratum ---------------------------------------------------------------------------------------
# (stratum/protocol.py, stratum/client.py, stratum/pools.py)
# A real pool line is a few KiB at most (a notify with a long merkle branch); anything past this
# is hostile or broken and the connection is dropped.
STRATUM_MAX_LINE_BYTES = 64 * 1024
STRATUM_MAX_MERKLE_BRANCH = 64  # 2**64 transactions: more is not a real block
STRATUM_MAX_EXTRANONCE1_BYTES = 32
STRATUM_MIN_EXTRANONCE2_SIZE = 1
STRATUM_MAX_EXTRANONCE2_SIZE = 16
STRATUM_MAX_JOB_ID_CHARS = 128
STRATUM_INITIAL_DIFFICULTY = 1.0  # used until the pool's first set_difficulty
STRATUM_CONNECT_TIMEOUT_S = 5.0
STRATUM_REQUEST_TIMEOUT_S = 10.0  # subscribe / authorize replies
STRATUM_SUBMIT_TIMEOUT_S = 10.0
STRATUM_IDLE_TIMEOUT_S = 180.0  # no byte at all from the pool for this long: the link is dead
# TCP keepalive probes: a pool host that vanishes without a FIN is noticed in ~30 s
STRATUM_KEEPALIVE_IDLE_S = 15
STRATUM_KEEPALIVE_INTERVAL_S = 5
STRATUM_KEEPALIVE_COUNT = 3
STRATUM_LINE_TIMEOUT_S = 10.0  # a line started but not finished within this: a stalled peer
STRATUM_MAX_BAD_LINES = 20  # malformed lines tolerated within STRATUM_BAD_WINDOW_S
STRATUM_BAD_WINDOW_S = 60.0
STRATUM_LATENCY_ALPHA = 0.2  # weight of the newest sample in the moving latency
STRATUM_EXTRANONCE_SUBSCRIBE = True
STRATUM_ALLOW_REDIRECT = False  # client.reconnect to another host is refused unless allowed
STRATUM_MAX_RECONNECT_WAIT_S = 300.0
# pools.py
POOL_BACKOFF_BASE_S = 0.5
POOL_BACKOFF_CAP_S = 60.0
POOL_BACKOFF_JITTER = 0.25  # each delay is scaled by a random factor in [1 - jitter, 1]
POOL_CIRCUIT_FAILURES = 3  # consecutive failed connects before the circuit opens
POOL_STABILITY_S = 30.0  # a higher-priority pool must stay alive this long before fail-back
POOL_MAX_QUEUED_SHARES = 1024  # per pool, while it is down; beyond this shares are counted lost
POOL_QUEUED_SHARE_MAX_AGE_S = 120.0  # a queued share older than this is counted lost


# ---------------------------------------------------------------------------- board peripherals
# PIC, sensors, fans, GPIO and LEDs (agent/hardware/{pic,sensors,fans,gpio,leds,board}.py).
# Facts from reference/chips-bm1485.md §3; timings the stock driver uses unless said otherwise.

PIC_FIRMWARE_VERSION = 0x03  # the only PIC firmware the L3+ driver knows
PIC_HEARTBEAT_S = 10.0  # the stock driver sends 0x16 every 10 s per chain
PIC_STEP_DELAY_S = 0.002  # pause between single-byte writes (stock hosts pause 0.2-500 ms)
PIC_RESET_WAIT_S = 1.0  # after reset (0x07) and after jump-to-app (0x06)
PIC_DCDC_SETTLE_S = 5.0  # after enabling DC-DC, before the ASIC reset
PIC_TIMEOUT_S = 2.0  # one whole PIC command, pauses included
PIC_RETRIES = 3  # attempts per command before it is reported failed
PIC_DEAD_AFTER_FAILURES = 3  # consecutive failed health checks -> the PIC is "not answering"
PIC_VOLTAGE_CODE_DEFAULT = 0x80  # about 10 V [3P]
PIC_VOLTAGE_CODE_MAX = 0xFE
PIC_VOLTAGE_AT_DEFAULT_V = 10.0
PIC_VOLTAGE_SPAN_V = 1.0  # code 0x00 -> about +1 V, code 0xFE -> about -1 V [3P]

ASIC_RESET_PULSE_S = 0.5  # reset line low 500 ms, then high, twice, then wait 500 ms
ASIC_RESET_PULSES = 2

SENSOR_MIN_PLAUSIBLE_C = -40.0  # TMP75 / TMP451 rated range; anything outside is a bad read
SENSOR_MAX_PLAUSIBLE_C = 125.0
TMP75_RESOLUTION_BITS = 12  # configured at open: 0.0625 °C (power-up is 9-bit)

FAN_SAMPLE_S = 1.0  # the stock driver samples tach once per second
FAN_PULSES_PER_REV = 2
FAN_RPM_CAP = 6600  # the stock driver caps readings here (a glitch above is not a fan)
FAN_DEAD_GRACE_S = 10.0  # 0 rpm at non-zero duty this long -> dead (stock: >10 failing checks)
# an unchanged duty is written again after this long (undoes a PWM reset under us); the thermal
# loop sets it every second, and each write opens the sysfs file anew
FAN_PWM_REWRITE_S = 30.0
FAN_BOOT_DUTY_PCT = 100.0  # boot sequence step 1: fans 100 % until temperatures are known

LED_SLOW_PERIOD_S = 2.0  # stock status loop toggles once per second
LED_FAST_PERIOD_S = 0.4
LED_HEARTBEAT_PERIOD_S = 1.4  # two short pulses, then a pause (like the kernel trigger)
LED_HEARTBEAT_PULSE_S = 0.1
LED_LOCATE_PERIOD_S = 0.2  # very fast: "find me in the rack"

# BM1485 chains (agent/hardware/chain.py; shared/reference/chips-bm1485.md §1)
BM1485_BAUD = 115200
BM1485_FREQUENCY_MHZ = 384.0  # L3+ nameplate: 504 MH/s for 4 x 72 chips
BM1485_TICKET_MASK = 0xFF  # chips report nonces of difficulty 256
BM1485_SENSOR_CHIPS = (0x0C, 0xC9)  # chip addresses whose I2C master reaches a TMP451 (L3+)
BM1485_COMMAND_GAP_S = 0.01  # between paced boot commands (addresses, core clock enables)
BM1485_INACTIVE_WAIT_S = 0.03  # after chain inactive, before addressing
BM1485_COUNT_WINDOW_S = 2.0  # chip counting: how long to collect CHIP_ADDR replies
BM1485_COUNT_RETRIES = 6  # re-checks of a chain short of chips before mining with what answered
BM1485_REPLY_TIMEOUT_S = 0.5  # one addressed register read
# HASHRATE broadcast read (per-chip rate, lost chips after BM1485_MISSED_POLLS_LOST polls). Stock
# polls every 1 s; every poll brings 72 replies per chain to decode, which on the L3+'s 1 GHz
# Cortex-A8 is CPU taken from mining for a figure that changes slowly: every 2 s (lost in 6 s).
BM1485_HASHRATE_POLL_S = 2.0
POLL_STAGGER_CHAINS = 4  # chains spread their HASHRATE polls over the poll period
BM1485_TEMP_POLL_S = 10.0
# While a HASHRATE poll's replies stream in (72 frames: 44 ms at 115,200 baud) the chain does
# not read its port at every few bytes the UART hands over (56-59 reads a poll): it reads what
# came first, then the rest once the line time has passed, and slices of at least this long if
# replies still come. Each wake-up of the loop cost 40-260 us of CPU here, far more than decoding
# the frames it brought. A nonce that arrives meanwhile waits at most the poll's line time.
BM1485_BURST_READ_S = 0.010
BM1485_BURST_SLACK_S = 0.020  # the chips' reply latency on top of the line time
BM1485_MISSED_POLLS_LOST = 3  # a chip missing this many HASHRATE polls in a row has dropped off
# one address answering a HASHRATE poll this many times: the chips were reset (all at address 0)
BM1485_RESET_ECHOES = 3
# nonces remembered per chain to catch one sent twice (about 2 minutes of an L3+ chain; a chip
# repeats within seconds); forgotten at every clean job
BM1485_DUP_WINDOW = 1024
# each chain's nonces are hashed on the C core's own threads (agent.hardware.verifier): one per
# chain is far more than a real chain needs (31 nonces/s per board, 0.2 ms each)
CHAIN_VERIFY_THREADS = 1
CHAIN_VERIFY_DRAIN_S = 0.5  # at stop, nonces still being verified are waited for this long
# A verified nonce that is no share (nearly all of them) wakes the loop on its own only after
# this long; the chain takes results whenever it reads its port, which at 7.5 nonces/s a chain is
# sooner. A share (its hash meets its work's target) wakes it at once. Each wake-up costs more
# CPU here than the hash; the nonce counters lag by this much at most.
CHAIN_VERIFY_LAZY_S = 0.5
BM1485_SILENCE_S = 5.0  # no byte at all for this long: the chain is reset and booted again
BM1485_REBOOT_BACKOFF_S = 5.0  # between failed re-inits of a silent chain
BM1485_LIVE_WORKS = 16  # non-clean work keeps this many older works valid
BM1485_CALIBRATION_ROUNDS = 10
BM1485_SENSOR_OFFSET_C = -40  # TMP451 remote offset written before calibrating (0xD8)
EMULATED_TICKET_DIFFICULTY = 1 / 1024  # what an emulated chip's ticket mask 0xFF means

# ---------------------------------------------------------------------------- mining service
# Work ids: a BM1485 carries 7 bits of work id; the CPU board can have more ids in flight.
CHIP_WORK_IDS = 128
CPU_WORK_IDS = 1 << 16
# At shutdown, how long to wait for shares in flight to be verified and answered by the pool.
SHUTDOWN_SHARE_WAIT_S = 5.0

# ---------------------------------------------------------------------------- web surface
# agent/api/httpserver.py: limits every HTTP listener applies to every client (issue 9, item 2)
HTTP_MAX_REQUEST_LINE_BYTES = 4096  # longer -> 414
HTTP_MAX_HEADER_BYTES = 16384  # all header lines together; more -> 431
HTTP_MAX_HEADERS = 64  # header lines; more -> 431
HTTP_MAX_BODY_BYTES = 65536  # declared Content-Length above this -> 413, body never read
HTTP_REQUEST_TIMEOUT_S = 10.0  # whole request (line, headers, body) must arrive within this -> 408
HTTP_KEEPALIVE_IDLE_S = 15.0  # idle keep-alive connection closed after this
HTTP_KEEPALIVE_MAX_REQUESTS = 100  # requests on one connection, then Connection: close
HTTP_MAX_CONNECTIONS = 64  # open connections at once; more -> 503 and close
HTTP_HANDLER_TIMEOUT_S = 30.0  # one handler (a control action included) -> 503
HTTP_WRITE_TIMEOUT_S = 10.0  # a client that does not read its answer is dropped
HTTP_RATE_PER_S = 20.0  # per-client token bucket: sustained requests per second
HTTP_RATE_BURST = 40  # per-client token bucket: burst
HTTP_RATE_MAX_CLIENTS = 1024  # clients tracked by the rate limiter (oldest forgotten)
# agent/api/http.py: status page and its JSON/metrics/control endpoints
WEB_LISTEN = "127.0.0.1:8080"
WEB_READ_ALLOW = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
WEB_WRITE_ALLOW = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
WEB_LOGIN_MAX_FAILURES = 5  # failed logins from one address before it is locked out -> 429
WEB_LOGIN_LOCKOUT_S = 300.0
WEB_REFRESH_S = 3.0  # the status page polls /api/status this often
WEB_EVENTS_KEPT = 50  # recent events in the snapshot (state.py)
WEB_HEALTH_HOT_C = 75.0  # /api/health: a chain above this is "degraded"

# ---------------------------------------------------------------------------- control loops
# agent/control/{thermal,tuner,guardian}.py. Thresholds from reference §3-4 and peers.md §3.
# thermal
THERMAL_INTERVAL_S = 1.0  # control tick (BOS 5 s, ESP-Miner 100 ms)
THERMAL_REARM_TEMP_C = 50.0  # a tripped chain may retry only below this ...
THERMAL_COOLDOWN_S = 60.0  # ... and not before this long after the trip (ESP-Miner: 30 s, 45 °C)
THERMAL_MAX_TRIPS = 3  # trips of one chain before it stays off until restart
THERMAL_REARM_FREQ_PCT = 80.0  # a re-armed chain restarts at this share of its tuned clock
THERMAL_THROTTLE_STEP_PCT = 10.0  # per step while hot
THERMAL_THROTTLE_MIN_PCT = 40.0
THERMAL_THROTTLE_INTERVAL_S = 10.0  # between throttle steps (either way)
THERMAL_UNTHROTTLE_MARGIN_C = 5.0  # step back up only below hot - margin
THERMAL_SENSOR_LOST_S = 120.0  # a chain with no valid reading this long is powered off
THERMAL_MAX_JUMP_C = 20.0  # between two samples of one sensor: a glitch, not physics
THERMAL_SENTINELS_C = (0.0, 255.0, 127.0, -128.0)  # no-reading values seen from sensors/PICs
THERMAL_FAN_MIN_PCT = 20.0  # stock minimum PWM
THERMAL_FAN_MAX_PCT = 100.0
THERMAL_PID_KP = 4.0  # fan % per °C above target
THERMAL_PID_KI = 0.1  # fan % per °C·s
THERMAL_PID_KD = 4.0  # fan % per °C/s (on the measurement)
THERMAL_PID_BIAS_PCT = 50.0
# tuner
# Off until the clock-gating data byte (reference: CORE_CMD_IN, value not documented) has been
# checked on real BM1485 silicon: a wrong guess could gate every core of a real board.
TUNER_ENABLED = False
TUNER_INTERVAL_S = 60.0
TUNER_MIN_MHZ = 100.0  # PLL table range (reference §1.1)
TUNER_MAX_MHZ = 650.0
TUNER_STEP_MHZ = 12.5
TUNER_HW_BUDGET = 0.01  # HW errors / all nonces, per chip
TUNER_CONFIDENCE = 0.95  # one-sided, for the bound on each chip's HW-error rate
TUNER_MIN_SAMPLES = 50  # nonces (good + bad) before any verdict on a chip
TUNER_UNPROVEN_SAMPLES_X = 20  # x min_samples: not shown within budget by then -> step down
TUNER_LOW_RATE_FRACTION = 0.5  # good nonces surely below this share of the model: failing
TUNER_FAIL_STRIKES = 3  # bad verdicts at the minimum clock before a chip is clock-gated
TUNER_CORE_FRACTION = 0.2  # a core surely below this share of the chip's mean core: gated
TUNER_VOLTAGE_MIN_V = 9.0  # PIC code 0xFE is about 9 V, 0x00 about 11 V (reference §3.3)
TUNER_VOLTAGE_MAX_V = 11.0
TUNER_VOLTAGE_STEP_V = 0.1  # LuxOS profiles step 0.1 V
TUNER_RETUNE_DELTA_C = 10.0  # temperature shift since tuning that starts a re-tune
TUNER_PROFILE_FILE = "tuner-profile.json"
# guardian
GUARDIAN_INTERVAL_S = 60.0
GUARDIAN_PAUSE_BELOW_USD_DAY = 0.0  # pause when profit falls below this ...
GUARDIAN_RESUME_ABOVE_USD_DAY = 0.25  # ... resume only above this (hysteresis)
GUARDIAN_MIN_DWELL_S = 1800.0  # never change state sooner than this after the last change
GUARDIAN_PRICE_MAX_AGE_S = 6 * 3600.0
GUARDIAN_STALE_POLICIES = ("keep_mining", "pause", "last_known")
GUARDIAN_STALE_POLICY = "keep_mining"
GUARDIAN_REFRESH_S = 900.0
GUARDIAN_FETCH_TIMEOUT_S = 10.0
GUARDIAN_PRICE_FILE = "prices.json"
GUARDIAN_MAX_PRICE_BYTES = 64 * 1024
GUARDIAN_ELECTRICITY_USD_KWH = 0.10
GUARDIAN_LTC_REWARD = 6.25  # LTC per block since the 2023 halving
GUARDIAN_DOGE_REWARD = 10000.0  # DOGE per block, fixed
GUARDIAN_MERGED_MINING = True  # DOGE auxpow alongside LTC
GUARDIAN_LTC_DIFFICULTY = 30_000_000.0  # cache fallback until a notify gives nBits
GUARDIAN_DOGE_DIFFICULTY = 20_000_000.0
GUARDIAN_WATTS_DEFAULT = 800.0  # L3+ at the wall when nothing is measured

# ---------------------------------------------------------------------------- fleet APIs
# agent/api/cgminer.py: the cgminer-compatible API (shared/reference/pyasic-compat.md §8)
CGMINER_MODEL = "Antminer L3+"  # VERSION Type: pyasic picks BMMinerL3Plus (4 x 72 chips, 2 fans)
CGMINER_MAX_REQUEST_BYTES = 8192  # cgminer reads one TMPBUFSIZ; more -> Invalid JSON / command
CGMINER_READ_TIMEOUT_S = 5.0  # the whole request must arrive within this (empty probes closed)
CGMINER_HANDLER_TIMEOUT_S = 30.0  # one privileged action (pool change, restart...)
CGMINER_WRITE_TIMEOUT_S = 10.0  # a client that does not read its reply is dropped
CGMINER_MAX_CONNECTIONS = 32  # open connections at once; more are closed at once
CGMINER_READ_ALLOW = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
CGMINER_WRITE_ALLOW = ("127.0.0.0/8", "::1/128")  # cgminer's default: privileged from localhost
# agent/api/stock_cgi.py: stock Antminer CGI pages for fleet tools (pyasic's AntminerOld web API)
STOCK_CGI_REALM = "antMiner Configuration"  # realm="antMiner... also marks us as Antminer
STOCK_CGI_USER = "root"
STOCK_CGI_MINER_TYPE = "Antminer L3+"  # get_system_info.cgi minertype
STOCK_CGI_LOCATE_S: float | None = None  # blink.cgi startBlink: until stopBlink (None = no limit)
HTTP_MAX_CONNECTIONS_PER_IP = 16  # open connections from one address; more -> 503 and close

# mining / local pool
# work.py: work ids a chain of BM1485 chips can carry (a 7-bit field), and the CPU board's.
CHIP_WORK_IDS = 128
CPU_WORK_IDS = 4096
# work.py: 0 = every work uses the job's ntime; otherwise roll it with the clock up to this bound.
NTIME_ROLL_S = 0
# emulator/pool.py: the demo's local Stratum pool (always 127.0.0.1).
POOL_PORT = 3333
POOL_EXTRANONCE1_SIZE = 4
POOL_EXTRANONCE2_SIZE = 4
POOL_DIFFICULTY = 1 / 1024  # a few shares a second from one CPU thread
POOL_JOB_INTERVAL_S = 30.0  # random mode: a non-clean notify this often
POOL_VARDIFF_TARGET_INTERVAL_S = 5.0  # vardiff aims at one share per connection this often
POOL_NODE_POLL_S = 0.5  # node mode: how often the tip is polled (getbestblockhash)

# `doge-agent run`: threads of the event loop's default executor (share re-checks, state
# writes, config reads); the L3+ controller has one core, a build machine two
AGENT_EXECUTOR_THREADS = 2

# ---------------------------------------------------------------------------- emulated board
EMULATOR_AMBIENT_C = 25.0
# how often the emulated board moves its thermal model and syncs power and clocks
EMULATOR_TICK_S = 0.1
# where a running agent keeps the emulated board's sysfs folder (under state_dir)
EMULATOR_DIR = "emulated-board"
# `doge-agent emulate --root DIR`: the emulator in its own process describes itself in
# DIR/EMULATOR_FILE and answers I2C and fault-injection requests on DIR/EMULATOR_SOCKET
EMULATOR_FILE = "emulator.json"
EMULATOR_SOCKET = "link.sock"
EMULATOR_LINK_TIMEOUT_S = 2.0  # one I2C transaction or control request over the link
EMULATOR_LINK_MAX_CLIENTS = 8
EMULATOR_SWITCH_INTERVAL_S = 0.0005  # the emulator process's GIL switch interval (default 5 ms)
EMULATOR_LINK_MAX_LINE_BYTES = 64 * 1024  # one request or reply line over the link
# recent chain events kept for the status page
RECENT_EVENTS = 50
# how often chain and fan readings are copied into the snapshot (and the watchdog at most)
PUBLISH_INTERVAL_S = 1.0
# at shutdown, how long a listening surface may take to close its connections
SURFACE_STOP_S = 5.0
# demo (agent/demo.py): ports tried first on 127.0.0.1 (a free one if taken), the local pool's
# share difficulty, the CPU board's ticket, and how often a status line is printed
DEMO_HTTP_PORT = 8080
DEMO_CGMINER_PORT = 4028
DEMO_POOL_DIFFICULTY = 1 / 256
DEMO_CPU_TICKET_DIFFICULTY = 1 / 256
DEMO_STATUS_S = 5.0

# ---------------------------------------------------------------------------- logs and alerts
# [logging]: the JSON log file (relative to state_dir unless absolute), rotated by size
LOG_FILE = "agent.log"
LOG_MAX_BYTES = 5 * 1024 * 1024
LOG_MIN_MAX_BYTES = 1024
LOG_BACKUPS = 5
LOG_MAX_BACKUPS = 100
LOG_CONSOLE_MODES = ("human", "json", "off")
LOG_CONSOLE = "human"
# [alerts]: a command or an HTTP POST for critical events, once per onset
ALERT_MIN_INTERVAL_S = 60.0  # the same alert never fires more often than this
ALERT_REMINDER_S = 0.0  # > 0: fire again while the condition lasts, this often
ALERT_TIMEOUT_S = 10.0  # a command or POST that takes longer is abandoned
ALERT_QUEUE_SIZE = 32  # alerts waiting for delivery; the oldest is dropped beyond this
# the maintenance CLI (doge-agent status, pools): the local API when no config says otherwise
CLI_URL = "http://127.0.0.1:8080"
CLI_TIMEOUT_S = 5.0

# ------------------------------------------------------------ persistence, reload, supervision
# the cumulative counters in <state_dir>/counters.json: saved this often, at pause and at stop
STATE_SAVE_INTERVAL_S = 10.0
COUNTERS_FILE = "counters.json"
# the config file (and its overlay) is polled this often for a change (mtime, size, sha256)
CONFIG_POLL_INTERVAL_S = 1.0
# a dead background task (hashing unit, thermal loop, pool task) is restarted after a backoff
# doubling from MIN to MAX; more than MAX_FAILURES deaths of one task within WINDOW exit the agent
SUPERVISE_BACKOFF_MIN_S = 0.5
SUPERVISE_BACKOFF_MAX_S = 30.0
SUPERVISE_MAX_FAILURES = 5
SUPERVISE_WINDOW_S = 300.0
# a dead unit still not running this long after its planned restart stops the watchdog pings
SUPERVISE_GRACE_S = 10.0
# the guardian's nominal hashrate before one is measured: a CPU board times this many scan
# batches at start (a few ms); a BM1485 does 504 MH/s / (288 chips x 384.375 MHz) per clock
NOMINAL_TIMING_BATCHES = 4
BM1485_HASHES_PER_CLOCK = 504e6 / (288 * 384.375e6)
