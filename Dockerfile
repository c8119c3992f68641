# syntax=docker/dockerfile:1
#
# One image for every recmesh process; the command picks the process:
#   python -m services.embedding_store | python -m services.candidate_generation | python -m services.ranking
#   python -m gateway | recmesh publish --models-dir /models --redis-url ...
# (`recmesh` is the console script devtools.cli:main; `python -m serving.healthcheck host:port` is the compose
# health check of the gRPC services.) Model bundles are never baked in: mount them at /models (RECMESH_MODELS_DIR).
# The runtime image carries what serving needs (`pip install .`); `recmesh train` runs in the train image, the
# same plus the `train` extra (gensim).
#
#   docker build -t recmesh:0.1.0 .                              # runtime image (default target)
#   docker build -t recmesh-train:0.1.0 --target train .         # + the train extra: recmesh train, then publish
#   docker build -t recmesh-loadtest:0.1.0 --target loadtest .   # + locust and bench/, for the load test
#
# Built for linux/amd64 (the ScaNN wheel is x86-64 only). Every dependency comes as a binary wheel, so no stage
# needs a compiler.

ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm

# ---- builder: a venv with recmesh, recmesh-client and the serving dependencies -----------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (their own layer, rebuilt only when pyproject.toml changes), read from pyproject.toml so
# the list lives in one place; recmesh-client is not on PyPI: it is installed from clients/python below.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(r for r in tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'] if not r.startswith('recmesh-client')))" \
        > /tmp/requirements.txt \
    && pip install --only-binary=:all: -r /tmp/requirements.txt
# Then the packages themselves, every one pyproject.toml installs, and recmesh-client, which holds the recmesh.v1
# stubs (committed, so no protoc step here; recmesh is a namespace package both fill). The smoke check imports
# what the image runs: each `python -m` entry point, the health check, the `recmesh` console script and the
# module `recmesh publish` loads. `-I` keeps /src off sys.path, so the check sees the installed packages, not the
# sources next to it.
COPY clients/python ./clients/python
COPY recmesh ./recmesh
COPY serving ./serving
COPY services ./services
COPY gateway ./gateway
COPY devtools ./devtools
RUN pip install --no-deps ./clients/python . \
    && python -I -c "import services.embedding_store.__main__, services.candidate_generation.__main__, \
        services.ranking.__main__, gateway.__main__, serving.healthcheck, devtools.cli, recmesh.publish"

# ---- train-venv: the builder's venv plus the `train` extra (gensim) -----------------------------------------
FROM builder AS train-venv
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['train']))" \
        > /tmp/requirements-train.txt \
    && pip install --only-binary=:all: -r /tmp/requirements-train.txt \
    && python -I -c "import recmesh.train.run, recmesh.publish, gensim.models, devtools.cli, gateway.auth"

# ---- loadtest-venv: the builder's venv plus locust (the `bench` extra's locust packages only) ----------------
FROM builder AS loadtest-venv
RUN python -c "import tomllib; print('\n'.join(r for r in tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['bench'] if r.startswith('locust')))" \
        > /tmp/requirements-bench.txt \
    && pip install --only-binary=:all: -r /tmp/requirements-bench.txt

# ---- base: what the final images share ----------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it and volumes can be chowned to it.
RUN groupadd --system --gid 10001 recmesh \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin recmesh \
    && mkdir -p /models \
    && chown 10001:10001 /models
# /models is owned by the app user so that a fresh named volume mounted there (compose) is writable by the
# train job; serving containers mount it read-only. The root filesystem is read-only at run time: only /tmp
# (a tmpfs / emptyDir) and /models are writable, hence no bytecode writes.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RECMESH_MODELS_DIR=/models
WORKDIR /app

# ---- loadtest: `locust -f bench/locustfile.py --headless ...` against the gateway ----------------------------
FROM base AS loadtest
COPY --from=loadtest-venv /opt/venv /opt/venv
COPY bench ./bench
USER 10001:10001
CMD ["locust", "-f", "bench/locustfile.py", "--headless", "--host", "http://gateway:8080"]

# ---- train: `recmesh train --out /models`, then `recmesh publish ...` (the train-publish job) -----------------
FROM base AS train
COPY --from=train-venv /opt/venv /opt/venv
USER 10001:10001
CMD ["recmesh", "train", "--out", "/models"]

# ---- runtime (default target) -------------------------------------------------------------------------------
FROM base AS runtime
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
# gateway: 8080 (REST/JSON, /metrics, /healthz, /readyz) and 50050 (gRPC); embedding-store 50051, candidate-
# generation 50052, ranking 50053 (gRPC); their Prometheus metrics 9101, 9102, 9103.
EXPOSE 8080 50050 50051 50052 50053 9101 9102 9103
# No fixed ENTRYPOINT: the command selects the process (one image, six roles; see the header). Python runs as
# PID 1 and the servers handle SIGTERM themselves (NOT_SERVING, drain, stop with a 5 s grace).
CMD ["python", "-m", "gateway"]
