"""Recommender policies, the RecBole adapter, offline and simulated metrics, and the gap report.

- :mod:`.policies` — the :class:`Policy` protocol, :class:`RandomPolicy`, :class:`PopularPolicy`.
- :mod:`.recbole_compat` — the shims that make RecBole 1.2.1 run on this stack.
- the RecBole adapter (any RecBole general or sequential model by name): :mod:`.recbole_config`
  (:class:`RecBoleConfig`, the model registry and per-model settings), :mod:`.recbole_data` (the RecBole
  dataset and model built from a split), :mod:`.recbole_train` (:func:`train_recbole`, early stopping,
  RecBole's evaluator), :mod:`.recbole_policy` (:class:`RecBolePolicy`: scoring, unseen top-k for our ids,
  save/load).
- :mod:`.offline` — :func:`evaluate_offline`: Recall/NDCG/MRR@k on the held-out test part.
- :mod:`.simulated` — :func:`evaluate_policy`: simulated metrics over seeds with confidence intervals.
- :mod:`.gap` — :class:`GapConfig`, :func:`run_gap_benchmark` → :class:`GapReport` (markdown, JSON, PNG);
  the policies it builds (:mod:`.gap_policies`), the report (:mod:`.gap_report`), its computed reading
  (:mod:`.gap_reading`), markdown (:mod:`.gap_markdown`) and plot (:mod:`.gap_plot`), the simulator check
  (:mod:`.gap_fidelity`).

Only the policies are imported eagerly (numpy); the rest loads on first attribute access, so importing this
package does not import torch, pandas or RecBole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recsim_personas._lazy import lazy_exports
from recsim_personas.recommenders.policies import POLICIES, Policy, PopularPolicy, RandomPolicy, make_policy

if TYPE_CHECKING:
    from recsim_personas.recommenders.gap import GapReport, run_gap_benchmark
    from recsim_personas.recommenders.offline import OfflineMetrics, evaluate_offline
    from recsim_personas.recommenders.recbole_config import RecBoleConfig
    from recsim_personas.recommenders.recbole_policy import RecBolePolicy
    from recsim_personas.recommenders.recbole_train import train_recbole
    from recsim_personas.recommenders.simulated import SimulatedMetrics, evaluate_policy

_EXPORTS = {
    "GapReport": "gap",
    "run_gap_benchmark": "gap",
    "OfflineMetrics": "offline",
    "evaluate_offline": "offline",
    "RecBoleConfig": "recbole_config",
    "RecBolePolicy": "recbole_policy",
    "train_recbole": "recbole_train",
    "SimulatedMetrics": "simulated",
    "evaluate_policy": "simulated",
}

__all__ = [
    "POLICIES",
    "GapReport",
    "OfflineMetrics",
    "Policy",
    "PopularPolicy",
    "RandomPolicy",
    "RecBoleConfig",
    "RecBolePolicy",
    "SimulatedMetrics",
    "evaluate_offline",
    "evaluate_policy",
    "make_policy",
    "run_gap_benchmark",
    "train_recbole",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
