"""The simulated population and the Gymnasium environments built on it.

- :class:`World` / :func:`make_world` (:mod:`.world`) — a split's items, users, traits, histories, the rater and
  the choice model (:mod:`recsim_personas.choice`), loaded once and shared.
- :class:`Population` (:mod:`.model`, a ``mesa.Model`` with event-scheduled sessions) — the simulation; its
  users' state is a :class:`~.state.UserTable` (:mod:`.state`), a page is :func:`~.reaction.react_page`
  (:mod:`.reaction`), its daily counters are in :mod:`.metrics`.
- :class:`SessionConfig` — the coefficients of the behaviour model (:mod:`.session`), fitted on the timestamps
  by :mod:`.calibration`.
- :class:`MovieLensEnv` (``recsim_personas/MovieLens-v1``; ``-v0`` with the hand-set behaviour) and
  :class:`MovieLensVectorEnv` (its ``vector_entry_point``), sharing :mod:`.env_common`; :class:`SlateSpace`
  and :func:`check_slates` (:mod:`.spaces`).
- :class:`ScoreSlateWrapper`, :class:`DedupSlateWrapper`, :class:`SequentialSlateWrapper` and the vector
  :class:`ScoreSlateVectorWrapper`, :class:`DedupSlateVectorWrapper` (:mod:`.wrappers`) — action spaces that
  standard RL libraries (Stable-Baselines3, sb3-contrib's ``MaskablePPO``) sample freely, mapped to valid slates.

The names are imported lazily (on first attribute access), so importing the package (or a light submodule
such as :mod:`.session`) does not load Mesa, pandas or the environments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recsim_personas._lazy import lazy_exports

if TYPE_CHECKING:
    from recsim_personas.envs.model import Population, make_population
    from recsim_personas.envs.movielens_env import ENV_ID, MovieLensEnv
    from recsim_personas.envs.reaction import Reaction
    from recsim_personas.envs.session import SessionConfig
    from recsim_personas.envs.spaces import SlateSpace, check_slates
    from recsim_personas.envs.state import UserTable, UserView
    from recsim_personas.envs.vector import MovieLensVectorEnv
    from recsim_personas.envs.world import Traits, World, make_world
    from recsim_personas.envs.wrappers import (
        DedupSlateVectorWrapper,
        DedupSlateWrapper,
        ScoreSlateVectorWrapper,
        ScoreSlateWrapper,
        SequentialSlateWrapper,
    )

_EXPORTS = {
    "Population": "model",
    "make_population": "model",
    "ENV_ID": "movielens_env",
    "MovieLensEnv": "movielens_env",
    "Reaction": "reaction",
    "SessionConfig": "session",
    "SlateSpace": "spaces",
    "check_slates": "spaces",
    "UserTable": "state",
    "UserView": "state",
    "MovieLensVectorEnv": "vector",
    "Traits": "world",
    "World": "world",
    "make_world": "world",
    "DedupSlateVectorWrapper": "wrappers",
    "DedupSlateWrapper": "wrappers",
    "ScoreSlateVectorWrapper": "wrappers",
    "ScoreSlateWrapper": "wrappers",
    "SequentialSlateWrapper": "wrappers",
}

__all__ = [
    "ENV_ID",
    "DedupSlateVectorWrapper",
    "DedupSlateWrapper",
    "MovieLensEnv",
    "MovieLensVectorEnv",
    "Population",
    "Reaction",
    "ScoreSlateVectorWrapper",
    "ScoreSlateWrapper",
    "SequentialSlateWrapper",
    "SessionConfig",
    "SlateSpace",
    "Traits",
    "UserTable",
    "UserView",
    "World",
    "check_slates",
    "make_population",
    "make_world",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
