"""recsim-personas: simulated MovieLens users as small-language-model persona agents.

Importing the package is cheap: besides Gymnasium (to register the environment ids, with *string* entry
points, so the environment modules load only when an environment is made) it pulls in no numerical or
deep-learning library beyond numpy. Stages live in subpackages that import their heavy dependencies
themselves:

- :mod:`recsim_personas.data` — MovieLens loading/downloading, item catalog, the paper's protocol split.
- :mod:`recsim_personas.agents` — the :class:`~recsim_personas.agents.rater.Rater` contract, classical
  raters and the fidelity evaluation.
- :mod:`recsim_personas.envs` — the Mesa population and the Gymnasium environments
  (``gymnasium.make("recsim_personas/MovieLens-v1", split=DIR)``, ``gymnasium.make_vec(...)``).
- :mod:`recsim_personas.personas`, :mod:`recsim_personas.recommenders` — persona distillation and
  recommender policies.
"""

import gymnasium

__version__ = "0.1.0"

ENV_IDS = ("recsim_personas/MovieLens-v1", "recsim_personas/MovieLens-v0")
"""The environment ids, newest first: v1's users choose with the choice model and sessions fitted on the logs;
v0's with the hand-set formula and sessions (``choice="handset"``)."""

for _env_id, _kwargs in zip(ENV_IDS, ({}, {"choice": "handset"}), strict=True):
    if _env_id not in gymnasium.registry:
        gymnasium.register(
            id=_env_id,
            entry_point="recsim_personas.envs.movielens_env:MovieLensEnv",
            vector_entry_point="recsim_personas.envs.vector:MovieLensVectorEnv",
            kwargs=_kwargs,
        )

__all__ = ["ENV_IDS", "__version__"]
