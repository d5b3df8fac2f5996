"""The shapes of a recommender's actions and observations: slates of distinct items, and what a policy may see.

:class:`SlateSpace` is the Gymnasium action space (a ``MultiDiscrete`` without repeats); :func:`check_slates`
validates slates wherever they enter the simulation (environment actions, policy outputs); and
:func:`make_observation_space` is one session's observation space.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from recsim_personas.errors import ConfigError, InvalidActionError


class SlateSpace(spaces.MultiDiscrete):
    """Slates of *distinct* item indices: ``MultiDiscrete([n_items] * slate_size)`` without repeats.

    Samples draw each slate without replacement, and :meth:`contains` refuses a slate that repeats an item.
    With ``num_slates`` the space holds ``(num_slates, slate_size)`` arrays (one slate per row), the action
    space of the vector environment.

    Args:
        n_items: number of items; indices are ``0 .. n_items - 1``.
        slate_size: items per slate (``<= n_items``).
        num_slates: rows, or ``None`` for a single slate of shape ``(slate_size,)``.
        seed: seed of the space's own generator (used by :meth:`sample` only).
    """

    def __init__(
        self,
        n_items: int,
        slate_size: int,
        num_slates: int | None = None,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        if slate_size > n_items:
            raise ConfigError(f"slate_size ({slate_size!r}) cannot exceed the number of items ({n_items}).")
        shape = (slate_size,) if num_slates is None else (num_slates, slate_size)
        super().__init__(np.full(shape, n_items, dtype=np.int64), dtype=np.int64, seed=seed)
        self.n_items, self.slate_size, self.num_slates = int(n_items), int(slate_size), num_slates

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        """A random slate (or batch of slates) of distinct items, int64 of :attr:`shape`.

        Masks and probabilities are not supported: to sample only unseen items use the policies of
        :mod:`recsim_personas.recommenders`, which read the observation's ``seen`` mask.
        """
        if mask is not None or probability is not None:
            raise NotImplementedError(
                "SlateSpace.sample does not take mask/probability; use recsim_personas.recommenders.RandomPolicy,"
                " which excludes the items in the observation's 'seen' mask."
            )
        rows = 1 if self.num_slates is None else self.num_slates
        out = np.stack([self.np_random.choice(self.n_items, self.slate_size, replace=False) for _ in range(rows)])
        return out.astype(np.int64)[0] if self.num_slates is None else out.astype(np.int64)

    def contains(self, x: Any) -> bool:
        if not super().contains(x):
            return False
        srt = np.sort(np.asarray(x), axis=-1)
        return not bool((srt[..., 1:] == srt[..., :-1]).any())

    def __repr__(self) -> str:
        rows = "" if self.num_slates is None else f", num_slates={self.num_slates}"
        return f"SlateSpace(n_items={self.n_items}, slate_size={self.slate_size}{rows})"


def make_observation_space(n_users: int, n_items: int, history_len: int) -> spaces.Dict:
    """The observation space of one session (see :class:`MovieLensEnv`)."""
    return spaces.Dict(
        {
            "user_index": spaces.Discrete(n_users),
            "history_items": spaces.Box(-1, n_items - 1, shape=(history_len,), dtype=np.int64),
            "history_ratings": spaces.Box(0, 5, shape=(history_len,), dtype=np.int64),
            "traits": spaces.Box(0.0, 1.0, shape=(3,), dtype=np.float32),
            "seen": spaces.MultiBinary(n_items),
        }
    )


def check_slates(
    slates: Any, n_items: int, shape: tuple[int, ...] | None = None, *, name: str = "slates"
) -> np.ndarray:
    """Validate slates of item indices (the last axis is the slate) and return them as int64.

    Args:
        slates: array-like of item indices; 2-D ``(N, k)`` unless ``shape`` says otherwise.
        n_items: number of items (valid indices are ``0 .. n_items - 1``).
        shape: the exact shape required, if any.
        name: what to call the input in error messages (``"action"``, ``"actions"``, ...).

    Raises:
        InvalidActionError: (a ``ValueError``) wrong shape, a non-integer dtype, an index outside
            ``[0, n_items)``, or one item twice in a slate. The message names the position and the value.
    """
    arr = np.asarray(slates)
    if (shape is not None and arr.shape != tuple(shape)) or (shape is None and arr.ndim != 2):
        want = tuple(shape) if shape is not None else "(N, k)"
        raise InvalidActionError(f"{name} must have shape {want}, got an array of shape {arr.shape}: {_short(arr)}.")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidActionError(f"{name} must hold integer item indices, got dtype {arr.dtype}: {_short(arr)}.")
    arr = arr.astype(np.int64, copy=False)
    bad = (arr < 0) | (arr >= n_items)
    if bad.any():
        at = tuple(int(x) for x in np.argwhere(bad)[0])
        raise InvalidActionError(
            f"{name}[{', '.join(map(str, at))}] = {int(arr[at])} is not an item index in [0, {n_items}). Item"
            " indices address env.unwrapped.item_ids (index j is item id item_ids[j])."
        )
    if arr.ndim and arr.shape[-1] > 1:
        srt = np.sort(arr, axis=-1)
        dup = srt[..., 1:] == srt[..., :-1]
        if dup.any():
            at = tuple(int(x) for x in np.argwhere(dup)[0])
            row, value = at[:-1], int(srt[at])
            where = np.flatnonzero(arr[row] == value).tolist()
            label = f"{name}[{', '.join(map(str, row))}]" if row else name
            raise InvalidActionError(
                f"{label} shows item index {value} more than once (positions {where}); a slate must hold distinct"
                " items."
            )
    return arr


def _short(arr: np.ndarray) -> str:
    return np.array2string(np.asarray(arr), threshold=12, edgeitems=3)
