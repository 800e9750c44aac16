# Two commands for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/nen-celery demo

# Starts a throwaway redis-server when none answers at NEN_TEST_REDIS_URL (default DB 13 on :6379).
test: install lint typecheck
	$(PY) scripts/with_redis.py $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests bench scripts

typecheck: install
	$(VENV)/bin/mypy

bench: install
	$(PY) scripts/with_redis.py $(PY) bench/run.py

clean:
	rm -rf $(VENV) build dist *.egg-info
