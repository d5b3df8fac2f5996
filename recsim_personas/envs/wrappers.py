"""Wrappers that let standard RL libraries (Stable-Baselines3, sb3-contrib, CleanRL, ...) drive the environments.

The environments' action, a :class:`~recsim_personas.envs.spaces.SlateSpace`, is a ``MultiDiscrete`` of
*distinct* item indices; a library that samples each slot independently shows repeats, which the environment
refuses (``InvalidActionError``). Each wrapper here gives the agent an action space such libraries sample
freely, and turns every action into a valid slate:

- :class:`ScoreSlateWrapper` — a ``Box`` of item scores (or a preference vector in an item space) → the
  top-k unseen items;
- :class:`DedupSlateWrapper` — a plain ``MultiDiscrete`` → its repeats and seen items replaced from a fixed
  fallback ranking;
- :class:`SequentialSlateWrapper` — a ``Discrete`` item per sub-step, ``k`` sub-steps per page, with
  ``action_masks()`` for sb3-contrib's ``MaskablePPO``.

:class:`ScoreSlateVectorWrapper` and :class:`DedupSlateVectorWrapper` do the same for
:class:`~recsim_personas.envs.vector.MovieLensVectorEnv`. The single and the vector wrappers share one
vectorised function each (:func:`score_slates`, :func:`dedup_slates`; a single environment is a batch of one).

The observations are left as they are: their ``Dict`` (``Discrete``, int ``Box``, ``MultiBinary`` and float
``Box`` entries) is accepted by SB3's ``MultiInputPolicy`` and by ``gymnasium.wrappers.FlattenObservation``.
Which items a user has seen is read from ``info["action_mask"]`` (1 = not seen yet), so an observation
wrapper applied *under* these wrappers does not hide it.

Nothing here imports an RL library.
"""

from __future__ import annotations

from typing import Any, Literal, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.vector import VectorActionWrapper, VectorEnv

from recsim_personas.envs.spaces import SlateSpace
from recsim_personas.errors import ConfigError, InvalidActionError, unknown_choice

FALLBACKS = ("popularity", "index")
MASKED_ACTIONS = ("resolve", "raise")
Fallback = Literal["popularity", "index"]


# --------------------------------------------------------------------------------- the shared mappings
def score_slates(scores: np.ndarray, unseen: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best-scored unseen items of each row, best first; rows with fewer than ``k`` unseen items are
    filled with their best-scored seen ones. Ties go to the lower index.

    Args:
        scores: float (N, n_items), finite.
        unseen: bool (N, n_items), True for items the row's user has not seen.
        k: slate size (``<= n_items``).

    Returns:
        int64 (N, k): distinct item indices per row.
    """
    # lexsort: the last key is the primary one; a stable sort, so equal keys keep index order
    order = np.lexsort((-np.asarray(scores, dtype=np.float64), ~np.asarray(unseen, dtype=bool)), axis=-1)
    return order[:, :k].astype(np.int64)


def allowed_items(unseen: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Which items may fill a slate's next slot: the unseen items not used yet, or, in rows where none is left,
    every item not used yet (the seen ones fill a slate's tail, as in :func:`score_slates`).

    Args:
        unseen: bool (N, n_items).
        used: bool (N, n_items), items already in the slate.

    Returns:
        bool (N, n_items); never all False in a row that has an unused item.
    """
    fresh = unseen & ~used
    return np.where(fresh.any(axis=1, keepdims=True), fresh, ~used)


def fallback_candidates(fallback: Fallback, values: np.ndarray, popularity_order: np.ndarray) -> np.ndarray:
    """The order in which the fallback tries the items for slots holding ``values``.

    Args:
        fallback: ``"popularity"`` (``popularity_order`` for every slot) or ``"index"`` (the indices after the
            slot's value, cyclically: ``v + 1, v + 2, ..., v``).
        values: int (M,), the slots' current item indices.
        popularity_order: int64 (n_items,), item indices by popularity, most popular first.

    Returns:
        int64 (M, n_items): a permutation of the item indices per slot.
    """
    n_items = len(popularity_order)
    if fallback == "popularity":
        return np.broadcast_to(popularity_order, (len(values), n_items))
    return (np.asarray(values, dtype=np.int64)[:, None] + 1 + np.arange(n_items)) % n_items


def first_allowed(allowed: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The first allowed item of each row in its candidate order.

    Args:
        allowed: bool (M, n_items), at least one True per row.
        candidates: int (M, n_items), a permutation of the item indices per row.

    Returns:
        int64 (M,).
    """
    hit = np.take_along_axis(allowed, candidates, axis=1).argmax(axis=1)
    return candidates[np.arange(len(candidates)), hit].astype(np.int64)


def dedup_slates(
    slates: np.ndarray, unseen: np.ndarray, fallback: Fallback, popularity_order: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Slates of distinct items from slates that may repeat items or show seen ones.

    The first occurrence of each unseen item keeps its slot; every other slot, in slot order, gets the first
    item of its fallback candidates (:func:`fallback_candidates`) that :func:`allowed_items` allows — an unseen
    item not in the slate yet, or a seen one when no unseen item is left.

    Args:
        slates: int (N, k) item indices in ``[0, n_items)``.
        unseen: bool (N, n_items).
        fallback: ``"popularity"`` or ``"index"``.
        popularity_order: int64 (n_items,), most popular first.

    Returns:
        ``(slates, replaced)``: int64 (N, k) distinct item indices per row, and bool (N, k), True where the
        slot's item changed.
    """
    slates = np.asarray(slates, dtype=np.int64)
    n, k = slates.shape
    rows = np.arange(n)
    earlier = np.tril(np.ones((k, k), dtype=bool), -1)  # earlier[s, t]: slot t comes before slot s
    repeat = ((slates[:, :, None] == slates[:, None, :]) & earlier).any(axis=2)
    keep = np.take_along_axis(unseen, slates, axis=1) & ~repeat
    used = np.zeros_like(unseen, dtype=bool)
    used[np.repeat(rows, k)[keep.ravel()], slates[keep]] = True
    out = slates.copy()
    for slot in range(k):
        todo = np.flatnonzero(~keep[:, slot])
        if not todo.size:
            continue
        candidates = fallback_candidates(fallback, slates[todo, slot], popularity_order)
        picks = first_allowed(allowed_items(unseen[todo], used[todo]), candidates)
        out[todo, slot] = picks
        used[todo, picks] = True
    return out, out != slates


# --------------------------------------------------------------------------------- argument checks
def _slate_base(env: Any, owner: str, *, vector: bool) -> Any:
    """The unwrapped environment under ``env``, checked to take slates: one per step (a ``MovieLensEnv``) or,
    with ``vector``, one per slot (a ``MovieLensVectorEnv``)."""
    space, base = getattr(env, "action_space", None), getattr(env, "unwrapped", None)
    if not isinstance(space, SlateSpace) or not hasattr(base, "world") or (space.num_slates is not None) != vector:
        want = "MovieLensVectorEnv (gym.make_vec)" if vector else "MovieLensEnv (gym.make)"
        raise ConfigError(
            f"{owner} wraps a {want} of recsim_personas/MovieLens-v*, whose action space is a SlateSpace; got"
            f" {env!r} with action space {space!r}. Apply it to that environment directly (or on top of"
            " observation or reward wrappers only)."
        )
    return base


def _check_fallback(fallback: Any) -> Fallback:
    if fallback not in FALLBACKS:
        raise unknown_choice("fallback", str(fallback), FALLBACKS)
    return fallback


def _popularity_order(world: Any) -> np.ndarray:
    """Item indices by descending ``world.item_popularity``, ties by index: int64 (n_items,)."""
    return np.argsort(-np.asarray(world.item_popularity, dtype=np.int64), kind="stable").astype(np.int64)


def _item_embeddings(world: Any, item_embeddings: Any, embedding_dim: Any, owner: str) -> np.ndarray | None:
    """The item embeddings of a preference-vector action, float64 (n_items, d), or None for item scores."""
    if item_embeddings is not None and embedding_dim is not None:
        raise ConfigError(
            f"{owner}: give item_embeddings or embedding_dim, not both (got embedding_dim={embedding_dim!r})."
        )
    if embedding_dim is not None:
        if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int | np.integer) or embedding_dim < 1:
            raise ConfigError(f"{owner}: embedding_dim must be a positive integer, got {embedding_dim!r}.")
        from recsim_personas.envs.item_space import world_item_factors

        try:
            return world_item_factors(world, int(embedding_dim)).astype(np.float64)
        except ConfigError as err:
            raise ConfigError(f"{owner}: embedding_dim={embedding_dim!r} does not fit this world: {err}") from err
    if item_embeddings is None:
        return None
    emb = np.asarray(item_embeddings)
    if emb.ndim != 2 or emb.shape[0] != world.n_items or emb.shape[1] < 1:
        raise ConfigError(
            f"{owner}: item_embeddings must be an array of shape (n_items, d) = ({world.n_items}, d), got shape"
            f" {emb.shape}."
        )
    if not np.issubdtype(emb.dtype, np.number) or np.issubdtype(emb.dtype, np.complexfloating):
        raise ConfigError(f"{owner}: item_embeddings must hold real numbers, got dtype {emb.dtype}.")
    if not np.isfinite(emb).all():
        raise ConfigError(
            f"{owner}: item_embeddings must be finite, got a NaN or infinity in row(s)"
            f" {np.flatnonzero(~np.isfinite(emb).all(axis=1))[:5].tolist()}."
        )
    return emb.astype(np.float64)


def _unseen(info: dict[str, Any], obs: Any, owner: str) -> np.ndarray:
    """bool (..., n_items), True for items not seen yet: ``info["action_mask"]``, else ``obs["seen"]``."""
    if "action_mask" in info:
        return np.asarray(info["action_mask"]).astype(bool)
    if isinstance(obs, dict) and "seen" in obs:
        return ~np.asarray(obs["seen"]).astype(bool)
    raise ConfigError(
        f"{owner} reads the seen items from info['action_mask'] or obs['seen'], and the wrapped environment"
        " returned neither; apply it directly to the MovieLens environment."
    )


def _real_actions(actions: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(actions)
    if arr.shape != shape:
        raise InvalidActionError(f"{name} must have shape {shape}, got an array of shape {arr.shape}.")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InvalidActionError(f"{name} must hold real numbers, got dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise InvalidActionError(f"{name} must be finite, got {arr!r}.")
    return arr


def _index_actions(actions: Any, shape: tuple[int, ...], n_items: int, name: str) -> np.ndarray:
    arr = np.asarray(actions)
    if arr.shape != shape:
        raise InvalidActionError(f"{name} must have shape {shape}, got an array of shape {arr.shape}.")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidActionError(f"{name} must hold integer item indices, got dtype {arr.dtype}.")
    bad = (arr < 0) | (arr >= n_items)
    if bad.any():
        at = tuple(int(x) for x in np.argwhere(bad)[0])
        raise InvalidActionError(f"{name}{list(at)} = {int(arr[at])} is not an item index in [0, {n_items}).")
    return arr.astype(np.int64)


# --------------------------------------------------------------------------------- score → slate
class _TracksUnseen:
    """Keeps which items the current user of the (each slot's) session has not seen, read from every reset's and
    step's ``info`` — the state the slate mappings need. Mixed into the single and vector action wrappers
    before their Gymnasium base, whose ``reset`` it replaces."""

    env: Any
    _unseen: np.ndarray | None = None

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._unseen = _unseen(info, obs, type(self).__name__)
        return obs, info

    def _play(self, slates: np.ndarray) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step the wrapped environment with valid slates and keep the next unseen mask."""
        obs, reward, terminated, truncated, info = self.env.step(slates)
        self._unseen = _unseen(info, obs, type(self).__name__)
        return obs, reward, terminated, truncated, info


class _ScoreMapping:
    """What :class:`ScoreSlateWrapper` and :class:`ScoreSlateVectorWrapper` share: the action space of one
    session and the batch mapping of actions to scores."""

    n_items: int
    slate_size: int
    item_embeddings: np.ndarray | None

    def _init_scores(self, base: Any, item_embeddings: Any, embedding_dim: Any) -> spaces.Box:
        owner = type(self).__name__
        self.n_items, self.slate_size = int(base.world.n_items), int(base.slate_size)
        self.item_embeddings = _item_embeddings(base.world, item_embeddings, embedding_dim, owner)
        dim = self.n_items if self.item_embeddings is None else self.item_embeddings.shape[1]
        return spaces.Box(-1.0, 1.0, shape=(dim,), dtype=np.float32)

    def _batch_scores(self, actions: np.ndarray) -> np.ndarray:
        """float64 (N, n_items) scores of checked float64 (N, d) actions."""
        return actions if self.item_embeddings is None else actions @ self.item_embeddings.T


class ScoreSlateWrapper(
    _TracksUnseen,
    _ScoreMapping,
    gym.ActionWrapper[dict[str, Any], np.ndarray, np.ndarray],
    gym.utils.RecordConstructorArgs,
):
    """Act with a score per item (or a preference vector): the page shows the top-k unseen items.

    ## Action Space

    - Item scores (default): ``Box(-1, 1, (n_items,), float32)``; entry ``j`` scores item index ``j``.
    - Preference vector (``embedding_dim=d`` or ``item_embeddings``): ``Box(-1, 1, (d,), float32)``; the item
      scores are ``item_embeddings @ action``.

    The slate is the ``slate_size`` best-scored items the user has not seen, best first (ties: the lower index
    first); a user with fewer unseen items gets its best-scored seen items in the remaining slots
    (:func:`score_slates`). Only the order of the scores matters, so an action outside the box (an agent that
    does not clip) works too; a wrong shape or a NaN raises ``InvalidActionError``.

    ## Observation

    The wrapped environment's, unchanged (the ``Dict`` of :class:`~recsim_personas.envs.MovieLensEnv`). The
    ``info`` of a step adds ``slate`` (int64 (k,), the item indices shown); :meth:`scores` gives the scores of
    an action.

    ## Arguments

    - ``env``: a ``recsim_personas/MovieLens-v*`` environment (from ``gym.make``, possibly under observation
      or reward wrappers).
    - ``item_embeddings``: float (n_items, d) item vectors; the action is then a preference vector.
    - ``embedding_dim``: ``d`` of the item factors of :func:`~recsim_personas.envs.item_space.world_item_factors`
      (a truncated SVD of the world's train histories), used as ``item_embeddings``.
    """

    def __init__(
        self, env: gym.Env[dict[str, Any], np.ndarray], item_embeddings: Any = None, embedding_dim: int | None = None
    ) -> None:
        base = _slate_base(env, type(self).__name__, vector=False)
        gym.utils.RecordConstructorArgs.__init__(self, item_embeddings=item_embeddings, embedding_dim=embedding_dim)
        gym.ActionWrapper.__init__(self, env)
        self.action_space = self._init_scores(base, item_embeddings, embedding_dim)

    def scores(self, action: np.ndarray) -> np.ndarray:
        """The item scores of an action, float64 (n_items,)."""
        checked = _real_actions(action, self.action_space.shape, "action")
        return self._batch_scores(checked[None, :])[0]

    def action(self, action: np.ndarray) -> np.ndarray:
        """The slate of an action: int64 (slate_size,) distinct item indices."""
        if self._unseen is None:
            raise ResetNeeded("call reset() before step().")
        return score_slates(self.scores(action)[None, :], self._unseen[None, :], self.slate_size)[0]

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], SupportsFloat, bool, bool, dict[str, Any]]:
        slate = self.action(action)
        obs, reward, terminated, truncated, info = self._play(slate)
        info["slate"] = slate
        return obs, reward, terminated, truncated, info


class ScoreSlateVectorWrapper(_TracksUnseen, _ScoreMapping, VectorActionWrapper):
    """:class:`ScoreSlateWrapper` for :class:`~recsim_personas.envs.vector.MovieLensVectorEnv`: each row of
    the actions scores the items (or is a preference vector) of its slot.

    ## Action Space

    ``single_action_space``: ``Box(-1, 1, (n_items,), float32)`` (or ``(d,)`` with item embeddings);
    ``action_space``: ``Box(-1, 1, (num_envs, n_items | d), float32)``. Each row becomes its slot's top-k
    unseen items (:func:`score_slates`, one call for all rows).

    ## Observation

    The vector environment's, unchanged. ``info`` adds ``slate`` (int64 (num_envs, k)) with ``_slate`` (the
    slots that played a page, as the environment's ``_page``; a restarting slot's action is ignored).

    ## Arguments

    ``env`` (a ``MovieLensVectorEnv``, e.g. from ``gym.make_vec``), ``item_embeddings``, ``embedding_dim``:
    as :class:`ScoreSlateWrapper`.
    """

    def __init__(self, env: VectorEnv, item_embeddings: Any = None, embedding_dim: int | None = None) -> None:
        base = _slate_base(env, type(self).__name__, vector=True)
        VectorActionWrapper.__init__(self, env)
        self.single_action_space = self._init_scores(base, item_embeddings, embedding_dim)
        self.action_space = spaces.Box(
            -1.0, 1.0, shape=(self.num_envs, *self.single_action_space.shape), dtype=np.float32
        )

    def scores(self, actions: np.ndarray) -> np.ndarray:
        """The item scores of each row of ``actions``, float64 (num_envs, n_items)."""
        return self._batch_scores(_real_actions(actions, self.action_space.shape, "actions"))

    def actions(self, actions: np.ndarray) -> np.ndarray:
        """The slates of ``actions``: int64 (num_envs, slate_size), distinct items per row."""
        if self._unseen is None:
            raise ResetNeeded("call reset() before step().")
        return score_slates(self.scores(actions), self._unseen, self.slate_size)

    def step(self, actions: np.ndarray) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        slates = self.actions(actions)
        obs, rewards, terminated, truncated, info = self._play(slates)
        info["slate"], info["_slate"] = slates, np.asarray(info.get("_page", np.ones(self.num_envs, dtype=bool)))
        return obs, rewards, terminated, truncated, info


# --------------------------------------------------------------------------------- dedup
class DedupSlateWrapper(
    _TracksUnseen, gym.ActionWrapper[dict[str, Any], np.ndarray, np.ndarray], gym.utils.RecordConstructorArgs
):
    """Act with a plain ``MultiDiscrete`` slate: repeated and seen items are replaced deterministically.

    ## Action Space

    ``MultiDiscrete([n_items] * slate_size)`` (int64): slots sampled independently may repeat an item. The
    shown slate (:func:`dedup_slates`) keeps the first occurrence of each unseen item in its slot; every other
    slot (a repeat or a seen item), in slot order, gets the best item of the fallback ranking that is unseen
    and not in the slate yet — or, for a user with no such item left, the best one not in the slate yet.
    An index outside ``[0, n_items)`` or a wrong shape raises ``InvalidActionError``.

    ## Observation

    The wrapped environment's, unchanged. The ``info`` of a step adds ``slate`` (int64 (k,), the items shown),
    ``replaced`` (bool (k,), the slots whose item was changed) and ``n_replaced`` (int, their number).

    ## Arguments

    - ``env``: a ``recsim_personas/MovieLens-v*`` environment.
    - ``fallback``: the ranking replacements come from: ``"popularity"`` (default: the items by descending
      ``world.item_popularity``, ties by index, one ranking for every slot) or ``"index"`` (the indices after
      the slot's own value, cyclically: ``v + 1, v + 2, ...``).
    """

    def __init__(self, env: gym.Env[dict[str, Any], np.ndarray], fallback: Fallback = "popularity") -> None:
        base = _slate_base(env, type(self).__name__, vector=False)
        gym.utils.RecordConstructorArgs.__init__(self, fallback=fallback)
        gym.ActionWrapper.__init__(self, env)
        self.fallback = _check_fallback(fallback)
        self.n_items, self.slate_size = int(base.world.n_items), int(base.slate_size)
        self.popularity_order = _popularity_order(base.world)
        self.action_space = spaces.MultiDiscrete([self.n_items] * self.slate_size)
        self._replaced = np.zeros(self.slate_size, dtype=bool)

    def action(self, action: np.ndarray) -> np.ndarray:
        """The slate shown for an action: int64 (slate_size,) distinct item indices."""
        if self._unseen is None:
            raise ResetNeeded("call reset() before step().")
        acts = _index_actions(action, (self.slate_size,), self.n_items, "action")
        slates, replaced = dedup_slates(acts[None, :], self._unseen[None, :], self.fallback, self.popularity_order)
        self._replaced = replaced[0]
        return slates[0]

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], SupportsFloat, bool, bool, dict[str, Any]]:
        slate = self.action(action)
        replaced = self._replaced
        obs, reward, terminated, truncated, info = self._play(slate)
        info.update(slate=slate, replaced=replaced, n_replaced=int(replaced.sum()))
        return obs, reward, terminated, truncated, info


class DedupSlateVectorWrapper(_TracksUnseen, VectorActionWrapper):
    """:class:`DedupSlateWrapper` for :class:`~recsim_personas.envs.vector.MovieLensVectorEnv`.

    ## Action Space

    ``single_action_space``: ``MultiDiscrete([n_items] * slate_size)``; ``action_space``: int64
    ``(num_envs, slate_size)`` arrays; every row is made a slate of distinct items (:func:`dedup_slates`, one
    call for all rows).

    ## Observation

    The vector environment's, unchanged. ``info`` adds ``slate`` (int64 (num_envs, k)), ``replaced`` (bool
    (num_envs, k)) and ``n_replaced`` (int64 (num_envs,)), each with a ``_key`` mask of the slots that played
    a page (as the environment's ``_page``).

    ## Arguments

    ``env`` (a ``MovieLensVectorEnv``) and ``fallback``: as :class:`DedupSlateWrapper`.
    """

    def __init__(self, env: VectorEnv, fallback: Fallback = "popularity") -> None:
        base = _slate_base(env, type(self).__name__, vector=True)
        VectorActionWrapper.__init__(self, env)
        self.fallback = _check_fallback(fallback)
        self.n_items, self.slate_size = int(base.world.n_items), int(base.slate_size)
        self.popularity_order = _popularity_order(base.world)
        self.single_action_space = spaces.MultiDiscrete([self.n_items] * self.slate_size)
        self.action_space = spaces.MultiDiscrete(np.full((self.num_envs, self.slate_size), self.n_items))
        self._replaced = np.zeros((self.num_envs, self.slate_size), dtype=bool)

    def actions(self, actions: np.ndarray) -> np.ndarray:
        """The slates shown for ``actions``: int64 (num_envs, slate_size), distinct items per row."""
        if self._unseen is None:
            raise ResetNeeded("call reset() before step().")
        acts = _index_actions(actions, (self.num_envs, self.slate_size), self.n_items, "actions")
        slates, self._replaced = dedup_slates(acts, self._unseen, self.fallback, self.popularity_order)
        return slates

    def step(self, actions: np.ndarray) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        slates = self.actions(actions)
        replaced = self._replaced
        obs, rewards, terminated, truncated, info = self._play(slates)
        playing = np.asarray(info.get("_page", np.ones(self.num_envs, dtype=bool)))
        for key, value in (("slate", slates), ("replaced", replaced), ("n_replaced", replaced.sum(axis=1))):
            info[key], info[f"_{key}"] = value, playing.copy()
        return obs, rewards, terminated, truncated, info


# --------------------------------------------------------------------------------- one item per sub-step
class SequentialSlateWrapper(
    gym.Wrapper[dict[str, Any], np.int64, dict[str, Any], np.ndarray], gym.utils.RecordConstructorArgs
):
    """Build each page one item at a time: ``slate_size`` sub-steps of a ``Discrete`` action per page, with an
    action mask (the formulation of sb3-contrib's ``MaskablePPO``).

    ## Action Space

    ``Discrete(n_items)``: the item index for the page's next slot. Sub-steps ``1 .. k - 1`` only record the
    item (reward 0, not terminated or truncated; the environment is not stepped); the ``k``-th steps the
    environment with the whole slate and returns its page reward, termination and truncation.

    ## Action Mask

    :meth:`action_masks` (what ``MaskablePPO`` calls) returns bool (n_items,): the items the user has not
    seen and that are not on the page yet; once none is left, every item not on the page yet (so seen items
    only fill a page's tail, as in :class:`ScoreSlateWrapper`, and the mask is never all False).
    ``info["action_mask"]`` holds the same mask as int8 (1 = allowed), after a reset and every sub-step.

    A masked action (a seen item while unseen ones are left, or an item already on the page — what an agent
    that ignores the mask, e.g. plain PPO, will pick) is, with ``masked_action="resolve"`` (default),
    replaced by the first allowed item of the fallback ranking (as :class:`DedupSlateWrapper`'s
    ``fallback``) and reported with ``info["replaced"] = True``; with ``masked_action="raise"`` it raises
    ``InvalidActionError`` naming the item and why it is masked (to check that an agent respects the mask).
    An index outside ``[0, n_items)`` always raises ``InvalidActionError``.

    ## Observation

    The wrapped environment's ``Dict`` plus ``"slate"``: ``MultiBinary(n_items)`` (int8), 1 for the items
    already on this page. The other entries change only when the environment steps (after the ``k``-th
    sub-step).

    ``info`` of a sub-step: ``action_mask``, ``item`` (the index placed), ``slot`` (its position,
    ``0 .. k - 1``) and ``replaced``; the ``k``-th adds the environment's step info and ``slate`` (int64
    (k,), the page shown, in pick order).

    ## Arguments

    - ``env``: a ``recsim_personas/MovieLens-v*`` environment with a ``Dict`` observation.
    - ``fallback``: ``"popularity"`` (default) or ``"index"``; where a resolved masked action goes.
    - ``masked_action``: ``"resolve"`` (default) or ``"raise"``.
    """

    def __init__(
        self,
        env: gym.Env[dict[str, Any], np.ndarray],
        fallback: Fallback = "popularity",
        masked_action: Literal["resolve", "raise"] = "resolve",
    ) -> None:
        base = _slate_base(env, type(self).__name__, vector=False)
        if not isinstance(env.observation_space, spaces.Dict):
            raise ConfigError(
                f"SequentialSlateWrapper adds a 'slate' entry to a Dict observation, got observation space"
                f" {env.observation_space!r}; apply observation wrappers (e.g. FlattenObservation) on top of it."
            )
        if masked_action not in MASKED_ACTIONS:
            raise unknown_choice("masked_action", str(masked_action), MASKED_ACTIONS)
        gym.utils.RecordConstructorArgs.__init__(self, fallback=fallback, masked_action=masked_action)
        gym.Wrapper.__init__(self, env)
        self.fallback = _check_fallback(fallback)
        self.masked_action = masked_action
        self.n_items, self.slate_size = int(base.world.n_items), int(base.slate_size)
        self.popularity_order = _popularity_order(base.world)
        self.action_space = spaces.Discrete(self.n_items)
        self.observation_space = spaces.Dict(
            {**env.observation_space.spaces, "slate": spaces.MultiBinary(self.n_items)}
        )
        self._obs: dict[str, Any] | None = None
        self._unseen = np.zeros(self.n_items, dtype=bool)
        self._picked: list[int] = []
        self._done = True

    def action_masks(self) -> np.ndarray:
        """The items allowed in the page's next slot: bool (n_items,), never all False."""
        used = np.zeros(self.n_items, dtype=bool)
        used[self._picked] = True
        return allowed_items(self._unseen[None, :], used[None, :])[0]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._start_page(obs, info)
        self._done = False
        info["action_mask"] = self.action_masks().astype(np.int8)
        return self._observation(), info

    def step(self, action: Any) -> tuple[dict[str, Any], SupportsFloat, bool, bool, dict[str, Any]]:
        if self._obs is None or self._done:
            raise ResetNeeded("call reset() before step() (the session is over or was never started).")
        item = int(
            _index_actions(np.reshape(action, ()) if np.size(action) == 1 else action, (), self.n_items, "action")
        )
        mask = self.action_masks()
        replaced = not mask[item]
        if replaced:
            if self.masked_action == "raise":
                why = "is already on this page" if item in self._picked else "was seen by the user"
                raise InvalidActionError(
                    f"action {item} is masked: item index {item} {why} (slot {len(self._picked)} of"
                    f" {self.slate_size}; allowed: action_masks()). Use masked_action='resolve' to replace it."
                )
            candidates = fallback_candidates(self.fallback, np.array([item]), self.popularity_order)
            item = int(first_allowed(mask[None, :], candidates)[0])
        self._picked.append(item)
        sub = {"item": item, "slot": len(self._picked) - 1, "replaced": replaced}
        if len(self._picked) < self.slate_size:
            return self._observation(), 0.0, False, False, {"action_mask": self.action_masks().astype(np.int8), **sub}
        slate = np.array(self._picked, dtype=np.int64)
        obs, reward, terminated, truncated, info = self.env.step(slate)
        self._start_page(obs, info)
        self._done = bool(terminated or truncated)
        info.update(sub, slate=slate, action_mask=self.action_masks().astype(np.int8))
        return self._observation(), reward, terminated, truncated, info

    # ----------------------------------------------------------------------------------- helpers
    def _start_page(self, obs: dict[str, Any], info: dict[str, Any]) -> None:
        self._obs, self._picked = obs, []
        self._unseen = _unseen(info, obs, type(self).__name__)

    def _observation(self) -> dict[str, Any]:
        assert self._obs is not None
        slate = np.zeros(self.n_items, dtype=np.int8)
        slate[self._picked] = 1
        obs = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in self._obs.items()}  # callers keep them
        obs["slate"] = slate
        return obs
