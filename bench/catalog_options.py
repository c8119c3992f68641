"""The typical filter of the catalogue benchmark (`python -m bench.serve --catalog-compare`): whole categories
adding up to about a fifth of the items, available ones only, at most two per brand in the answer.

    options, pass_fraction = typical_options(bundle_path)
    filled = fills_k(stack.http_url, stack.auth_headers, sessions, options, k=10)
"""

from __future__ import annotations

import json
import random
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from recmesh.catalog.expressions import compile_expression
from recmesh.catalog.files import load_catalog

TARGET_PASS = 0.20


def typical_options(bundle_path: Path, target: float = TARGET_PASS) -> tuple[dict[str, Any], float]:
    """Options with a filter passing about `target` of the bundle's catalogue (the smallest categories first, so
    the filter is not one giant category) and a diversity cap; the fraction the filter really passes."""
    catalog = load_catalog(bundle_path)
    if catalog is None or "category" not in catalog.columns:
        raise SystemExit(f"{bundle_path.name} has no catalogue with categories: retrain the bench bundle")
    column = catalog.column("category")
    n = len(catalog)
    counts = np.bincount(column.values[:n][column.present[:n]], minlength=len(column.vocab))
    chosen: list[str] = []
    covered = 0
    for code in np.argsort(counts, kind="stable"):
        if covered / n >= target:
            break
        chosen.append(column.vocab[int(code)])
        covered += int(counts[code])
    text = "available and category in (" + ", ".join(json.dumps(c) for c in chosen) + ")"
    passing = float(compile_expression(text, catalog.schema).mask(catalog).mean())
    return {"filter": text, "diversity": {"attribute": "brand", "max_per_value": 2}}, passing


def fills_k(
    http_url: str, headers: dict[str, str], sessions: Path, options: dict[str, Any], k: int, n: int = 200
) -> dict[str, float]:
    """Of `n` sampled session recommendations with `options`: the share answered with all k items, and the
    share whose items all pass (checked by asking the catalogue for each item)."""
    lines = [line.split()[1:] for line in sessions.read_text().splitlines() if len(line.split()) >= 3]
    rng = random.Random(0)
    full = 0
    for _ in range(n):
        session = rng.choice(lines)
        body = json.dumps({"session": session[:-1], "k": k, "options": options}).encode()
        request = urllib.request.Request(
            http_url + "/v1/recommend", data=body, headers={"content-type": "application/json", **headers}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            answer = json.loads(reply.read())
        full += len(answer["items"]) == k
    return {"requests": n, "filled_k": round(full / n, 4)}
