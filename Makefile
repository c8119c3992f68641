# Common tasks. `make up` and `make test` work on a fresh machine: they create .venv and install first.
VENV ?= .venv
PY := $(VENV)/bin/python
RUFF_EXCLUDE = --extend-exclude 'clients/python/src/recmesh/v1/*_pb2*'
NODE_CLIENT := clients/node
BUF := $(NODE_CLIENT)/node_modules/.bin/buf
# `make buf` checks protos/ for breaking changes against this commit's: by default the one before HEAD (in CI's
# fresh clone, main as it was before its last commit).
BUF_AGAINST_REF ?= HEAD~1

.PHONY: install node-install up test protos protos-check config-docs buf lint bench bench-deploy

# recmesh-client (clients/python: the recmesh.v1 stubs) in the same pip command: recmesh depends on it and it is
# not on PyPI.
$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	@command -v redis-server >/dev/null || { echo "redis-server missing: installing (Debian/Ubuntu)"; \
		(apt-get update -qq && apt-get install -y -qq redis-server) || \
		{ echo "install redis-server yourself (apt-get install redis-server / brew install redis)"; exit 1; }; }
	python3.11 -m venv $(VENV) 2>/dev/null || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ./clients/python -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# grpc-js, proto-loader and buf, pinned by clients/node/package-lock.json (needs node and npm)
$(NODE_CLIENT)/node_modules/.installed: $(NODE_CLIENT)/package-lock.json
	cd $(NODE_CLIENT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

node-install: $(NODE_CLIENT)/node_modules/.installed

# The whole stack on the built-in synthetic data: trains a demo bundle if none, starts a private Redis,
# the three services and the gateway on :8080 (REST) and :50050 (gRPC). Ctrl-C stops everything.
up: install
	$(VENV)/bin/recmesh up

# The test suite (starts its own Redis and services on free ports).
test: install
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory node-install; \
	else echo "npm not found: the grpc-js client and buf tests will be skipped"; fi
	$(PY) -m pytest -q

protos: install
	$(PY) -m devtools.protos

protos-check: install
	$(PY) -m devtools.protos --check

# docs/configuration.md from the settings classes (checked by the tests and by `make lint`)
config-docs: install
	$(PY) -m devtools.config_docs

# buf lint (STANDARD, exceptions explained in protos/buf.yaml) and buf breaking (FILE) against BUF_AGAINST_REF;
# a clone without that commit (depth 1) skips the breaking check and says so.
buf: node-install
	$(BUF) lint protos
	@if git rev-parse -q --verify '$(BUF_AGAINST_REF)^{commit}' >/dev/null && \
		git cat-file -e '$(BUF_AGAINST_REF):protos/recmesh/v1' 2>/dev/null; then \
		echo "$(BUF) breaking protos --against '.git#ref=$(BUF_AGAINST_REF),subdir=protos'"; \
		$(BUF) breaking protos --against '.git#ref=$(BUF_AGAINST_REF),subdir=protos'; \
	else \
		echo "buf breaking: skipped, no $(BUF_AGAINST_REF) with protos/ in this clone (a shallow clone?)"; \
	fi

lint: install
	$(VENV)/bin/ruff check $(RUFF_EXCLUDE) .
	$(VENV)/bin/ruff format --check $(RUFF_EXCLUDE) .
	$(VENV)/bin/mypy recmesh serving services gateway devtools clients/python/src/recmesh_client
	$(PY) -m devtools.config_docs --check

bench: install
	$(PY) -m bench.serve

# Replica scaling (1 vs 3 CPU-limited replicas per stage, kills under load; needs root for cgroups) and memory
# per catalogue size: the figures of docs/deploy.md. About 25 minutes on 2 cores.
bench-deploy: install
	$(PY) -m bench.scaling --json docs/deploy/scaling.json
	$(PY) -m bench.footprint --json docs/deploy/footprint.json
