"""The Mesa population of simulated users and the Gymnasium environments built on it.

- :class:`World` / :func:`make_world` — a split's items, users, traits, histories and the rater, loaded once.
- :class:`Population` (a ``mesa.Model``) of :class:`SimulatedUser` agents; one step is one simulated day.
- :class:`SessionConfig` — the coefficients of the behaviour model (:mod:`recsim_personas.envs.session`).
- :class:`MovieLensEnv` (``recsim_personas/MovieLens-v0``) and :class:`MovieLensVectorEnv` (its
  ``vector_entry_point``).

The names are imported lazily (on first attribute access), so importing the package (or a light submodule
such as :mod:`.session`) does not load Mesa, pandas or the environments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recsim_personas._lazy import lazy_exports

if TYPE_CHECKING:
    from recsim_personas.envs.agents import SimulatedUser, Traits
    from recsim_personas.envs.factory import make_population, make_world
    from recsim_personas.envs.model import Population, Reaction, World, check_slates
    from recsim_personas.envs.movielens_env import ENV_ID, MovieLensEnv, SlateSpace
    from recsim_personas.envs.session import SessionConfig
    from recsim_personas.envs.vector import MovieLensVectorEnv

_EXPORTS = {
    "SimulatedUser": "agents",
    "Traits": "agents",
    "make_population": "factory",
    "make_world": "factory",
    "Population": "model",
    "Reaction": "model",
    "World": "model",
    "check_slates": "model",
    "ENV_ID": "movielens_env",
    "MovieLensEnv": "movielens_env",
    "SlateSpace": "movielens_env",
    "SessionConfig": "session",
    "MovieLensVectorEnv": "vector",
}

__all__ = [
    "ENV_ID",
    "MovieLensEnv",
    "MovieLensVectorEnv",
    "Population",
    "Reaction",
    "SessionConfig",
    "SimulatedUser",
    "SlateSpace",
    "Traits",
    "World",
    "check_slates",
    "make_population",
    "make_world",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
