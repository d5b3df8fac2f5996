"""The artifact layer: one writer, reader and verifier for every manifest."""

from __future__ import annotations

import json

import pytest

from recsim_personas.artifacts import (
    MANIFEST,
    ArtifactKind,
    check_input,
    library_versions,
    manifest_digest,
    read_manifest,
    verify_files,
    write_manifest,
)
from recsim_personas.errors import ArtifactError

KIND = ArtifactKind("recsim-personas/test-thing", 2, "test thing", "make one with `make-thing --out DIR`", (1,))


@pytest.fixture()
def artifact(tmp_path):
    d = tmp_path / "thing"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("alpha")
    (d / "sub" / "b.bin").write_bytes(b"\x00\x01")
    write_manifest(d, KIND, {"config": {"k": 3}, "split_id": "abc"}, files=["a.txt", "sub/b.bin"], libraries=["pytest"])
    return d


def test_round_trip_records_format_files_config_and_versions(artifact):
    m = read_manifest(artifact, KIND, required=("config", "files"))
    assert m["format"] == KIND.format and m["format_version"] == 2
    assert m["config"] == {"k": 3}
    assert set(m["files"]) == {"a.txt", "sub/b.bin"}
    assert m["versions"]["recsim_personas"] and m["versions"]["pytest"] == pytest.__version__
    assert "created_at" in m
    verify_files(artifact, m, KIND)


def test_altered_or_missing_file_is_named(artifact):
    m = read_manifest(artifact, KIND)
    (artifact / "a.txt").write_text("beta")
    with pytest.raises(ArtifactError, match=r"a\.txt does not match its manifest.*Fix: make one"):
        verify_files(artifact, m, KIND)
    (artifact / "sub" / "b.bin").unlink()
    with pytest.raises(ArtifactError, match=r"sub/b\.bin is missing"):
        verify_files(artifact, m, KIND, digests={"sub/b.bin": m["files"]["sub/b.bin"]})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"damaged \(.* at line 1\)"),
        ("[1, 2]", r"damaged \(a JSON list, not an object\)"),
        (b"\xff\xfe{}", r"damaged \(not UTF-8 text\)"),
        (json.dumps({"format": "other/format"}), r"format is 'other/format'.*not a test thing"),
        (json.dumps({"format": KIND.format, "format_version": 9}), r"format_version 9 is not supported.*reads 1, 2"),
        (json.dumps({"format": KIND.format, "format_version": 2}), r"no 'config' entry"),
    ],
)
def test_damaged_manifest_is_always_a_clear_artifact_error(artifact, content, message):
    mf = artifact / MANIFEST
    if isinstance(content, bytes):
        mf.write_bytes(content)
    else:
        mf.write_text(content)
    with pytest.raises(ArtifactError, match=message) as info:
        read_manifest(artifact, KIND, required=("config",))
    assert "Fix:" in str(info.value)


def test_legacy_manifest_without_version_reads_as_version_1(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"format": KIND.format}))
    assert read_manifest(tmp_path, KIND).get("format_version") is None
    newer_only = ArtifactKind(KIND.format, 2, KIND.what, KIND.fix)
    with pytest.raises(ArtifactError, match="format_version 1 is not supported"):
        read_manifest(tmp_path, newer_only)


def test_missing_directory_and_unfinished_directory(tmp_path):
    with pytest.raises(ArtifactError, match=r"does not exist.*Fix: make one"):
        read_manifest(tmp_path / "nope", KIND)
    with pytest.raises(ArtifactError, match="unfinished"):
        read_manifest(tmp_path, KIND)


def test_write_refuses_reserved_keys_and_unknown_files(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        write_manifest(tmp_path, KIND, {"format": "x"})
    with pytest.raises(ArtifactError, match="does not exist"):
        write_manifest(tmp_path, KIND, {}, files=["missing.bin"])
    assert not (tmp_path / MANIFEST).exists()


def test_check_input_and_digest(artifact, tmp_path):
    digest = manifest_digest(artifact)
    assert len(digest) == 64
    check_input(artifact, KIND, "split", "abc", "abc", "retrain")
    with pytest.raises(ArtifactError, match=r"another split \(abc, not 0123456789ab…\)\. Fix: retrain"):
        check_input(artifact, KIND, "split", "abc", "0123456789abcdef0123", "retrain")


def test_library_versions_names_missing_packages():
    v = library_versions("numpy", "surely-not-an-installed-package")
    assert v["surely-not-an-installed-package"] is None and v["numpy"]
