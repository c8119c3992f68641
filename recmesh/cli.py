"""The `recmesh` command's library half: data, train, evaluate, publish, events (`up`, the local stack, is added
by devtools/cli.py, the console script).

Every command defaults to the built-in synthetic data set, so the whole thing runs with no download.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

from recmesh.data.load import SYNTH, load_dataset

DESCRIPTION = "Train, evaluate and publish session recommenders (every command defaults to built-in synthetic data)."

# Adds subcommands to the `recmesh` parser's subparsers (see devtools/cli.py).
Extension = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=SYNTH, help="a sessions file, or 'synth[:items=N,users=N,seed=N]' (default)")
    p.add_argument("--format", default="auto", choices=["auto", "user_lines", "pairs", "csv"])
    p.add_argument("--delimiter", default=None, help="CSV delimiter (sniffed when omitted)")
    p.add_argument("--min-length", type=int, default=1, help="drop shorter sequences (counted)")


def cmd_data_synth(args: argparse.Namespace) -> int:
    from recmesh.data.synth import generate, write_user_lines

    dataset = generate(n_items=args.items, n_users=args.users, seed=args.seed, progress=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_user_lines(dataset, args.out)
    print(dataset.summary(), file=sys.stderr)
    print(args.out)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from recmesh.train.embeddings import Word2VecParams
    from recmesh.train.run import TrainParams, train_bundle

    dataset = load_dataset(args.data, args.format, args.delimiter, args.min_length)
    w2v = Word2VecParams(
        **{f.name: getattr(args, f.name) for f in fields(Word2VecParams) if getattr(args, f.name, None) is not None}
    )
    params = TrainParams(
        word2vec=w2v,
        index_backend=args.index,
        candidates=args.candidates,
        query_decay=args.query_decay if args.query_decay is not None else TrainParams.query_decay,
    )
    print(train_bundle(dataset, Path(args.out), params, progress=True))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from recmesh.evaluate.run import evaluate, format_table

    dataset = load_dataset(args.data, args.format, args.delimiter, args.min_length)
    report = evaluate(Path(args.bundle), dataset, split_name=args.split, n_candidates=args.candidates)
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from recmesh.bundle import resolve
    from recmesh.publish import publish

    path = Path(args.bundle) if args.bundle else resolve(Path(args.models_dir))
    print(publish(path, args.redis_url))
    return 0


def cmd_events_export(args: argparse.Namespace) -> int:
    from recmesh.events_export import main as export

    return export(args.redis_url, args.out, args.format)


def build_parser(extensions: Sequence[Extension] = ()) -> argparse.ArgumentParser:
    """The parser of every library command; each extension adds its own subcommands."""
    from recmesh.train.embeddings import Word2VecParams

    parser = argparse.ArgumentParser(prog="recmesh", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="data sets").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="write the built-in synthetic sessions ('user item1 item2 ...')")
    synth.add_argument("--out", required=True)
    synth.add_argument("--items", type=int, default=5000)
    synth.add_argument("--users", type=int, default=20000)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=cmd_data_synth)

    train = sub.add_parser("train", help="train word2vec + index + ranker into models/<version>/")
    _add_data_args(train)
    train.add_argument("--out", default="models", help="models directory (default: models)")
    train.add_argument("--index", default="scann", help="ANN backend: scann, exact, faiss_hnsw, faiss_ivf, hnswlib")
    train.add_argument("--candidates", type=int, default=200, help="candidates per request the ranker orders")
    train.add_argument("--query-decay", type=float, default=None, help="recency decay of the session vector")
    for f in fields(Word2VecParams):
        train.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=type(f.default),
            default=None,
            help=f"word2vec {f.name} (default {f.default})",
        )
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="leave-one-out full-ranking evaluation of a bundle")
    ev.add_argument("--bundle", required=True)
    _add_data_args(ev)
    ev.add_argument("--split", default="test", choices=["test", "valid"])
    ev.add_argument("--candidates", type=int, default=None, help="override the bundle's candidate count")
    ev.add_argument("--json", default=None, help="write the report here")
    ev.set_defaults(func=cmd_evaluate)

    pub = sub.add_parser("publish", help="load a bundle's vectors into Redis and flip the version pointer")
    pub.add_argument("bundle", nargs="?", default=None, help="bundle dir (default: newest in --models-dir)")
    pub.add_argument("--models-dir", default="models")
    pub.add_argument("--redis-url", default="redis://localhost:6379/0")
    pub.set_defaults(func=cmd_publish)

    events = sub.add_parser("events", help="visitors' recorded events")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    export = events_sub.add_parser("export", help="write every visitor's events (oldest first) as a file `train` reads")
    export.add_argument("--redis-url", default="redis://localhost:6379/0")
    export.add_argument("--out", required=True, help="events.csv (session_id,user_id,item_id,timestamp,event_type)")
    export.add_argument("--format", default=None, choices=["csv", "jsonl"], help="default: from --out's suffix, csv")
    export.set_defaults(func=cmd_events_export)

    for extend in extensions:
        extend(sub)
    return parser


def main(argv: list[str] | None = None, extensions: Sequence[Extension] = ()) -> int:
    args = build_parser(extensions).parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, OSError) as e:  # bad data, bad bundle, missing file: one clear line, no traceback
        print(f"recmesh {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
