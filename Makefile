# Two commands on a fresh machine:
#   make studio   - create .venv, install, start the studio (embedded worker, SQLite, no services)
#   make test     - create .venv, install test tools (and Debian's chromium), start Redis and
#                   PostgreSQL if they are down, run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARGS   ?=

.PHONY: studio test test-all bench venv venv-dev

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.runtime
venv-dev: $(VENV)/.dev

studio: venv
	$(PY) app.py $(ARGS)

test: venv-dev
	bash scripts/test-deps.sh
	$(PY) -m pytest $(ARGS)

# everything, the slow suites included (CI runs this)
test-all: venv-dev
	bash scripts/test-deps.sh
	$(PY) -m pytest -m "" $(ARGS)

bench: venv
	$(PY) bench/flops.py
	$(PY) bench/speed.py
