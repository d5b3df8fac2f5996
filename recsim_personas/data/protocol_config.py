"""The protocol's settings: which users to select and how to split their ratings.

Kept apart from :mod:`recsim_personas.data.protocol` (which applies it) and light to import: the command line
builds the ``data prepare`` options from this dataclass without loading pandas.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from recsim_personas.data.datasets import DATASETS
from recsim_personas.errors import ConfigError, config_from_dict, unknown_choice


@dataclass(frozen=True)
class ProtocolConfig:
    """How to select users and split their ratings.

    Attributes:
        dataset: ``"ml-100k"``, ``"ml-1m"`` or ``"ml-1m-implicit"`` (ML-1M's rating-free pairs, every one
            rated 4, in file order).
        n_users: how many eligible users to sample; ``None`` keeps them all.
        min_ratings: fewest ratings an eligible user has (inclusive).
        max_ratings: most ratings an eligible user has (inclusive).
        train_ratio: share of each user's ratings, oldest first, that goes to train (0 < r < 1).
        seed: seed of the user sample.
    """

    dataset: str = "ml-100k"
    n_users: int | None = 200
    min_ratings: int = 100
    max_ratings: int = 200
    train_ratio: float = 0.6
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise unknown_choice("dataset", self.dataset, DATASETS)
        if self.n_users is not None and (not isinstance(self.n_users, int) or self.n_users < 1):
            raise ConfigError(
                f"n_users must be a positive integer or None (all eligible users), got {self.n_users!r}. Fix: pass a"
                " number of users to sample, or None ('all' on the command line) to keep every eligible user."
            )
        if self.min_ratings < 2:
            raise ConfigError(
                f"min_ratings must be at least 2 (one train and one test rating), got {self.min_ratings!r}. Fix:"
                " use min_ratings >= 2 (the paper uses 100)."
            )
        if self.max_ratings < self.min_ratings:
            raise ConfigError(
                f"max_ratings ({self.max_ratings!r}) must be >= min_ratings ({self.min_ratings!r}). Fix: raise"
                " max_ratings or lower min_ratings."
            )
        if not 0.0 < self.train_ratio < 1.0:
            raise ConfigError(
                f"train_ratio must be strictly between 0 and 1, got {self.train_ratio!r}. Fix: use a share such as"
                " 0.6 (the paper's 60:40 split)."
            )
        if not 1 <= math.floor(self.min_ratings * self.train_ratio) < self.min_ratings:
            raise ConfigError(
                f"train_ratio={self.train_ratio!r} with min_ratings={self.min_ratings!r} leaves a user with an"
                " empty train or test part. Fix: raise min_ratings or move train_ratio towards 0.5."
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}. Fix: use a seed >= 0.")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (what a split's manifest records as ``config``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProtocolConfig:
        """The config of :meth:`to_dict`'s output; unknown keys are a :class:`ConfigError`."""
        return config_from_dict(cls, d, "protocol config fields")
