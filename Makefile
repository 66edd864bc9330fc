# Every target creates and reuses .venv and builds what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
EXT    := agent/_scrypt$(shell $(PYTHON) -c "import sysconfig;print(sysconfig.get_config_var('EXT_SUFFIX'))")
CSRC   := $(wildcard cext/*.c cext/*.h)

.PHONY: all venv build test lint demo bench fuzz clean soak

all: build

$(VENV)/.stamp: setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test,bench]'
	touch $@

venv: $(VENV)/.stamp

$(EXT): $(VENV)/.stamp $(CSRC) setup.py
	$(PY) setup.py -q build_ext --inplace

build: $(EXT)

lint: build
	$(VENV)/bin/ruff check agent tests bench tools

test: build lint
	$(PY) -m pytest -q -ra tests

# the agent on the emulated L3+ against the local pool; DEMO_SECONDS=0 runs until Ctrl-C
DEMO_SECONDS ?= 120
demo: build
	$(PY) -m agent demo --seconds $(DEMO_SECONDS)

bench: build
	$(PY) bench/run.py

# the fuzz campaign: every property test over outside input with FUZZ_EXAMPLES cases (default
# 20000, scaled per target) and atheris on the byte-level parsers; the record is bench/fuzz.json
fuzz: build
	-$(PIP) install -q atheris
	$(PY) bench/fuzz_report.py

soak: build
	$(PY) bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf build *.egg-info agent/_scrypt*.so bench/out

cross: ; bash tools/cross-armhf.sh
