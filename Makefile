# Two commands set everything up on a fresh machine:
#   make run    create .venv, install, start the engine (embedded PostgreSQL unless DATABASE_URL)
#   make test   create .venv with the dev extra, then ruff, mypy --strict, import-linter, pytest
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev

# test-floors: see below (CI runs it after `make test`).
.PHONY: test-floors test-fast test-engine run test lint typecheck imports pytest postgres-binaries nginx-binary chromium-binary clean

run: $(STAMP_RUN) postgres-binaries
	$(BIN)/afterhours serve

test: $(STAMP_DEV) postgres-binaries nginx-binary chromium-binary lint typecheck imports pytest

lint: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP_DEV)
	$(BIN)/mypy

imports: $(STAMP_DEV)
	$(BIN)/lint-imports

pytest: $(STAMP_DEV)
	$(BIN)/pytest

# The suite's two halves (tests/conftest.py marks them): the fast one (pure functions,
# Trio's mock clock, in-process sockets; about 20 s here) and the one that needs
# PostgreSQL or starts processes. `make test` runs both, with the checks.
test-fast: $(STAMP_DEV) lint typecheck imports
	$(BIN)/pytest -m "not slow and not engine"

test-engine: $(STAMP_DEV) postgres-binaries nginx-binary chromium-binary
	$(BIN)/pytest -m "not slow and engine"

# The environment is the one uv.lock pins (exported to a requirements file with hashes,
# then installed; the project itself editable, without its dependencies). uv installs in
# about 2 s what pip takes 17 s for here; it is itself installed from PyPI into
# .venv/tools (outside the engine's environment). `--locked` stops with a clear message
# when pyproject.toml changed and uv.lock was not regenerated (`uv lock`). Where uv cannot
# be had, pip installs from pyproject.toml's ranges instead, unpinned, and says so.
UV := $(VENV)/tools/bin/uv
INSTALL = if [ -x $(UV) ]; then \
	    $(UV) export --quiet --locked --no-emit-project $(2) -o $(VENV)/requirements$(3).txt \
	    && $(UV) pip install --quiet --python $(BIN)/python -r $(VENV)/requirements$(3).txt \
	    && $(UV) pip install --quiet --python $(BIN)/python --no-deps -e .; \
	else echo "uv not available: installing with pip from pyproject.toml's ranges (not the lock)" >&2; \
	    $(BIN)/python -m ensurepip --upgrade >/dev/null && $(BIN)/python -m pip install --quiet $(1); fi

$(VENV)/bin/python:
	$(PYTHON) -m venv --without-pip $(VENV)
	-$(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
	    --target $(VENV)/tools uv

$(STAMP_RUN): pyproject.toml uv.lock $(VENV)/bin/python
	$(call INSTALL,-e .,,-run)
	touch $@

$(STAMP_DEV): pyproject.toml uv.lock $(VENV)/bin/python
	$(call INSTALL,-e '.[dev]',--extra dev,-dev)
	touch $@ $(STAMP_RUN)

# The lowest version of every direct dependency pyproject.toml admits (uv's
# lowest-direct resolution), in a venv of its own, through the tests that exercise each
# library: a floor that is too low fails here rather than on an operator's machine.
FLOORS := .venv-floors
# openai + pydantic; twilio; websockets; asyncpg + trio-asyncio; hypercorn + httpx; msgspec;
# trio under all of them, through whole calls.
FLOOR_TESTS := tests/test_realtime_codec.py tests/test_twilio_signature.py \
	tests/test_twilio_webhooks.py tests/test_ws.py tests/test_ws_tls.py tests/test_store_actor.py \
	tests/test_analytics.py tests/test_api_health.py tests/test_functions.py \
	tests/test_twilio_codec.py tests/test_call_e2e.py tests/test_ready_poller.py
test-floors: $(VENV)/bin/python
	rm -rf $(FLOORS)
	$(UV) venv --quiet --python $(PYTHON) $(FLOORS)
	$(UV) pip install --quiet --python $(FLOORS)/bin/python --resolution lowest-direct -e '.[dev]'
	$(FLOORS)/bin/python -m pytest -q -p no:randomly $(FLOOR_TESTS)

# tests/test_nginx.py runs the documented nginx configuration in front of the engine.
nginx-binary:
	@if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	    echo "installing nginx for the reverse-proxy test (apt-get install nginx-light)"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get install -y -qq nginx-light >/dev/null 2>&1 \
	    || { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nginx-light; }; \
	else \
	    echo "nginx not found and no apt-get: tests/test_nginx.py will be skipped" >&2; \
	fi

# tests/test_dashboard.py drives Debian's Chromium (Playwright never downloads a browser).
chromium-binary:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Chromium for the dashboard test (apt-get install chromium)"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
	    || { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; }; \
	else \
	    echo "chromium not found and no apt-get: tests/test_dashboard.py will be skipped" >&2; \
	fi

# The embedded PostgreSQL runs the machine's server binaries; install them when missing
# (Debian/Ubuntu). With DATABASE_URL set they are not needed.
postgres-binaries:
	@if [ -n "$$DATABASE_URL" ] || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 \
	    || command -v postgres >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	    echo "installing PostgreSQL server binaries (apt-get install postgresql)"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql; \
	else \
	    echo "PostgreSQL server binaries not found: install PostgreSQL, or set DATABASE_URL" >&2; exit 1; \
	fi

clean:
	rm -rf $(VENV) $(FLOORS) .mypy_cache .ruff_cache .pytest_cache
