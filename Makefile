# Common tasks. `make up` and `make test` work on a fresh machine: they create .venv and install first.
VENV ?= .venv
PY := $(VENV)/bin/python
RUFF_EXCLUDE = --extend-exclude 'recmesh/v1/*_pb2*'

.PHONY: install up test protos protos-check lint bench bench-deploy

$(VENV)/.installed: pyproject.toml
	@command -v redis-server >/dev/null || { echo "redis-server missing: installing (Debian/Ubuntu)"; \
		(apt-get update -qq && apt-get install -y -qq redis-server) || \
		{ echo "install redis-server yourself (apt-get install redis-server / brew install redis)"; exit 1; }; }
	python3.11 -m venv $(VENV) 2>/dev/null || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The whole stack on the built-in synthetic data: trains a demo bundle if none, starts a private Redis,
# the three services and the gateway on :8080 (REST) and :50050 (gRPC). Ctrl-C stops everything.
up: install
	$(VENV)/bin/recmesh up

# The test suite (starts its own Redis and services on free ports).
test: install
	$(PY) -m pytest -q

protos: install
	$(PY) -m devtools.protos

protos-check: install
	$(PY) -m devtools.protos --check

lint: install
	$(VENV)/bin/ruff check $(RUFF_EXCLUDE) .
	$(VENV)/bin/ruff format --check $(RUFF_EXCLUDE) .
	$(VENV)/bin/mypy recmesh serving services gateway devtools

bench: install
	$(PY) -m bench.serve

# Replica scaling (1 vs 3 CPU-limited replicas per stage, kills under load; needs root for cgroups) and memory
# per catalogue size: the figures of docs/deploy.md. About 25 minutes on 2 cores.
bench-deploy: install
	$(PY) -m bench.scaling --json docs/deploy/scaling.json
	$(PY) -m bench.footprint --json docs/deploy/footprint.json
