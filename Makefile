# The two commands a new user needs: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out
STAMP  := $(VENV)/.installed

.PHONY: setup mosquitto plugin-headers prometheus ha-venv test-ha test-prometheus demo test test-fast newcomer lint typecheck unit bench bench-codec bench-transport bench-chooser bench-live clean

setup: $(STAMP) mosquitto plugin-headers prometheus

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,samples,bench,broker]'
	touch $(STAMP)

# The embedded broker needs the mosquitto binary; install it where we can (Debian/Ubuntu).
mosquitto:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || [ -x /usr/local/sbin/mosquitto ]; then \
		true; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq mosquitto; \
	else \
		echo "mosquitto not found: install it (apt-get install mosquitto / brew install mosquitto / dnf install mosquitto)"; exit 1; \
	fi

# `broker init --require-client-certs` compiles a small Mosquitto plugin (broker/plugins/cert_login.c)
# that refuses a login presented with another login's certificate: it needs a C compiler and
# Mosquitto's and OpenSSL's headers. Without them such profiles fall back and say so.
plugin-headers:
	@if command -v cc >/dev/null 2>&1 && [ -f /usr/include/mosquitto_broker.h ] && [ -f /usr/include/mosquitto.h ] && [ -f /usr/include/openssl/x509.h ]; then \
		true; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		{ $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends gcc libc6-dev mosquitto-dev libmosquitto-dev libssl-dev; } \
			|| echo "the certificate-login plugin's headers could not be installed: client-certificate profiles fall back"; \
	else \
		echo "no C compiler or Mosquitto headers: client-certificate profiles fall back (see broker/cert_login.py)"; \
	fi

# The Prometheus stage (tests/integrations/test_prometheus_real.py) runs Debian's prometheus and
# promtool. Installed where apt exists; elsewhere those tests skip and say why.
prometheus:
	@if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then \
		true; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		{ $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus; } \
			|| echo "prometheus could not be installed: the Prometheus tests will skip"; \
	else \
		echo "prometheus not found: the Prometheus tests will skip (apt-get install prometheus)"; \
	fi

# The real Home Assistant stage: HA 2025.4.4 in its own venv (Python >= 3.13, built once under
# HA_VENV, ~3 min and ~820 MB), started headless against real brokers, workers and devices.
HA_VENV ?= $(HOME)/.cache/splitmq/ha-venv

ha-venv:
	@HA_VENV=$(HA_VENV) .ci/ha-venv >/dev/null

test-ha: setup ha-venv
	SPLITMQ_HA_VENV=$(HA_VENV) $(BIN)/pytest -q tests/system/test_homeassistant_real.py

# The real Prometheus stage (prometheus + promtool from the distribution; under 2 minutes).
test-prometheus: setup
	$(BIN)/pytest -q tests/system/test_prometheus_real.py

demo: setup
	$(BIN)/splitmq demo --devices 2 --requests 20

# A newcomer's first hour from a fresh clone of what is committed (its own venv: minutes, so
# not part of `make test`): make demo, a hand deployment from the example configs, a TLS site
# from `broker init` with monitor and exporter, Ctrl-C on every command. One line per step.
newcomer:
	bash scripts/newcomer.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest

test: lint typecheck unit

# Unit tests only (no broker, no process, no model profiling): under a minute, for the edit loop.
test-fast: setup
	$(BIN)/pytest -q -m "not integration and not slow"

bench: bench-codec bench-transport bench-chooser bench-live

bench-codec: setup
	@mkdir -p $(OUT)
	$(BIN)/splitmq bench codec --json $(OUT)/bench-codec.json

bench-transport: setup
	@mkdir -p $(OUT)
	$(BIN)/splitmq bench transport --json $(OUT)/bench-transport.json

# Real cellular traces live beside the project (../shared/traces); point TRACES elsewhere if not.
TRACES ?= $(wildcard ../shared/traces/*.up)

bench-chooser: setup
	@test -n "$(TRACES)" || { echo "no traces: set TRACES='a.up b.up' (mahimahi uplink traces)"; exit 1; }
	@mkdir -p $(OUT)/plots
	$(BIN)/splitmq bench chooser $(addprefix --trace ,$(TRACES)) --json $(OUT)/bench-chooser.json --plots $(OUT)/plots

clean:
	rm -rf $(VENV) $(OUT) .mypy_cache .ruff_cache .pytest_cache

LIVE_TRACE ?= ../shared/traces/TMobile-LTE-short.up

# The live system through a trace against the simulator, dynamic policy and a fixed split 0.
bench-live: setup
	@test -f "$(LIVE_TRACE)" || { echo "no trace: set LIVE_TRACE=path/to/trace.up"; exit 1; }
	@mkdir -p $(OUT)
	$(BIN)/splitmq bench live --trace $(LIVE_TRACE) --policy dynamic --requests 150 --json $(OUT)/bench-live-dynamic.json
	$(BIN)/splitmq bench live --trace $(LIVE_TRACE) --split 0 --requests 150 --json $(OUT)/bench-live-fixed0.json
