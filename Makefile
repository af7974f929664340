# Every target creates .venv and installs when needed, and brings the services up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SERVICES := $(PY) scripts/services
WITH_SERVICES = eval "$$($(SERVICES) env)" &&

.PHONY: demo test lint services services-down bench bench-parallel bench-peers chaos clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The peers of bench/peers.py (dbos, eventsourcing): into .venv, since they change none of the
# versions our own dependencies resolve to; never part of `test` or `lint`.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

services: $(VENV)/.installed
	$(SERVICES) up

services-down:
	$(SERVICES) down

demo: services
	$(WITH_SERVICES) $(PY) -m examples.orders.demo $(ARGS)

test: services
	$(WITH_SERVICES) $(PY) -m pytest --durations=15 $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-logo

# Every benchmark script, peers.py too: the `bench` extra is installed rather than the peers skipped.
# bench/_*.py are the scripts' modules (bench/_peers_dbos.py is a process that peers.py starts).
bench: services $(VENV)/.bench-installed
	@set -e; for script in bench/[!_]*.py; do \
		echo "== $$script"; $(WITH_SERVICES) $(PY) $$script; \
	done

# A parallel group of three remote steps against the same steps in sequence (p50, p95, ratio).
bench-parallel: services
	$(WITH_SERVICES) $(PY) bench/parallel.py $(ARGS)

# DBOS Transact and the eventsourcing library side by side with ours, same server, same run.
bench-peers: services $(VENV)/.bench-installed
	$(WITH_SERVICES) $(PY) bench/peers.py $(ARGS)

# Its own Postgres and Kafka (it stops and kills them), never the test suite's: not part of `test`.
chaos: $(VENV)/.installed
	$(PY) -m chaos $(ARGS)

clean: services-down
	rm -rf .cache $(VENV)
