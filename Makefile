# Two commands set everything up on a fresh machine:
#   make run    create .venv, install, start the engine (embedded PostgreSQL unless DATABASE_URL)
#   make test   create .venv with the dev extra, then ruff, mypy --strict, import-linter, pytest
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: run test lint typecheck imports pytest postgres-binaries nginx-binary chromium-binary clean

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

# uv installs in about 2 s what pip takes 17 s for here; it is itself installed from PyPI
# into .venv/tools (outside the engine's environment). Where uv cannot be had, pip does it.
UV := $(VENV)/tools/bin/uv
INSTALL = if [ -x $(UV) ]; then $(UV) pip install --quiet --python $(BIN)/python $(1); \
	else $(BIN)/python -m ensurepip --upgrade >/dev/null && $(BIN)/python -m pip install --quiet $(1); fi

$(VENV)/bin/python:
	$(PYTHON) -m venv --without-pip $(VENV)
	-$(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
	    --target $(VENV)/tools uv

$(STAMP_RUN): pyproject.toml $(VENV)/bin/python
	$(call INSTALL,-e .)
	touch $@

$(STAMP_DEV): pyproject.toml $(VENV)/bin/python
	$(call INSTALL,-e '.[dev]')
	touch $@ $(STAMP_RUN)

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
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
