"""Off-policy evaluation (OPE) of slate recommenders, checked against the simulator's ground truth.

- :mod:`.propensities` — exact P(item ∈ slate) of Plackett-Luce top-k policies (:func:`pl_inclusion`).
- :mod:`.policies` — policy specs (``pl:0.5*pop+affinity@0.5``, ``greedy:affinity``), the base scores
  (:class:`ScoreBank`) and :class:`SlatePolicy` (slates, exact slate/prefix/inclusion probabilities).
- :mod:`.truth` — the simulator's exact expected reward of an item at a user's current state.
- :mod:`.logs` — :func:`log_sessions` (a behaviour's pages with propensities, the targets' quantities and truth),
  :class:`OPELog` (save/load), :func:`run_on_policy`.
- :mod:`.estimators` — IPS, SNIPS, IIPS, RIPS, DM, DR, pseudo-inverse, each returning an :class:`Estimate`.
- :mod:`.reward_model` — the direct method's cross-fitted reward model.
- :mod:`.evaluate` — :class:`OPEConfig`, :func:`evaluate_offpolicy`; :mod:`.report` — :class:`OPEReport`.

Nothing is imported until used (numpy only for the light modules; scikit-learn, scipy and matplotlib inside the
functions that need them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recsim_personas._lazy import lazy_exports

if TYPE_CHECKING:
    from recsim_personas.ope.estimators import Estimate
    from recsim_personas.ope.evaluate import OPEConfig, evaluate_offpolicy
    from recsim_personas.ope.logs import OPELog, log_sessions, run_on_policy
    from recsim_personas.ope.policies import PolicySpec, ScoreBank, SlatePolicy
    from recsim_personas.ope.propensities import pl_inclusion
    from recsim_personas.ope.report import OPEReport
    from recsim_personas.ope.truth import expected_item_rewards

_EXPORTS = {
    "Estimate": "estimators",
    "OPEConfig": "evaluate",
    "evaluate_offpolicy": "evaluate",
    "OPELog": "logs",
    "log_sessions": "logs",
    "run_on_policy": "logs",
    "PolicySpec": "policies",
    "ScoreBank": "policies",
    "SlatePolicy": "policies",
    "pl_inclusion": "propensities",
    "OPEReport": "report",
    "expected_item_rewards": "truth",
}

__all__ = [
    "Estimate",
    "OPEConfig",
    "OPELog",
    "OPEReport",
    "PolicySpec",
    "ScoreBank",
    "SlatePolicy",
    "evaluate_offpolicy",
    "expected_item_rewards",
    "log_sessions",
    "pl_inclusion",
    "run_on_policy",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
