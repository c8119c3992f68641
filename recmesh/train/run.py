"""`recmesh train`: sessions in, one sealed bundle out.

Split leave-one-out; word2vec and the feature tables see only the training part; the ranker learns from the
validation targets (which neither saw, so its features look as they will at serving time) and from `extra_folds`
more fits of the same parts less their last 1, 2, ... items (whose targets those fits did not see either), with
hard negatives from the candidate pool of the default recipe; a fifth of the users give no example and report the
ranker's AUC. `train_positions` (off by default) adds examples from inside the training parts, with the tables
minus what each sequence added from the example's position on (OwnCounts); word2vec has seen those, and on
validation they made the ranker worse (docs/evaluation.md).

The bundle carries a snapshot of the item catalogue (catalog.jsonl, hashed like every file): the one given
(`recmesh train --items FILE`), else the synthetic attributes when the data is the built-in generator's. Its items
need not match the training data: new items without a vector stay, trained items without attributes are fine.

    recmesh train --data data/beauty.txt --out models/   # the CLI; train_bundle(dataset, Path("models")) in code
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from recmesh import bundle
from recmesh.catalog.files import CATALOG_FILE, catalog_summary, write_items
from recmesh.catalog.table import Catalog
from recmesh.data.sessions import Dataset
from recmesh.data.synth import SynthDataset, item_attributes
from recmesh.evaluate.protocol import Split, leave_one_out
from recmesh.index import build_index, default_params
from recmesh.pipeline import MAX_SESSION, SLIST_FILE, Model
from recmesh.rank.features import SLIST_FEATURES, SOURCE_FEATURES, ItemSpace, features
from recmesh.rank.model import Ranker, auc, fit_ranker
from recmesh.rank.tables import FeatureTables, OwnCounts, build_tables
from recmesh.sources import Session, top_k
from recmesh.sources.covisit import CovisitParams, CovisitSource, neighbour_scores
from recmesh.sources.recipe import gather, parse_recipe
from recmesh.sources.slist import SlistParams, fit_slist
from recmesh.train.embeddings import Word2VecParams, train_item_vectors


@dataclass(frozen=True)
class TrainParams:
    word2vec: Word2VecParams = field(default_factory=Word2VecParams)
    query_decay: float = 1.0  # recency weight of session items: exp(-decay * age)
    index_backend: str = "scann"
    candidates: int = 200  # ANN candidates of a request that names no recipe (the original pipeline)
    recipe: str = "ann:150,slist:50"  # the default recipe: the pool the ranker learns to order
    # the default recipe of a bundle without the slist source (slist off, or a catalogue over slist.MAX_ITEMS)
    recipe_without_slist: str = "ann:150,covisit:50"
    covisit: CovisitParams = field(default_factory=CovisitParams)
    slist: SlistParams | None = field(default_factory=SlistParams)  # None: no slist source, nor its features
    extra_folds: int = 1  # models fitted one (two, ...) item earlier, whose next items add ranker examples
    train_positions: int = 0  # examples from inside the training parts (0 = none: word2vec has seen them)
    valid_examples: bool = True  # ranker examples from the validation targets too (off to choose on them)
    negatives: int = 20  # hard negatives sampled per ranker example from the pool
    ranker_c: float = 1.0
    holdout_fraction: float = 0.2  # share of validation users kept out of ranker training, for AUC
    seed: int = 0


def fingerprint(dataset: Dataset) -> str:
    digest = hashlib.sha256()
    for user, seq in zip(dataset.users, dataset.sequences, strict=True):
        digest.update(user.encode())
        digest.update(b"\x00" + "\x01".join(seq).encode() + b"\x02")
    return digest.hexdigest()


def unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.maximum(norms, 1e-12)).astype(np.float32)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train_bundle(
    dataset: Dataset,
    models_dir: Path,
    params: TrainParams | None = None,
    progress: bool = True,
    catalog: Catalog | None = None,
) -> Path:
    """Train every part, write models_dir/<version>/, return its path. `catalog`: the items' attributes to carry
    (default: the synthetic ones for a data set made by recmesh.data.synth.generate, else none)."""
    params = params or TrainParams()
    if catalog is None and isinstance(dataset, SynthDataset):
        catalog = Catalog.of(item_attributes(dataset))
    started = time.perf_counter()
    split = leave_one_out(dataset)
    log(f"split: {len(split.train):,} sequences, {split.n_items:,} items, {len(split.valid_target):,} targets")

    model = _fit_model(split.item_ids, split.train, params, progress)
    # Each extra fold is the same fit on the training parts less their last `fold` items: its examples (target the
    # item it did not see) look to the ranker as validation targets look to the bundle's model, so they add
    # positives without letting word2vec have seen the target.
    folds = [
        _fit_model(split.item_ids, [s[:-fold] for s in split.train], params, progress, f"fold {fold}")
        for fold in range(1, params.extra_folds + 1)
    ]
    recipe = params.recipe if "slist" in model.sources else params.recipe_without_slist
    ranker, ranker_auc = _train_ranker(model, folds, split, params, recipe, progress)
    model.ranker = ranker
    log(f"ranker: held-out AUC {ranker_auc:.4f}")

    fp = fingerprint(dataset)
    version = bundle.new_version(fp)
    final = Path(models_dir) / version
    staging = Path(models_dir) / f".{version}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "items.txt").write_text("\n".join(split.item_ids))
    space, index = model.space, model.index
    np.save(staging / "vectors.npy", space.vectors)
    np.save(staging / "context_vectors.npy", space.context_vectors)
    t = space.tables
    np.savez(
        staging / "tables.npz",
        popularity=t.popularity,
        transition_out=t.transition_out,
        transitions_indptr=t.transitions.indptr,
        transitions_indices=t.transitions.indices,
        transitions_data=t.transitions.data,
        covisits_indptr=t.covisits.indptr,
        covisits_indices=t.covisits.indices,
        covisits_data=t.covisits.data,
    )
    index.save(staging / "index")
    if space.slist is not None:
        w = space.slist
        np.savez(staging / SLIST_FILE, indptr=w.indptr, indices=w.indices, data=w.data)
    ranker.save(staging / "ranker.json")
    if catalog is not None:  # before seal, so the manifest hashes it
        write_items(staging / CATALOG_FILE, catalog.docs())
    train_seconds = round(time.perf_counter() - started, 1)
    manifest = {
        "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": {
            "name": dataset.name,
            "fingerprint": fp,
            "sequences": len(dataset.sequences),
            "interactions": dataset.n_interactions,
            "items": split.n_items,
            "filtered": dict(dataset.filtered),
        },
        "split": "leave-one-out: word2vec and tables on all but the last two items per sequence",
        "params": {**asdict(params), "word2vec": params.word2vec.to_dict()},
        "index": {"backend": index.backend, "params": index.params, "space": "context_vectors"},
        "dim": params.word2vec.dim,
        "sources": {
            "available": sorted(model.sources),
            "default_recipe": recipe,
            "covisit": asdict(params.covisit),
            **({"slist": asdict(space.slist_params)} if space.slist is not None else {}),
        },
        "metrics": {"ranker_auc": ranker_auc, "train_seconds": train_seconds},
    }
    if catalog is not None:
        manifest["catalog"] = catalog_summary(catalog)
    bundle.seal(staging, manifest)
    staging.rename(final)
    log(f"bundle: {final} ({train_seconds}s)")
    return final


def _fit_model(
    item_ids: list[str], sequences: list[np.ndarray], params: TrainParams, progress: bool, what: str = "bundle"
) -> Model:
    """word2vec, feature tables and the ANN index over index-encoded `sequences`, as a Model without ranker."""
    t0 = time.perf_counter()
    train_sequences = [[item_ids[i] for i in seq] for seq in sequences if seq.size]
    item_vectors = train_item_vectors(train_sequences, item_ids, params.word2vec, progress=progress)
    borrowed = int((~item_vectors.trained).sum())
    log(f"word2vec ({what}): {time.perf_counter() - t0:.1f}s, {borrowed} items borrowed vectors")
    t0 = time.perf_counter()
    slist = None if params.slist is None else fit_slist(sequences, len(item_ids), params.slist)
    if slist is not None:
        log(f"slist ({what}): {time.perf_counter() - t0:.1f}s, {slist.data.size:,} weights")
    space = ItemSpace(
        unit(item_vectors.vectors),
        unit(item_vectors.context_vectors),
        build_tables(sequences, len(item_ids)),
        params.covisit,
        slist,
        params.slist or SlistParams(),
    )
    t0 = time.perf_counter()
    # every backend sized for the candidate count the ranker orders, not a default k
    index_params = default_params(params.index_backend, len(item_ids), k=params.candidates)
    index = build_index(params.index_backend, space.context_vectors, index_params)
    log(f"index ({what}): {index.backend} {index.params}, {time.perf_counter() - t0:.1f}s")
    return Model(
        "training",
        {"params": {"query_decay": params.query_decay}},
        item_ids,
        {item: i for i, item in enumerate(item_ids)},
        space,
        index,
        Ranker(np.zeros(0), np.ones(0), np.zeros(0), 0.0),
    )


def _train_ranker(
    model: Model, folds: list[Model], split: Split, params: TrainParams, recipe_text: str, progress: bool
) -> tuple[Ranker, float]:
    rng = np.random.default_rng(params.seed)
    recipe = parse_recipe(recipe_text, model.sources)
    names = SLIST_FEATURES if "slist" in model.sources else SOURCE_FEATURES
    users = np.arange(len(split.valid_target))
    held_out = rng.random(users.size) < params.holdout_fraction
    # (model, user, sequence, position, earlier): history sequence[:position], target sequence[position]. The
    # validation targets are the position just past each training part; fold f's targets the position f before
    # it; `earlier` examples (train_positions) come from inside the part the model saw (OwnCounts takes the
    # tables' share back out; word2vec's share stays in, see docs/evaluation.md).
    examples: list[tuple[Model, int, np.ndarray, int, bool]] = []
    for u in users:
        train = split.valid_history[u]
        if params.valid_examples:
            examples.append((model, int(u), np.append(train, split.valid_target[u]), train.size, False))
        for fold, fold_model in enumerate(folds, start=1):
            if train.size > fold:
                examples.append((fold_model, int(u), train, train.size - fold, False))
        for position in range(max(1, train.size - params.train_positions), train.size):
            examples.append((model, int(u), train, position, True))
    feats: dict[bool, list[np.ndarray]] = {False: [], True: []}
    labels: dict[bool, list[np.ndarray]] = {False: [], True: []}
    for example_model, u, sequence, position, earlier in tqdm(
        examples, desc="ranker examples", unit="example", disable=not progress, mininterval=1.0
    ):
        history, target = sequence[:position][-MAX_SESSION:], int(sequence[position])
        if history.size == 0:
            continue
        own = OwnCounts.of(sequence, position) if earlier else None
        query = example_model.query(history)
        sources = dict(example_model.sources)
        if own is not None and "covisit" in sources:
            sources["covisit"] = _CovisitWithout(example_model.space.tables, params.covisit, own)
        pool = gather(sources, recipe, Session(history, query, np.unique(sequence[:position])))
        cands, scores = pool.rows, pool.scores
        hit = np.flatnonzero(cands == target)
        if hit.size == 0:
            continue  # the ranker cannot fix a miss of the candidate stage; it learns to order hits
        negatives = np.flatnonzero(cands != target)
        pick = np.concatenate([hit, rng.choice(negatives, min(params.negatives, negatives.size), replace=False)])
        x = features(example_model.space, history, cands[pick], scores[pick], query, names, own)
        feats[bool(held_out[u])].append(x)
        labels[bool(held_out[u])].append((cands[pick] == target).astype(np.int8))
    if not feats[False] or not feats[True]:
        raise ValueError("too few validation targets reach the candidates to train the ranker; more data needed")
    log(f"ranker: {sum(map(len, labels[False])):,} training rows, {sum(int(y.sum()) for y in labels[False]):,} hits")
    ranker = fit_ranker(
        np.vstack(feats[False]),
        np.concatenate(labels[False]),
        c=params.ranker_c,
        seed=params.seed,
        log=log,
        names=names,
    )
    return ranker, auc(ranker, np.vstack(feats[True]), np.concatenate(labels[True]))


class _CovisitWithout(CovisitSource):
    """The covisit source over the tables minus one training sequence's own counts (OwnCounts)."""

    def __init__(self, tables: FeatureTables, params: CovisitParams, own: OwnCounts) -> None:
        super().__init__(tables, params)
        self.own = own

    def candidates(self, session: Session, k: int) -> tuple[np.ndarray, np.ndarray]:
        cols, scores = neighbour_scores(self.tables, session.history, self.params, self.own)
        return top_k(cols, scores, k, session.exclude)


def describe(path: Path) -> str:
    return json.dumps(bundle.load_manifest(path, verify=False)["metrics"])
