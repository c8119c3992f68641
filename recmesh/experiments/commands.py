"""`recmesh experiments`: start, stop, list and show the A/B experiments of the store (``recmesh:experiments``).

Every change reads the stored document, checks the changed one whole (recmesh.experiments.config) and writes it
with the version counter + 1, in one optimistic transaction (WATCH / MULTI): two commands racing never lose an
edit. The gateways pick the new document up within a second. Exit status: 0 done, 2 bad input (the file, a rule
broken, an unknown name), 1 Redis unreachable or its document unreadable; either way ONE line on stderr.

Usage::

    recmesh experiments start ranker-test.json     # {"name": ..., "unit": "visitor", "variants": [...]}
    recmesh experiments list
    recmesh experiments show ranker-test           # the stored experiment as JSON
    recmesh experiments stop ranker-test           # nobody assigned any more; its counts stay for the report
    recmesh experiments report ranker-test         # recmesh/experiments/report.py

Hooked into the `recmesh` parser by recmesh/cli.py (``add_parser(subparsers)``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import redis

from recmesh.bundle import list_versions
from recmesh.cli_redis import EXIT_BAD_INPUT, EXIT_REDIS, add_redis_url, fail, redis_client, redis_problem
from recmesh.experiments.config import (
    ExperimentConfig,
    ExperimentConfigError,
    ExperimentSet,
    now_iso,
    parse_config,
    start_experiment,
    stop_experiment,
    validate,
)
from recmesh.redis_layout import EXPERIMENTS_KEY

MODELS_DIR_ENV = "RECMESH_MODELS_DIR"
DEFAULT_MODELS_DIR = "models"
WRITE_ATTEMPTS = 10  # optimistic transaction retries while another writer changes the document
REPORT_MODULE = "recmesh.experiments.report"  # adds `report` (add_report_parser(subparsers)) when installed

GROUP = "recmesh experiments "  # + the command: how error lines name it


class StoredConfigError(RuntimeError):
    """The document in Redis does not validate (written by hand?): nothing is changed."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `experiments start|stop|list|show` (and `report`, from REPORT_MODULE) to the `recmesh` subparsers."""
    experiments = subparsers.add_parser("experiments", help="A/B experiments: start, stop, list, show, report")
    sub = experiments.add_subparsers(dest="experiments_command", required=True, metavar="<command>")

    start = sub.add_parser("start", help="validate an experiment file and start it (at most one runs at a time)")
    start.add_argument("file", help="the experiment as JSON: name, unit (visitor or session), variants, description")
    add_redis_url(start)
    start.add_argument(
        "--models-dir",
        default=os.environ.get(MODELS_DIR_ENV) or DEFAULT_MODELS_DIR,
        help=f"the bundles a variant's model_version may name (default: ${MODELS_DIR_ENV} if set, else "
        f"{DEFAULT_MODELS_DIR})",
    )
    start.set_defaults(func=cmd_start)

    stop = sub.add_parser("stop", help="stop a running experiment (its counts are kept for the report)")
    stop.add_argument("name", metavar="NAME", help="the experiment's name")
    add_redis_url(stop)
    stop.set_defaults(func=cmd_stop)

    listing = sub.add_parser("list", help="every experiment, running or stopped, with its variants and shares")
    add_redis_url(listing)
    listing.set_defaults(func=cmd_list)

    show = sub.add_parser("show", help="print one stored experiment as JSON")
    show.add_argument("name", metavar="NAME", help="the experiment's name")
    add_redis_url(show)
    show.set_defaults(func=cmd_show)

    try:
        report = importlib.import_module(REPORT_MODULE)
    except ModuleNotFoundError as e:
        if e.name != REPORT_MODULE:
            raise
    else:
        report.add_report_parser(sub)


def cmd_start(args: argparse.Namespace) -> int:
    try:
        item = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except OSError as e:
        return fail(GROUP + "start", f"{args.file}: {e.strerror or e}", EXIT_BAD_INPUT)
    except (ValueError, UnicodeDecodeError) as e:
        return fail(GROUP + "start", f"{args.file}: not JSON: {e}", EXIT_BAD_INPUT)
    available = set(list_versions(Path(args.models_dir)))

    def change(current: ExperimentSet) -> ExperimentSet:
        try:
            return start_experiment(current, item, now_iso(), available)
        except ExperimentConfigError as e:
            if "model_version" in str(e):
                raise ExperimentConfigError(f"{e} (bundles of {args.models_dir}: set --models-dir)") from e
            raise

    status, written = _write("start", args.redis_url, change, args.file)
    if written is None:
        return status
    experiment = written.running
    assert experiment is not None  # start_experiment made it the running one
    print(f"started experiment {experiment.name} ({_variants(experiment)}); configuration version {written.version}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    status, written = _write("stop", args.redis_url, lambda current: stop_experiment(current, args.name, now_iso()))
    if written is None:
        return status
    print(
        f"stopped experiment {args.name}; configuration version {written.version} "
        f"(counts kept: `recmesh experiments report {args.name}`)"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    status, config = _read_only("list", args.redis_url)
    if config is None:
        return status
    if not config.experiments:
        print(f"no experiments (configuration version {config.version})")
        return 0
    rows = [("NAME", "STATUS", "UNIT", "STARTED", "STOPPED", "VARIANTS")]
    for e in config.experiments:
        rows.append((e.name, e.status, e.unit, e.started_at or "-", e.stopped_at or "-", _variants(e)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    status, config = _read_only("show", args.redis_url)
    if config is None:
        return status
    experiment = config.find(args.name)
    if experiment is None:
        known = ", ".join(e.name for e in config.experiments) or "none"
        return fail(GROUP + "show", f"no experiment named {args.name!r} (experiments: {known})", EXIT_BAD_INPUT)
    print(json.dumps(experiment.to_json(), indent=2, ensure_ascii=False))
    return 0


def _variants(experiment: ExperimentConfig) -> str:
    return ", ".join(f"{v.name} {v.share} %" + (" (holdout)" if v.holdout else "") for v in experiment.variants)


def read_config(client: redis.Redis) -> ExperimentSet:
    """The stored document (empty if there is none); StoredConfigError if it does not validate."""
    raw = client.get(EXPERIMENTS_KEY)
    if raw is None:
        return ExperimentSet()
    try:
        return parse_config(raw)
    except ExperimentConfigError as e:
        raise StoredConfigError(
            f"the stored configuration ({EXPERIMENTS_KEY}) is invalid, nothing changed: {e} "
            f"(fix the key by hand, or delete it to start over)"
        ) from e


def _write(
    command: str, url: str, change: Callable[[ExperimentSet], ExperimentSet], source: str = ""
) -> tuple[int, ExperimentSet | None]:
    """Apply ``change`` to the stored document atomically: (0, the new document) or (exit status, None)."""
    try:
        client = redis_client(url)
    except ValueError as e:
        return fail(GROUP + command, f"bad --redis-url: {e}", EXIT_BAD_INPUT), None
    try:
        with client.pipeline() as pipe:
            for _ in range(WRITE_ATTEMPTS):
                try:
                    pipe.watch(EXPERIMENTS_KEY)
                    new = change(read_config(pipe))  # a watching pipeline reads at once
                    validate(new.to_json())  # what is written parses back to the same document
                    pipe.multi()
                    pipe.set(EXPERIMENTS_KEY, new.dumps())
                    pipe.execute()
                    return 0, new
                except redis.WatchError:
                    continue  # another writer changed it meanwhile: read again
        return fail(GROUP + command, "the configuration kept changing while writing: try again", EXIT_REDIS), None
    except ExperimentConfigError as e:
        where = f"{source}: " if source else ""
        return fail(GROUP + command, f"{where}{e}", EXIT_BAD_INPUT), None
    except StoredConfigError as e:
        return fail(GROUP + command, str(e), EXIT_REDIS), None
    except redis.RedisError as e:
        return fail(GROUP + command, redis_problem(url, e), EXIT_REDIS), None
    finally:
        client.close()


def _read_only(command: str, url: str) -> tuple[int, ExperimentSet | None]:
    try:
        client = redis_client(url)
    except ValueError as e:
        return fail(GROUP + command, f"bad --redis-url: {e}", EXIT_BAD_INPUT), None
    try:
        return 0, read_config(client)
    except StoredConfigError as e:
        return fail(GROUP + command, str(e), EXIT_REDIS), None
    except redis.RedisError as e:
        return fail(GROUP + command, redis_problem(url, e), EXIT_REDIS), None
    finally:
        client.close()
