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
