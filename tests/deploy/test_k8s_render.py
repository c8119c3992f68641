"""Every overlay of k8s/ renders (kustomize, or the small renderer checked against it) and every rendered object
validates against the strict Kubernetes schemas; a broken copy fails.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.deploy.conftest import (
    K8S_VERSIONS,
    OVERLAYS,
    ROOT,
    by_id,
    kustomize_command,
    mini_kustomize,
    real_kustomize,
    rendered,
    renderers,
    schema_errors,
)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mini_renderer_matches_kustomize(overlay: str) -> None:
    if kustomize_command() is None:
        pytest.skip("no kustomize / kubectl on PATH: the other tests use the small renderer alone")
    real = by_id(real_kustomize(ROOT / OVERLAYS[overlay]))
    mini = by_id(mini_kustomize(ROOT / OVERLAYS[overlay]))
    assert sorted(mini) == sorted(real)
    for key, obj in real.items():
        assert mini[key] == obj, key


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_strict_kubernetes_schemas(overlay: str, version: str) -> None:
    objects = rendered(overlay)
    assert len(objects) > 20
    assert schema_errors(objects, version) == []


def test_broken_manifest_copy_fails_validation(tmp_path: Path) -> None:
    """An unknown field in a copy of k8s/ fails validation; a patch naming no object fails to render."""
    shutil.copytree(ROOT / "k8s", tmp_path / "k8s")
    ranking = tmp_path / "k8s/base/ranking.yaml"
    text = ranking.read_text()
    assert text.count("          imagePullPolicy: IfNotPresent\n") == 1
    ranking.write_text(
        text.replace("          imagePullPolicy: IfNotPresent\n", "          imagePullPolicyy: Always\n")
    )
    for renderer in renderers():
        for overlay in OVERLAYS.values():
            errors = schema_errors(renderer(tmp_path / overlay), K8S_VERSIONS[0])
            assert len(errors) == 1 and "imagePullPolicyy" in errors[0], (renderer, errors)

    replicas = tmp_path / "k8s/overlays/prod/patches/replicas.yaml"
    replicas.write_text(replicas.read_text().replace("name: ranking", "name: rankin"))
    for renderer in renderers():
        with pytest.raises(ValueError):
            renderer(tmp_path / OVERLAYS["prod"])
