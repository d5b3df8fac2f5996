"""What the single and the vector environment share: their arguments, reset options and infos.

:class:`SessionEnvBase` holds the one constructor of both (its arguments and defaults, validated by
:func:`env_settings`); :func:`reset_options` checks a reset's ``options``; :func:`base_info` and
:func:`page_info` build the ``info`` entries (per session, with a leading axis of sessions — the single
environment takes row 0).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from recsim_personas.envs.session import REWARD_MODES, SessionConfig, reward
from recsim_personas.envs.world import World, as_world
from recsim_personas.errors import ConfigError, suggest, unknown_choice

if TYPE_CHECKING:
    from recsim_personas.agents.rater import Rater
    from recsim_personas.data.protocol import Split
    from recsim_personas.envs.model import Population
    from recsim_personas.envs.reaction import Reaction


@dataclass(frozen=True)
class EnvSettings:
    """The validated arguments of an environment.

    Attributes:
        world: the simulation's inputs (shared).
        config: the behaviour coefficients.
        slate_size: items per page.
        history_len: history entries in the observation.
        reward_mode: ``"rating"``, ``"likes"`` or ``"watches"`` (see :func:`~recsim_personas.envs.session.reward`).
    """

    world: World
    config: SessionConfig
    slate_size: int
    history_len: int
    reward_mode: str

    def rewards(self, reaction: Reaction) -> np.ndarray:
        """The reward of each session's page, float64 (N,)."""
        return reward(reaction.watched, reaction.ratings, self.reward_mode, self.config.like_threshold)


def env_settings(
    split: str | os.PathLike[str] | Split | World | None,
    rater: str | Rater | None,
    world: World | None,
    session_config: Any,
    slate_size: Any,
    history_len: Any,
    reward_mode: Any,
    render_mode: Any,
    choice: Any = None,
) -> EnvSettings:
    """Validate the environment arguments shared by the single and the vector environment.

    Raises:
        ConfigError: names the argument and the bad value.
    """
    w = as_world(split, rater, world, choice)
    if session_config is not None and not isinstance(session_config, SessionConfig):
        raise ConfigError(f"session_config must be a SessionConfig, got {type(session_config).__name__}.")
    for name, value in (("slate_size", slate_size), ("history_len", history_len)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    if slate_size > w.n_items:
        raise ConfigError(f"slate_size ({slate_size!r}) cannot exceed the number of items ({w.n_items}).")
    if reward_mode not in REWARD_MODES:
        raise unknown_choice("reward", str(reward_mode), REWARD_MODES)
    if render_mode is not None:
        raise ConfigError(f"render_mode {render_mode!r} is not supported; this environment does not render.")
    config = session_config or w.session_config or SessionConfig()
    return EnvSettings(w, config, int(slate_size), int(history_len), str(reward_mode))


class SessionEnvBase:
    """The constructor of :class:`~recsim_personas.envs.movielens_env.MovieLensEnv` and
    :class:`~recsim_personas.envs.vector.MovieLensVectorEnv`: validated arguments and the attributes both have.

    Args:
        split: a split directory, a loaded ``Split``, or a ``World`` from ``make_world``.
        rater: a classical rater's name (default ``"bias"``), ``"agents:DIR"`` (persona agents or a USER-LLM
            agent), ``"userllm:DIR"`` (a USER-LLM agent), ``"remote:FILE.json"`` (persona agents served by an
            OpenAI-compatible server, :func:`~recsim_personas.envs.world.load_remote`), or a Rater (not with a world).
        world: a ``World`` to share one load between environments.
        session_config: behaviour coefficients (default: the session behaviour fitted with the world's choice
            model, else :class:`~recsim_personas.envs.session.SessionConfig`'s hand-set defaults).
        choice: how the users choose what to watch when the world is built here: ``"fitted"`` (default),
            ``"handset"`` or a saved choice model's directory (with ``world=``, it must be the world's own).
        slate_size: items per page.
        history_len: history entries in the observation.
        reward: ``"rating"``, ``"likes"`` or ``"watches"``.
        render_mode: must be ``None`` (nothing is rendered).

    Subclasses build their spaces in :meth:`_make_spaces`, called at the end of the constructor.
    """

    def __init__(
        self,
        split: str | os.PathLike[str] | Split | World | None = None,
        rater: str | Rater | None = None,
        *,
        world: World | None = None,
        session_config: SessionConfig | None = None,
        slate_size: int = 10,
        history_len: int = 20,
        reward: str = "rating",
        render_mode: str | None = None,
        choice: Any = None,
    ) -> None:
        self.settings = env_settings(
            split, rater, world, session_config, slate_size, history_len, reward, render_mode, choice
        )
        self.world: World = self.settings.world
        self.config: SessionConfig = self.settings.config
        self.slate_size, self.history_len = self.settings.slate_size, self.settings.history_len
        self.reward_mode = self.settings.reward_mode
        self.render_mode = render_mode
        self.item_ids: np.ndarray = self.world.item_ids
        self.user_ids: np.ndarray = self.world.user_ids
        self.population: Population | None = None
        self._make_spaces()

    def _make_spaces(self) -> None:
        raise NotImplementedError


def reset_options(options: Any, known: tuple[str, ...], example: str) -> dict[str, Any]:
    """The reset ``options`` (``{}`` for none), refusing anything but a dict of ``known`` keys.

    Raises:
        ConfigError: not a dict, or an unknown key (with the closest known one).
    """
    if not options:
        return {}
    if not isinstance(options, dict):
        raise ConfigError(f"options must be a dict like {example}, got {options!r}.")
    unknown = [k for k in options if k not in known]
    if unknown:
        raise ConfigError(
            f"unknown reset option {unknown[0]!r}.{suggest(str(unknown[0]), known)} Known options: {', '.join(known)}."
        )
    return options


def exit_reasons(exited: np.ndarray, truncated: np.ndarray) -> np.ndarray:
    """``"exit"`` / ``"page_limit"`` / ``""`` (session goes on) per session: an object array (N,) of str.

    Object dtype, as Gymnasium's vector environments use for string infos.
    """
    return np.where(exited, "exit", np.where(truncated, "page_limit", "")).astype(object)


def base_info(population: Population, users: np.ndarray, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``user_id``, ``day`` and ``action_mask`` (int8, 1 = not seen yet) of each session, leading axis N."""
    return {
        "user_id": population.world.user_ids[users],
        "day": np.full(len(users), population.day, dtype=np.int64),
        "action_mask": (1 - obs["seen"]).astype(np.int8),
    }


def page_info(item_ids: np.ndarray, reaction: Reaction) -> dict[str, np.ndarray]:
    """What happened on each session's page: ``page``, ``item_ids`` (the shown ids), ``watched``, ``ratings``,
    ``expected_ratings``, ``satisfaction`` and ``exit_reason``; leading axis N."""
    return {
        "page": reaction.pages,
        "item_ids": item_ids,
        "watched": reaction.watched,
        "ratings": reaction.ratings,
        "expected_ratings": reaction.expected,
        "satisfaction": reaction.satisfaction,
        "exit_reason": exit_reasons(reaction.exited, reaction.truncated),
    }
