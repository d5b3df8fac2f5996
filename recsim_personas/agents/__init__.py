"""Simulated-user models: the Rater contract, classical raters, the fidelity evaluation and persona agents.

Raters and their evaluation:

- :mod:`.rater` — the :class:`Rater` protocol (and the stateful one that hands out per-simulation sessions)
  and distribution helpers.
- :mod:`.classical` — global / user / item / bias / MF / item-kNN / blend raters.
- :mod:`.fidelity` — :func:`evaluate_fidelity` → :class:`FidelityReport`; :mod:`.agent_report` — the agents'.

Persona agents, a module per question:

- :mod:`.backbone_config` — which small model (:class:`~.backbone_config.BackboneConfig`, light);
  :mod:`.model_loading` — loading it offline; :mod:`.rating_tokens` — how a causal LM answers a rating;
  :mod:`.backbones` — the model read as a 5-way rating classifier.
- :mod:`.prompt`, :mod:`.raft` — the agent prompt and the RAFT examples.
- :mod:`.train_config` — how adapters are trained (:class:`~.train_config.LoraTrainConfig`, light);
  :mod:`.prior` — the anchoring prior; :mod:`.adapters` — LoRA targets, names and weights;
  :mod:`.checkpoints` — exact resume; :mod:`.training` — :func:`~.training.train_agents`.
- :mod:`.agent_artifact` — the trained directory: inputs (:func:`~.agent_artifact.load_world`), manifest,
  checks; :mod:`.inference` — batched logits; :mod:`.precision` — inference precision;
  :mod:`.persona_agents` — the mixed-adapter :class:`~.persona_agents.PersonaAgents` rater;
  :mod:`.remote` — the same causal agents served by an OpenAI-compatible endpoint
  (:class:`~.remote.RemoteRater`) and their export for vLLM (:func:`~.remote.export_vllm`).

Every export loads on first attribute access, so importing this package imports neither torch nor pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recsim_personas._lazy import lazy_exports

if TYPE_CHECKING:
    from recsim_personas.agents.agent_artifact import load_world
    from recsim_personas.agents.backbone_config import BackboneConfig
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
    from recsim_personas.agents.persona_agents import PersonaAgents
    from recsim_personas.agents.rater import (
        Rater,
        RaterSession,
        StatefulRater,
        check_distribution,
        expected_rating,
        median_rating,
        most_likely_rating,
        rating_histogram,
        sample_ratings,
    )
    from recsim_personas.agents.remote import RemoteRater, RemoteRaterConfig, export_vllm
    from recsim_personas.agents.train_config import LoraTrainConfig
    from recsim_personas.agents.training import train_agents

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
    "BackboneConfig": "backbone_config",
    "LoraTrainConfig": "train_config",
    "PersonaAgents": "persona_agents",
    "RemoteRater": "remote",
    "RemoteRaterConfig": "remote",
    "export_vllm": "remote",
    "RaterSession": "rater",
    "StatefulRater": "rater",
    "load_world": "agent_artifact",
    "train_agents": "training",
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
    "BackboneConfig",
    "BiasRater",
    "FidelityReport",
    "GlobalMeanRater",
    "ItemMeanRater",
    "LoraTrainConfig",
    "MFConfig",
    "MFRater",
    "PersonaAgents",
    "PointRater",
    "Rater",
    "RaterSession",
    "RemoteRater",
    "RemoteRaterConfig",
    "StatefulRater",
    "UserMeanRater",
    "check_distribution",
    "evaluate_fidelity",
    "expected_rating",
    "export_vllm",
    "load_world",
    "make_rater",
    "median_rating",
    "most_likely_rating",
    "rating_histogram",
    "sample_ratings",
    "train_agents",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
