"""`recmesh train`: sessions in, one sealed bundle out.

Split leave-one-out; word2vec and the feature tables see only the training part; the ranker learns from the
validation targets (which neither saw, so its features look as they will at serving time) with hard negatives
from the candidate stage; a fifth of those users are held out to report the ranker's AUC.
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
from recmesh.data.sessions import Dataset
from recmesh.evaluate.protocol import Split, leave_one_out
from recmesh.index import build_index, default_params
from recmesh.pipeline import Model
from recmesh.rank.features import ItemSpace, base_features
from recmesh.rank.model import Ranker, auc, fit_ranker
from recmesh.rank.tables import build_tables
from recmesh.train.embeddings import Word2VecParams, train_item_vectors


@dataclass(frozen=True)
class TrainParams:
    word2vec: Word2VecParams = field(default_factory=Word2VecParams)
    query_decay: float = 1.0  # recency weight of session items: exp(-decay * age)
    index_backend: str = "scann"
    candidates: int = 200  # candidates the ranker learns to order (and serving asks for by default)
    negatives: int = 20  # hard negatives sampled per ranker example from those candidates
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


def train_bundle(dataset: Dataset, models_dir: Path, params: TrainParams | None = None, progress: bool = True) -> Path:
    """Train every part, write models_dir/<version>/, return its path."""
    params = params or TrainParams()
    started = time.perf_counter()
    split = leave_one_out(dataset)
    log(f"split: {len(split.train):,} sequences, {split.n_items:,} items, {len(split.valid_target):,} targets")

    t0 = time.perf_counter()
    train_sequences = [[split.item_ids[i] for i in seq] for seq in split.train if seq.size]
    item_vectors = train_item_vectors(train_sequences, split.item_ids, params.word2vec, progress=progress)
    log(f"word2vec: {time.perf_counter() - t0:.1f}s, {int((~item_vectors.trained).sum())} items borrowed vectors")

    space = ItemSpace(
        unit(item_vectors.vectors), unit(item_vectors.context_vectors), build_tables(split.train, split.n_items)
    )
    t0 = time.perf_counter()
    # every backend sized for the candidate count the ranker orders, not a default k
    index_params = default_params(params.index_backend, split.n_items, k=params.candidates)
    index = build_index(params.index_backend, space.context_vectors, index_params)
    log(f"index: {index.backend} {index.params}, {time.perf_counter() - t0:.1f}s")

    model = Model(
        "training",
        {"params": {"query_decay": params.query_decay}},
        split.item_ids,
        {item: i for i, item in enumerate(split.item_ids)},
        space,
        index,
        Ranker(np.zeros(0), np.ones(0), np.zeros(0), 0.0),
    )
    ranker, ranker_auc = _train_ranker(model, split, params, progress)
    model.ranker = ranker
    log(f"ranker: held-out AUC {ranker_auc:.4f}")

    fp = fingerprint(dataset)
    version = bundle.new_version(fp)
    final = Path(models_dir) / version
    staging = Path(models_dir) / f".{version}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "items.txt").write_text("\n".join(split.item_ids))
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
    ranker.save(staging / "ranker.json")
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
        "metrics": {"ranker_auc": ranker_auc, "train_seconds": train_seconds},
    }
    bundle.seal(staging, manifest)
    staging.rename(final)
    log(f"bundle: {final} ({train_seconds}s)")
    return final


def _train_ranker(model: Model, split: Split, params: TrainParams, progress: bool) -> tuple[Ranker, float]:
    rng = np.random.default_rng(params.seed)
    users = np.arange(len(split.valid_target))
    held_out = rng.random(users.size) < params.holdout_fraction
    feats: dict[bool, list[np.ndarray]] = {False: [], True: []}
    labels: dict[bool, list[np.ndarray]] = {False: [], True: []}
    for u in tqdm(users, desc="ranker examples", unit="user", disable=not progress, mininterval=1.0):
        history, target = split.valid_history[u], split.valid_target[u]
        if history.size == 0:
            continue
        query = model.query(history)
        cands, scores = model.retrieve(query, params.candidates, np.unique(history))
        hit = np.flatnonzero(cands == target)
        if hit.size == 0:
            continue  # the ranker cannot fix a miss of the candidate stage; it learns to order hits
        negatives = np.flatnonzero(cands != target)
        pick = np.concatenate([hit, rng.choice(negatives, min(params.negatives, negatives.size), replace=False)])
        x = base_features(model.space, history, cands, scores, query)[pick]
        feats[bool(held_out[u])].append(x)
        labels[bool(held_out[u])].append((cands[pick] == target).astype(np.int8))
    if not feats[False] or not feats[True]:
        raise ValueError("too few validation targets reach the candidates to train the ranker; more data needed")
    ranker = fit_ranker(
        np.vstack(feats[False]), np.concatenate(labels[False]), c=params.ranker_c, seed=params.seed, log=log
    )
    return ranker, auc(ranker, np.vstack(feats[True]), np.concatenate(labels[True]))


def describe(path: Path) -> str:
    return json.dumps(bundle.load_manifest(path, verify=False)["metrics"])
