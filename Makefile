# Common tasks. Run inside the venv: `. .venv/bin/activate`.
PYTHON ?= python

.PHONY: protos protos-check lint test bench

# Regenerate recmesh/v1 stubs from protos/recmesh/v1/*.proto.
protos:
	$(PYTHON) -m recmesh.protos

# Fail if the committed stubs are out of date.
protos-check:
	$(PYTHON) -m recmesh.protos --check

# Generated stubs are not linted (pyproject's exclude covers *_pb2*.py; this also covers the .pyi stubs).
RUFF_EXCLUDE = --extend-exclude 'recmesh/v1/*_pb2*'

lint:
	ruff check $(RUFF_EXCLUDE) .
	ruff format --check $(RUFF_EXCLUDE) .
	mypy recmesh services gateway

test:
	pytest -q

# Placeholder: bench.serve (the serving load test) is not written yet.
bench:
	$(PYTHON) -m bench.serve
