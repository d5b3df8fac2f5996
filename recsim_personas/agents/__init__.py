"""Simulated-user models: the Rater contract, classical raters, the fidelity evaluation and persona agents.

- :mod:`.rater` — the :class:`Rater` protocol and distribution helpers.
- :mod:`.classical` — global / user / item / bias / MF raters.
- :mod:`.fidelity` — :func:`evaluate_fidelity` → :class:`FidelityReport`.
- :mod:`.backbones`, :mod:`.prompt`, :mod:`.raft` — SLM backbones, the agent prompt, RAFT examples.
- :mod:`.lora` — persona-LoRA training (:func:`~.lora.train_agents`); :mod:`.persona_agents` — the
  mixed-adapter :class:`~.persona_agents.PersonaAgents` rater; :mod:`.agent_report` — their fidelity report.

Every export loads on first attribute access, so importing this package imports neither torch nor pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recsim_personas._lazy import lazy_exports

if TYPE_CHECKING:
    from recsim_personas.agents.classical import (
        CLASSICAL_RATERS,
        BiasRater,
        GlobalMeanRater,
        ItemMeanRater,
        MFConfig,
        MFRater,
        PointRater,
        UserMeanRater,
        make_rater,
    )
    from recsim_personas.agents.fidelity import FidelityReport, evaluate_fidelity
    from recsim_personas.agents.rater import (
        Rater,
        check_distribution,
        expected_rating,
        median_rating,
        most_likely_rating,
        rating_histogram,
        sample_ratings,
    )

_EXPORTS = {
    "CLASSICAL_RATERS": "classical",
    "BiasRater": "classical",
    "GlobalMeanRater": "classical",
    "ItemMeanRater": "classical",
    "MFConfig": "classical",
    "MFRater": "classical",
    "PointRater": "classical",
    "UserMeanRater": "classical",
    "make_rater": "classical",
    "FidelityReport": "fidelity",
    "evaluate_fidelity": "fidelity",
    "Rater": "rater",
    "check_distribution": "rater",
    "expected_rating": "rater",
    "median_rating": "rater",
    "most_likely_rating": "rater",
    "rating_histogram": "rater",
    "sample_ratings": "rater",
}

__all__ = [
    "CLASSICAL_RATERS",
    "BiasRater",
    "FidelityReport",
    "GlobalMeanRater",
    "ItemMeanRater",
    "MFConfig",
    "MFRater",
    "PointRater",
    "Rater",
    "UserMeanRater",
    "check_distribution",
    "evaluate_fidelity",
    "expected_rating",
    "make_rater",
    "median_rating",
    "most_likely_rating",
    "rating_histogram",
    "sample_ratings",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
