# Two commands for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# The locks: every package each test venv holds, at versions that were green (`make lock`
# rewrites them; a refresh is a commit of its own, after `make test-newest` passed).
LOCK        := constraints/lock.txt
LOWEST_LOCK := constraints/lowest-lock.txt
# The newest releases the bounds allow, on purpose and never in CI (`make test-newest`).
NEWEST_VENV ?= .venv-newest
NEWEST_PY   := $(NEWEST_VENV)/bin/python
# A second venv with the lowest versions pyproject.toml's bounds allow (constraints/lowest.txt).
LOWEST_VENV  ?= .venv-lowest
LOWEST_PY    := $(LOWEST_VENV)/bin/python
LOWEST_STAMP := $(LOWEST_VENV)/.installed-stamp
LOWEST_PYTEST_ARGS ?=
# What the lowest-versions run covers, chosen for the most version coverage in about 60 s (the
# whole step, venv included, about 90 s on 2 cores): the code that calls Celery, kombu,
# redis-py and httpx. direct_publish and fastpath compare our messages with apply_async's and
# check the fast paths' gates (the kombu/Celery range); transport, proxy, http_transport and
# client exercise httpx (respx) and its pools; store, hints, redis_cluster and durability the
# Lua scripts and redis-py (cluster included); lifecycle, reconcile, callback_args, asgi_body
# and init_celery a whole run through an in-process worker, Starlette and the user's own
# Celery app; processes real prefork workers, the receiver and the CLI (click, rich);
# crypto/signing/params/status cryptography and pydantic. Left out for time: ratelimit (40 s),
# callback_lease and event_batches (30-60 s each; on kombu < 5.7 both fail, see constraints/
# lowest.txt), faults (real workers killed), the framework adapters (no FastAPI: see there).
LOWEST_TESTS := \
	tests/test_direct_publish.py tests/test_fastpath.py tests/test_transport.py \
	tests/test_http_transport.py tests/test_proxy.py tests/test_client.py \
	tests/test_store.py tests/test_hints.py tests/test_redis_cluster.py tests/test_durability.py \
	tests/test_lifecycle.py tests/test_reconcile.py tests/test_callback_args.py \
	tests/test_asgi_body.py tests/test_init_celery.py tests/test_processes.py tests/test_cli.py \
	tests/test_crypto.py tests/test_signing.py tests/test_params.py tests/test_status.py

.PHONY: install install-lowest demo test test-lowest test-newest lock faults lint typecheck bench soak flower clean

# Rebuilt from nothing when the bounds or the lock change, so the venv holds the lock and nothing
# else; scripts/check_lock.py fails if a package is missing from the lock or off its pin.
$(STAMP): pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(LOCK) pip
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[dev]'
	$(PY) scripts/check_lock.py $(LOCK)
	touch $(STAMP)

install: $(STAMP)

# Rebuilt from nothing when the bounds or the pins change: no package left from older pins.
$(LOWEST_STAMP): pyproject.toml $(LOWEST_LOCK)
	rm -rf $(LOWEST_VENV)
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_PY) -m pip install --quiet -c $(LOWEST_LOCK) pip
	$(LOWEST_PY) -m pip install --quiet -c $(LOWEST_LOCK) \
		-e '.[receiver,simulator,cli,django,flask]' -r constraints/lowest-tools.in
	$(LOWEST_PY) scripts/check_lock.py $(LOWEST_LOCK)
	touch $(LOWEST_STAMP)

install-lowest: $(LOWEST_STAMP)

# Both locks from pyproject.toml's bounds: the newest releases they allow today (lock.txt), and the
# lowest (constraints/lowest.txt's pins, the rest resolved around them). uv is itself pinned.
# Needs no installed project (a dependency just added is not in the lock yet): only uv, pinned.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(LOCK) uv
	$(VENV)/bin/uv pip compile --quiet --upgrade --python-version 3.11 --universal \
		--no-emit-package nen-celery pyproject.toml --extra dev constraints/tools.in -o $(LOCK)
	$(VENV)/bin/uv pip compile --quiet --upgrade --python-version 3.11 --universal \
		--no-emit-package nen-celery pyproject.toml --extra receiver --extra simulator --extra cli \
		--extra django --extra flask constraints/lowest-tools.in constraints/tools.in \
		-c constraints/lowest.txt -o $(LOWEST_LOCK)

# The newest releases the bounds allow, in a venv of their own: lint, the type check and the whole
# suite. Run it before `make lock`; record its result in docs/operations.md (Supported versions).
test-newest:
	rm -rf $(NEWEST_VENV)
	$(PYTHON) -m venv $(NEWEST_VENV)
	$(NEWEST_PY) -m pip install --quiet --upgrade pip
	$(NEWEST_PY) -m pip install --quiet --upgrade -e '.[dev]'
	@$(NEWEST_PY) scripts/check_lock.py --versions
	$(NEWEST_VENV)/bin/ruff check src tests bench scripts
	$(NEWEST_VENV)/bin/lint-imports --no-cache
	$(NEWEST_VENV)/bin/mypy
	$(NEWEST_VENV)/bin/mypy bench --follow-imports=silent
	$(NEWEST_PY) scripts/with_redis.py $(NEWEST_PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/nen-celery demo

# Starts a throwaway redis-server when none answers at NEN_TEST_REDIS_URL (default DB 13 on :6379).
# test_redis_kill's machine-crash case runs on a Redis >= 8.0 (WAITAOF waits for the everysec
# fsync), built once per machine into ~/.cache/nen-celery (scripts/durable_redis.py, ~2 min); if
# it cannot be had today, that case skips and says why.
# Then the Celery/kombu/redis-py/httpx part again on the lowest versions allowed (test-lowest).
# Two test processes (pytest-xdist): most tests wait on real processes and deadlines, not on the
# CPU; each process has a redis-server of its own (tests/worker_redis.py), and tests that share
# RabbitMQ or fixed ports run in one (tests/conftest.py: MACHINE_WIDE, its own scheduler). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: install lint typecheck
	NEN_TEST_DURABLE_SERVER="$${NEN_TEST_DURABLE_SERVER:-$$($(PY) scripts/durable_redis.py)}" \
		$(PY) scripts/with_redis.py $(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory test-lowest

# Supported versions are tested, not hoped for: LOWEST_TESTS on constraints/lowest.txt.
test-lowest: install-lowest
	$(LOWEST_PY) scripts/with_redis.py $(LOWEST_PY) -m pytest -m "not slow" $(LOWEST_TESTS) $(LOWEST_PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/lint-imports --no-cache

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

# Not in CI: 5,000 runs, 2 workers killed every few seconds, every webhook delivered twice; then
# the run-state model (tests/test_model.py) on its long profile (10,000 histories, ~13 min).
soak: install
	$(PY) scripts/with_redis.py $(PY) bench/soak.py $(SOAK_ARGS)
	NEN_MODEL_PROFILE=soak $(PY) scripts/with_redis.py $(PY) -m pytest -s tests/test_model.py

# Flower on the configured broker (NEN_BROKER_URL / NEN_REDIS_URL), bound to localhost only.
flower: install
	$(VENV)/bin/celery -A nen_celery.worker flower --address=127.0.0.1 --port=5555

clean:
	rm -rf $(VENV) $(LOWEST_VENV) $(NEWEST_VENV) build dist *.egg-info
