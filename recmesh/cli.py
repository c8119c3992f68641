"""The `recmesh` command's library half: data, train, evaluate, publish, events (`up`, the local stack, is added
by devtools/cli.py, the console script).

Every command defaults to the built-in synthetic data set, so the whole thing runs with no download.

Exit codes: 0 done; 1 any runtime error (bad data, missing or corrupt bundle, Redis unreachable), reported as ONE
line ``recmesh <command>: error: <what, and what to do>`` on stderr; 2 a usage error (argparse); 130 Ctrl-C.
``--debug`` (or ``RECMESH_DEBUG=1``) shows the traceback too. Options whose value a service also reads take their
default from the same environment variable (``REDIS_URL``, ``RECMESH_MODELS_DIR``), so a k8s Job needs no shell
to pass them on::

    recmesh train --data sessions.csv          # writes $RECMESH_MODELS_DIR/<version>/ (default models/)
    recmesh publish                            # newest bundle there, into $REDIS_URL
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from importlib import metadata
from pathlib import Path
from typing import Any

from recmesh.catalog import commands as catalog_commands
from recmesh.data.load import SYNTH, load_dataset
from recmesh.experiments import commands as experiments_commands
from recmesh.index import BACKENDS

DESCRIPTION = "Train, evaluate and publish session recommenders (every command defaults to built-in synthetic data)."
EPILOG = "Exit status: 0 done, 1 runtime error (one line on stderr), 2 usage error, 130 interrupted."

# The variables the services read for the same settings (serving/settings.py, gateway/settings.py; a test checks
# the names match): one value configures the services and the command alike.
REDIS_URL_ENV = "REDIS_URL"
REDIS_CACHE_URL_ENV = "REDIS_CACHE_URL"
MODELS_DIR_ENV = "RECMESH_MODELS_DIR"
DEBUG_ENV = "RECMESH_DEBUG"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_MODELS_DIR = "models"

WORD2VEC_HELP = {
    "dim": "vector size",
    "window": "context window, in items on each side",
    "negative": "negative samples per positive",
    "ns_exponent": "exponent of the negative-sampling distribution (below 0 favours rare items)",
    "sample": "down-sampling threshold of frequent items",
    "epochs": "passes over the training sequences",
    "min_count": "items seen fewer times borrow their neighbours' vectors",
    "alpha": "initial learning rate",
    "seed": "random seed",
    "workers": "training threads (above 1, runs are not bit-for-bit repeatable)",
}

# Adds subcommands to the `recmesh` parser's subparsers (see devtools/cli.py).
Extension = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help, unless the help already states its default in words (options
    whose default is None say what omitting them means) or the option is a flag or required."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        nothing = default is None or default is False or default == [] or default == argparse.SUPPRESS
        if "default" in text or action.required or nothing:
            return text
        return super()._get_help_string(action)


def _env(name: str, fallback: str) -> str:
    return os.environ.get(name) or fallback


def _env_help(what: str, name: str, fallback: str) -> str:
    """'<what> (default: $NAME, else <fallback>)', saying the value when the variable is set."""
    value = os.environ.get(name)
    where = f"${name}, which is {_redacted(value)}" if value else f"${name} if set, else {fallback}"
    return f"{what} (default: {where})"


def _redacted(url: str) -> str:
    """`url` with its password, if any, replaced by ***: help text must not print a secret from the environment."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.password:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", default=SYNTH, help="a sessions file (docs/data.md), or 'synth[:items=N,users=N,seed=N]' for built-in"
    )
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "user_lines", "pairs", "csv"],
        help="file format; auto: .csv/.tsv are CSV, else 'user item ...' lines or 'user item' pairs, sniffed",
    )
    p.add_argument("--delimiter", default=None, help="CSV delimiter (default: sniffed from the header)")
    p.add_argument("--min-length", type=int, default=1, help="drop sequences shorter than this (counted)")


def _add_redis_url(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--redis-url",
        default=_env(REDIS_URL_ENV, DEFAULT_REDIS_URL),
        help=_env_help("Redis URL", REDIS_URL_ENV, DEFAULT_REDIS_URL),
    )


def cmd_data_synth(args: argparse.Namespace) -> int:
    from recmesh.catalog.files import write_items
    from recmesh.data.synth import generate, item_attributes, write_user_lines

    dataset = generate(n_items=args.items, n_users=args.users, seed=args.seed, progress=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_user_lines(dataset, args.out)
    items_path = items_file_of(Path(args.out))
    count = write_items(items_path, item_attributes(dataset))
    print(dataset.summary(), file=sys.stderr)
    print(f"items: {count:,} with their attributes in {items_path}", file=sys.stderr)
    print(args.out)
    return 0


def items_file_of(sessions_file: Path) -> Path:
    """Where `data synth` puts the items' attributes: next to the sessions, <stem>.items.jsonl."""
    return sessions_file.with_name(f"{sessions_file.stem}.items.jsonl")


def cmd_train(args: argparse.Namespace) -> int:
    from recmesh.catalog.files import read_catalog
    from recmesh.train.embeddings import Word2VecParams
    from recmesh.train.run import TrainParams, train_bundle

    catalog = read_catalog(args.items) if args.items else None  # a bad file fails in a second, before the data
    dataset = load_dataset(args.data, args.format, args.delimiter, args.min_length)
    w2v = Word2VecParams(**{f.name: getattr(args, f.name) for f in fields(Word2VecParams)})
    params = TrainParams(
        word2vec=w2v, index_backend=args.index, candidates=args.candidates, query_decay=args.query_decay
    )
    print(train_bundle(dataset, Path(args.out), params, progress=True, catalog=catalog))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from recmesh.bundle import MANIFEST, BundleError, list_versions, load_manifest
    from recmesh.evaluate.run import evaluate, format_table

    versions = list_versions(Path(args.bundle))
    if versions and not (Path(args.bundle) / MANIFEST).is_file():
        raise BundleError(
            f"{args.bundle} is a models directory: pass one of its bundles, e.g. --bundle "
            f"{Path(args.bundle) / versions[-1]}"
        )
    load_manifest(Path(args.bundle), verify=True)  # a bad bundle fails in a second, not after the data is read
    if args.sources is not None:
        from recmesh.sources.recipe import parse_recipe

        parse_recipe(args.sources)  # a bad recipe too
    dataset = load_dataset(args.data, args.format, args.delimiter, args.min_length)
    report = evaluate(
        Path(args.bundle), dataset, split_name=args.split, n_candidates=args.candidates, recipe=args.sources
    )
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from recmesh.bundle import resolve
    from recmesh.publish import publish

    path = Path(args.bundle) if args.bundle else resolve(Path(args.models_dir))
    print(publish(path, args.redis_url, cache_url=args.redis_cache_url or None))
    return 0


def cmd_events_export(args: argparse.Namespace) -> int:
    from recmesh.events_export import export_events

    summary = export_events(args.redis_url, args.out, args.format)
    print(summary, file=sys.stderr)
    print(summary.path)
    return 0


def build_parser(extensions: Sequence[Extension] = ()) -> argparse.ArgumentParser:
    """The parser of every library command; each extension adds its own subcommands."""
    from recmesh.train.embeddings import Word2VecParams
    from recmesh.train.run import TrainParams

    parser = argparse.ArgumentParser(prog="recmesh", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--debug", action="store_true", help=f"on an error, show the traceback too (also: {DEBUG_ENV}=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    data = sub.add_parser("data", help="data sets").add_subparsers(
        dest="data_command", required=True, metavar="<command>"
    )
    synth = data.add_parser(
        "synth", help="write the built-in synthetic sessions ('user item1 item2 ...') and the items' attributes"
    )
    synth.add_argument(
        "--out", required=True, help="sessions file to write; the items' attributes go next to it, <stem>.items.jsonl"
    )
    synth.add_argument("--items", type=int, default=5000, help="catalogue size")
    synth.add_argument("--users", type=int, default=20000, help="number of sessions")
    synth.add_argument("--seed", type=int, default=0, help="random seed")
    synth.set_defaults(func=cmd_data_synth)

    train = sub.add_parser("train", help="train word2vec + index + ranker into <models dir>/<version>/")
    _add_data_args(train)
    train.add_argument(
        "--items",
        default=None,
        help="items' attributes, JSON Lines or CSV with an item_id column, kept in the bundle as catalog.jsonl "
        "(default: none, or the synthetic attributes when --data is synth)",
    )
    train.add_argument(
        "--out",
        default=_env(MODELS_DIR_ENV, DEFAULT_MODELS_DIR),
        help=_env_help("models directory", MODELS_DIR_ENV, DEFAULT_MODELS_DIR),
    )
    train.add_argument("--index", default="scann", choices=BACKENDS, help="nearest-neighbour backend (docs/ann.md)")
    train.add_argument(
        "--candidates", type=int, default=TrainParams.candidates, help="candidates per request the ranker orders"
    )
    train.add_argument(
        "--query-decay",
        type=float,
        default=TrainParams.query_decay,
        help="recency decay of the session vector: item weight exp(-decay * age)",
    )
    for f in fields(Word2VecParams):
        train.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=type(f.default),
            default=f.default,
            help=f"word2vec: {WORD2VEC_HELP.get(f.name, f.name)}",
        )
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="leave-one-out full-ranking evaluation of a bundle (docs/evaluation.md)")
    ev.add_argument("--bundle", required=True, help="bundle directory (<models dir>/<version>)")
    _add_data_args(ev)
    ev.add_argument("--split", default="test", choices=["test", "valid"], help="which held-out targets to score")
    ev.add_argument(
        "--candidates", type=int, default=None, help="candidates per user (default: the bundle's own count)"
    )
    ev.add_argument(
        "--sources",
        default=None,
        help="candidate recipe of the pipeline, e.g. ann:100,covisit:100,popular:20 (default: the bundle's own)",
    )
    ev.add_argument("--json", default=None, help="also write the report here as JSON (default: no file)")
    ev.set_defaults(func=cmd_evaluate)

    pub = sub.add_parser("publish", help="load a bundle's vectors into Redis and flip the version pointer")
    pub.add_argument("bundle", nargs="?", default=None, help="bundle directory (default: newest in --models-dir)")
    pub.add_argument(
        "--models-dir",
        default=_env(MODELS_DIR_ENV, DEFAULT_MODELS_DIR),
        help=_env_help("where to find the newest bundle", MODELS_DIR_ENV, DEFAULT_MODELS_DIR),
    )
    _add_redis_url(pub)
    pub.add_argument(
        "--redis-cache-url",
        default=_env(REDIS_CACHE_URL_ENV, ""),
        help=_env_help("Redis for the vectors (the embedding store's cache)", REDIS_CACHE_URL_ENV, "--redis-url"),
    )
    pub.set_defaults(func=cmd_publish)

    events = sub.add_parser("events", help="visitors' recorded events")
    events_sub = events.add_subparsers(dest="events_command", required=True, metavar="<command>")
    export = events_sub.add_parser("export", help="write every visitor's events (oldest first) as a file `train` reads")
    _add_redis_url(export)
    export.add_argument("--out", required=True, help="events.csv (session_id,user_id,item_id,timestamp,event_type)")
    export.add_argument(
        "--format", default=None, choices=["csv", "jsonl"], help="default: jsonl if --out ends in .jsonl, else csv"
    )
    export.set_defaults(func=cmd_events_export)

    catalog_commands.add_parser(sub)
    experiments_commands.add_parser(sub)
    for extend in extensions:
        extend(sub)
    for p in parsers(parser):  # extensions' subcommands too
        p.formatter_class = HelpFormatter
    return parser


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """`parser` and every (sub)subcommand's parser under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                yield from parsers(child)


def _version() -> str:
    try:
        return metadata.version("recmesh")
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown (not installed)"


def command_name(args: argparse.Namespace) -> str:
    """'train', 'data synth', 'events export': the words the user typed to pick the command."""
    words = [args.command]
    for key in ("data_command", "events_command", "catalog_command", "experiments_command"):
        if getattr(args, key, None):
            words.append(getattr(args, key))
    return " ".join(words)


def explain(error: BaseException, args: argparse.Namespace) -> str:
    """One line: what went wrong and, where we know, what to do about it."""
    import redis

    from recmesh.bundle import BundleError
    from recmesh.publish import RedisUnavailable

    redis_url = getattr(args, "redis_url", None) or os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL
    if isinstance(error, redis.RedisError | RedisUnavailable):
        text = (
            f"{error}" if isinstance(error, RedisUnavailable) else f"Redis at {_without_password(redis_url)}: {error}"
        )
        text += f" (is Redis running there? point --redis-url or ${REDIS_URL_ENV} at it)"
    elif isinstance(error, BundleError):
        text = str(error)
        if "recmesh train" not in text and "--bundle" not in text:
            text += " (train a new one with `recmesh train`, or pick another bundle)"
    elif isinstance(error, FileNotFoundError | IsADirectoryError | NotADirectoryError | PermissionError):
        reason = {
            FileNotFoundError: "no such file or directory",
            IsADirectoryError: "is a directory, expected a file",
            NotADirectoryError: "a part of the path is not a directory",
            PermissionError: "permission denied",
        }[type(error)]
        text = f"{error.filename}: {reason}" if error.filename else str(error)
    elif isinstance(error, UnicodeDecodeError):  # raised without the file's name
        source = getattr(args, "data", None) or "the input"
        text = f"{source}: not UTF-8 text (byte {error.start}: {error.reason}); a compressed file? decompress it first"
    elif isinstance(error, SystemExit):  # SystemExit("message") raised by library code
        text = str(error.code)
    elif isinstance(error, ImportError):  # recmesh.extras.MissingExtra already names the extra to install
        text = str(error)
        if type(error) is ModuleNotFoundError:
            text += " (a dependency is missing: install the extras you need, see docs/install.md)"
    elif isinstance(error, MemoryError):
        text = "out of memory (try a smaller data set or fewer candidates)"
    elif isinstance(error, ValueError | OSError | TypeError | LookupError):
        text = str(error) or type(error).__name__
    else:
        text = f"unexpected {type(error).__name__}: {error} (rerun with --debug for the traceback)"
    return " ".join(text.split())  # one line, whatever the message held


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"


OUR_PACKAGES = r"(recmesh|serving|services|gateway|devtools|bench)(\.|$)"


def quiet_library_warnings() -> None:
    """Drop the deprecation notices libraries raise about themselves or their own dependencies (gensim, ScaNN,
    ...): a user cannot act on them. One attributed to our code (we call something deprecated) still shows: that
    one is ours to fix. --debug / RECMESH_DEBUG=1 shows everything."""
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=f"(?!{OUR_PACKAGES})")


def debug_requested(argv: Sequence[str] | None = None) -> bool:
    """--debug among the arguments, or RECMESH_DEBUG set to 1/true/yes/on."""
    arguments = sys.argv[1:] if argv is None else argv
    return "--debug" in arguments or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def main(argv: list[str] | None = None, extensions: Sequence[Extension] = ()) -> int:
    args = build_parser(extensions).parse_args(argv)  # usage errors: argparse prints usage and exits 2
    debug = bool(args.debug) or debug_requested([])
    name = command_name(args)
    with warnings.catch_warnings():  # restored on return: a test calling main() keeps its own filters
        if not debug:
            quiet_library_warnings()
        try:
            return int(args.func(args))
        except KeyboardInterrupt:
            print(f"\nrecmesh {name}: interrupted", file=sys.stderr)
            return 130
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                raise  # an explicit exit status: already reported
            return fail(name, e, args, debug)
        except Exception as e:
            return fail(name, e, args, debug)


def fail(name: str, error: BaseException, args: Any, debug: bool) -> int:
    """Report `error` as the one line (after its traceback when debugging); the exit status, 1."""
    if debug:
        traceback.print_exception(error, file=sys.stderr)
    print(f"{' '.join(('recmesh', name)).strip()}: error: {explain(error, args)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
