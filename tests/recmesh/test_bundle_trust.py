"""What a bundle may not do: name paths outside its directory (manifest files, ScaNN asset paths, links), or, with
BUNDLE_SIGNING_KEY set, load without a valid signature of its manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from recmesh import bundle
from recmesh.bundle import BundleError
from recmesh.pipeline import load_model
from recmesh.registry import ModelRegistry
from tests.helpers import copy_bundle

KEY = "a test key, 32 bytes or more, any text"


@pytest.fixture()
def bundle_copy(bundle_path: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle_path, tmp_path / bundle_path.name))


def rewrite_manifest(directory: Path, change) -> None:  # type: ignore[no-untyped-def]
    manifest = json.loads((directory / bundle.MANIFEST).read_text())
    change(manifest)
    (directory / bundle.MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["../outside.txt", "index/../../outside.txt", "/etc/hostname"])
def test_a_manifest_naming_a_path_outside_the_bundle_is_refused(bundle_copy: Path, name: str):
    (bundle_copy.parent / "outside.txt").write_text("x")
    rewrite_manifest(bundle_copy, lambda m: m["files"].update({name: "0" * 64}))
    with pytest.raises(BundleError, match="manifest file .* points outside the bundle directory"):
        bundle.load_manifest(bundle_copy)


def test_a_link_to_a_file_outside_the_bundle_is_refused(bundle_copy: Path, tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not a model file")
    (bundle_copy / "items.txt").unlink()
    (bundle_copy / "items.txt").symlink_to(secret)
    with pytest.raises(BundleError, match="'items.txt' points outside the bundle directory"):
        bundle.load_manifest(bundle_copy)


@pytest.mark.parametrize("asset", ["../../vectors.npy", "/etc/hostname", "../../../outside.npy"])
def test_a_scann_asset_path_outside_the_bundle_is_refused_even_when_sealed(
    bundle_path: Path, tmp_path: Path, asset: str
):
    """A crafted bundle whose manifest is consistent (sealed after the change): the paths decide, not the hashes."""

    def point_out(directory: Path) -> None:
        assets = directory / "index" / "scann_assets.pbtxt"
        assets.write_text(assets.read_text().replace('asset_path: "dataset.npy"', f'asset_path: "{asset}"'))

    crafted = copy_bundle(bundle_path, tmp_path / "models", f"{bundle_path.name}-crafted", mutate=point_out)
    assert asset in (crafted / "index" / "scann_assets.pbtxt").read_text()
    bundle.load_manifest(crafted)  # whole and untampered as far as the hashes go
    with pytest.raises(BundleError, match=f"ScaNN asset_path '{asset}' points outside the bundle directory"):
        load_model(crafted)
    with pytest.raises(BundleError, match="points outside"):
        ModelRegistry(crafted.parent).load_initial()


def test_an_inside_relative_asset_path_still_loads(bundle_path: Path, tmp_path: Path):
    def roundabout(directory: Path) -> None:
        assets = directory / "index" / "scann_assets.pbtxt"
        assets.write_text(assets.read_text().replace('"dataset.npy"', '"../index/dataset.npy"'))

    ok = copy_bundle(bundle_path, tmp_path / "models", f"{bundle_path.name}-ok", mutate=roundabout)
    assert load_model(ok).version == ok.name


def test_without_a_key_nothing_is_signed_and_a_signature_is_not_required(bundle_copy, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.delenv(bundle.SIGNING_KEY_ENV, raising=False)
    assert bundle.SIGNATURE not in bundle.load_manifest(bundle_copy)
    assert bundle.sign_unsigned(bundle_copy) is False


def test_with_a_key_seal_signs_and_loading_checks_it(bundle_path: Path, tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv(bundle.SIGNING_KEY_ENV, KEY)
    signed = copy_bundle(bundle_path, tmp_path / "models", f"{bundle_path.name}-signed")  # copy_bundle seals
    manifest = bundle.load_manifest(signed)
    assert manifest[bundle.SIGNATURE]["alg"] == "hmac-sha256"
    assert load_model(signed).version == signed.name

    monkeypatch.setenv(bundle.SIGNING_KEY_ENV, "another key")
    with pytest.raises(BundleError, match="signature does not match"):
        bundle.load_manifest(signed)

    monkeypatch.setenv(bundle.SIGNING_KEY_ENV, KEY)
    # Tampering: a file swapped AND its hash updated in the manifest (what the hashes alone cannot catch).
    (signed / "items.txt").write_text((signed / "items.txt").read_text().replace("\n", "\nx", 1))
    rewrite_manifest(signed, lambda m: m["files"].update({"items.txt": bundle.sha256_of(signed / "items.txt")}))
    with pytest.raises(BundleError, match="signature does not match"):
        bundle.load_manifest(signed)


def test_with_a_key_an_unsigned_bundle_is_refused_until_publish_signs_it(bundle_copy, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv(bundle.SIGNING_KEY_ENV, KEY)
    with pytest.raises(BundleError, match="not signed"):
        bundle.load_manifest(bundle_copy)
    assert bundle.sign_unsigned(bundle_copy) is True  # what `recmesh publish` does before pushing
    assert bundle.load_manifest(bundle_copy)[bundle.SIGNATURE]["alg"] == "hmac-sha256"
    assert bundle.sign_unsigned(bundle_copy) is False  # already signed


def test_publish_refuses_to_sign_a_tampered_bundle(bundle_copy, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv(bundle.SIGNING_KEY_ENV, KEY)
    data = bytearray((bundle_copy / "vectors.npy").read_bytes())
    data[-1] ^= 0xFF
    (bundle_copy / "vectors.npy").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match its sha256"):
        bundle.sign_unsigned(bundle_copy)
    assert bundle.SIGNATURE not in bundle.load_manifest(bundle_copy, verify=False)
