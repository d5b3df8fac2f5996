"""Shared fixtures: the real MovieLens directory (from RECSIM_PERSONAS_DATA_DIR) and tiny synthetic datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from datakit import synthetic_ratings, write_ml100k


@pytest.fixture(scope="session", autouse=True)
def _private_caches(tmp_path_factory: pytest.TempPathFactory):
    """Keep the tests' embedding cache and precision verdicts out of the user's cache directory."""
    root = tmp_path_factory.mktemp("cache")
    private = {
        "RECSIM_PERSONAS_EMBED_CACHE": str(root / "embeddings.sqlite"),
        "RECSIM_PERSONAS_PRECISION_CACHE": str(root / "precision"),
    }
    old = {name: os.environ.get(name) for name in private}
    os.environ.update(private)
    yield
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _require_data() -> bool:
    return os.environ.get("RECSIM_PERSONAS_REQUIRE_DATA") == "1" or os.environ.get("CI") == "true"


@pytest.fixture(scope="session")
def movielens_root() -> Path:
    """Directory holding ``ml-100k/`` (and ``ml-1m/``) with the real GroupLens files.

    Skips locally when RECSIM_PERSONAS_DATA_DIR is unset; fails in CI, where every test must run.
    """
    value = os.environ.get("RECSIM_PERSONAS_DATA_DIR")
    root = Path(value) if value else None
    if root is None or not (root / "ml-100k" / "u.data").is_file():
        msg = f"real MovieLens files not found (RECSIM_PERSONAS_DATA_DIR={value!r})"
        if _require_data():
            pytest.fail(msg + "; CI must provide them (see .ci/run)")
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def ml100k_split(movielens_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The paper's protocol split of the real ML-100K (seed 0), saved once per session."""
    from recsim_personas.data import ProtocolConfig, prepare_split

    split, _ = prepare_split(ProtocolConfig(), tmp_path_factory.mktemp("split") / "ml100k", data_dir=movielens_root)
    return split


@pytest.fixture
def tiny_dataset_dir(tmp_path: Path) -> Path:
    """A synthetic ML-100K-format dataset: 30 users with 5..40 ratings over 60 items."""
    per_user = [5 + (u * 7) % 36 for u in range(30)]
    write_ml100k(tmp_path, synthetic_ratings(30, 60, per_user), n_items=60, n_users=30)
    return tmp_path
