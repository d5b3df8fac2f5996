"""RAFT data: retrieval-augmented fine-tuning examples for the persona agents.

For every train interaction ``(u, i, r)`` of the split, an example holds the user, the item, the real
rating ``r`` and the ``k`` train memories of ``u`` most similar to ``i``'s description — never ``i``'s own
memory (the index guarantees it). ``k = 0`` gives the no-memory variant used in the ablation. The memories
are drawn from the user's whole train part, as at evaluation time (where every train memory is older than
the test ratings).

The last ``validation_share`` of each user's train interactions (by time) form the validation slice used
for early stopping; ``max_train`` subsamples the training part (seeded) for CPU-sized runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsim_personas.agents.classical import temporal_holdout
from recsim_personas.errors import ConfigError


@dataclass(frozen=True)
class RaftConfig:
    """Attributes:
    memories: retrieved memories per example (the paper: 1; 0 = Ms only).
    validation_share: share of each user's latest train interactions held out for early stopping.
    max_train: at most this many training examples (random, seeded); ``None`` = all.
    max_valid: at most this many validation examples.
    seed: seed of the subsampling.
    """

    memories: int = 1
    validation_share: float = 0.1
    max_train: int | None = None
    max_valid: int | None = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.memories < 0:
            raise ConfigError(f"RaftConfig.memories must be >= 0, got {self.memories!r}.")
        if not 0.0 < self.validation_share < 0.5:
            raise ConfigError(f"RaftConfig.validation_share must be in (0, 0.5), got {self.validation_share!r}.")
        for name in ("max_train", "max_valid"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"RaftConfig.{name} must be a positive integer or None, got {v!r}.")


@dataclass
class RaftExample:
    """One example: the request, its retrieved memories (hits) and the target rating."""

    user_id: int
    item_id: int
    rating: int
    memories: list


def raft_examples(train: pd.DataFrame, index, config: RaftConfig) -> tuple[list[RaftExample], list[RaftExample]]:
    """Build (training, validation) RAFT examples from the split's train ratings.

    Args:
        train: the split's train frame (``user_id``, ``item_id``, ``rating``, ``timestamp``).
        index: a :class:`~recsim_personas.personas.memory.MemoryIndex` over the train memories (or ``None``
            when ``config.memories == 0``).
        config: see :class:`RaftConfig`.
    """
    if config.memories > 0 and index is None:
        raise ConfigError("RAFT with memories needs a memory index; build one with `recsim-personas personas index`.")
    hold = temporal_holdout(train, config.validation_share)
    rng = np.random.default_rng(config.seed)
    parts = []
    for frame, cap in ((train[~hold], config.max_train), (train[hold], config.max_valid)):
        if cap is not None and len(frame) > cap:
            frame = frame.iloc[np.sort(rng.choice(len(frame), size=cap, replace=False))]
        users = frame["user_id"].to_numpy(dtype=np.int64)
        items = frame["item_id"].to_numpy(dtype=np.int64)
        hits = index.retrieve_batch(users, items, config.memories) if config.memories else [[] for _ in users]
        ratings = frame["rating"].to_numpy(dtype=np.int64)
        parts.append(
            [RaftExample(int(u), int(i), int(r), h) for u, i, r, h in zip(users, items, ratings, hits, strict=True)]
        )
    return parts[0], parts[1]
