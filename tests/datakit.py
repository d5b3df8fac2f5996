"""Tiny synthetic MovieLens data for tests: ML-100K-format files and structured ratings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsim_personas.data.movielens import ML100K_GENRES


def write_ml100k(
    directory: Path,
    ratings: list[tuple[int, int, int, int]],
    n_items: int | None = None,
    n_users: int | None = None,
    titles: dict[int, str] | None = None,
) -> Path:
    """Write a tiny dataset in the ML-100K file formats into ``directory/ml-100k`` and return that path."""
    root = directory / "ml-100k"
    root.mkdir(parents=True, exist_ok=True)
    n_items = n_items or max(r[1] for r in ratings)
    n_users = n_users or max(r[0] for r in ratings)
    titles = titles or {}
    (root / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings), encoding="latin-1")
    item_lines = []
    for i in range(1, n_items + 1):
        flags = ["0"] * len(ML100K_GENRES)
        flags[1 + i % (len(ML100K_GENRES) - 1)] = "1"
        title = titles.get(i, f"Movie {i} ({1980 + i % 20})")
        item_lines.append(f"{i}|{title}|01-Jan-{1980 + i % 20}||http://example.invalid/{i}|" + "|".join(flags))
    (root / "u.item").write_bytes(("\n".join(item_lines) + "\n").encode("latin-1"))
    user_lines = [f"{u}|{20 + u % 40}|{'MF'[u % 2]}|student|0{u:04d}" for u in range(1, n_users + 1)]
    (root / "u.user").write_text("\n".join(user_lines) + "\n", encoding="latin-1")
    return root


def synthetic_ratings(
    n_users: int, n_items: int, per_user: list[int], seed: int = 0
) -> list[tuple[int, int, int, int]]:
    """Ratings with user/item structure: rating = clip(round(3 + user bias + item bias + noise))."""
    rng = np.random.default_rng(seed)
    ub = rng.normal(0, 0.7, n_users + 1)
    ib = rng.normal(0, 0.7, n_items + 1)
    rows = []
    for u in range(1, n_users + 1):
        items = rng.choice(np.arange(1, n_items + 1), size=per_user[u - 1], replace=False)
        t0 = 880_000_000 + int(rng.integers(0, 10_000_000))
        for k, i in enumerate(items):
            r = int(np.clip(np.rint(3 + ub[u] + ib[i] + rng.normal(0, 0.5)), 1, 5))
            rows.append((u, int(i), r, t0 + 60 * k))
    return rows
