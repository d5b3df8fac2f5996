"""recsim-personas: simulated MovieLens users as small-language-model persona agents.

Importing the package is cheap: it pulls in no numerical or deep-learning library. Stages live in
subpackages that import their heavy dependencies themselves:

- :mod:`recsim_personas.data` — MovieLens loading/downloading, item catalog, the paper's protocol split.
- :mod:`recsim_personas.agents` — the :class:`~recsim_personas.agents.rater.Rater` contract, classical
  raters and the fidelity evaluation.
- :mod:`recsim_personas.personas`, :mod:`recsim_personas.envs`, :mod:`recsim_personas.recommenders` —
  persona distillation, the simulation environment and recommender policies.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
