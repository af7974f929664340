# Every target creates .venv and installs when needed, and brings the services up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SERVICES := $(PY) scripts/services
WITH_SERVICES = eval "$$($(SERVICES) env)" &&

.PHONY: demo test lint services services-down bench bench-parallel chaos clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
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

bench: services
	@set -e; for script in bench/*.py; do \
		echo "== $$script"; $(WITH_SERVICES) $(PY) $$script; \
	done

# A parallel group of three remote steps against the same steps in sequence (p50, p95, ratio).
bench-parallel: services
	$(WITH_SERVICES) $(PY) bench/parallel.py $(ARGS)

# Its own Postgres and Kafka (it stops and kills them), never the test suite's: not part of `test`.
chaos: $(VENV)/.installed
	$(PY) -m chaos $(ARGS)

clean: services-down
	rm -rf .cache $(VENV)
