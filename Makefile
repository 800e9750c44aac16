# Two commands for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test faults lint typecheck bench soak flower clean

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

# The package (strict), and the benchmarks, which CI never runs: a broken one would otherwise
# only show at the next `make bench` (imports followed silently: tests/ is not checked here).
typecheck: install
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy bench --follow-imports=silent

# The fault-injection suite alone (it is part of `make test` too).
faults: install
	$(PY) scripts/with_redis.py $(PY) -m pytest -m faults $(PYTEST_ARGS)

# Benchmarks against bare Celery / bare Starlette (needs wrk); appends to bench/results.md.
bench: install
	$(PY) -m pip install --quiet -e '.[bench]'
	@command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null) || echo "wrk not installed: the receiver benchmark will fail (apt-get install wrk)"
	$(PY) scripts/with_redis.py $(PY) bench/run.py $(BENCH_ARGS)

# Not in CI: 5,000 runs, 2 workers killed every few seconds, every webhook delivered twice.
soak: install
	$(PY) scripts/with_redis.py $(PY) bench/soak.py $(SOAK_ARGS)

# Flower on the configured broker (NEN_BROKER_URL / NEN_REDIS_URL), bound to localhost only.
flower: install
	$(VENV)/bin/celery -A nen_celery.worker flower --address=127.0.0.1 --port=5555

clean:
	rm -rf $(VENV) build dist *.egg-info
