"""Which recommenders the gap benchmark compares, and how each is built.

A benchmark policy is named ``random``, ``pop``, ``recbole:<Model>`` (any RecBole general or sequential
model, in RecBole's spelling after :func:`parse_policies`) or ``rl:DIR`` (an RL policy trained on the split and
saved by :meth:`~recsim_personas.recommenders.rl.RLPolicy.save`, e.g. by
``benchmarks/rl_reinforce.py``). :func:`recbole_config` gives a RecBole model's
training settings (:data:`RECBOLE_DEFAULTS`, small enough for 2 CPU cores); :func:`build_policy` returns a
ready policy — a RecBole model trained on the split's history, or reloaded from ``models_dir/<Model>`` when a
model trained on the same split with the same settings is there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsim_personas.errors import ConfigError, unknown_choice

if TYPE_CHECKING:
    from recsim_personas.data.split import Split
    from recsim_personas.envs.world import World

logger = logging.getLogger(__name__)

RECBOLE_PREFIX = "recbole:"
RL_PREFIX = "rl:"
DEFAULT_POLICIES = ("random", "pop", "recbole:BPR", "recbole:LightGCN", "recbole:SASRec")
RECBOLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "Pop": {"epochs": 1},
    "BPR": {"epochs": 40, "learning_rate": 5e-3},
    "LightGCN": {"epochs": 30, "learning_rate": 5e-3},
    "SASRec": {
        "epochs": 8,
        "embedding_size": 32,
        "max_seq_len": 20,
        "params": {"n_layers": 1, "n_heads": 1, "inner_size": 64, "hidden_act": "relu"},
    },
}
"""Training settings of the benchmark per RecBole model (small enough for 2 CPU cores; others: defaults)."""


def parse_policies(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"random,pop,recbole:BPR"`` → validated, de-duplicated policy names (RecBole names in RecBole's case).

    Raises:
        ConfigError: an empty list, an unknown policy (with close matches) or an unknown RecBole model.
    """
    from recsim_personas.recommenders.policies import POLICIES

    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s and s.strip()]
    if not names:
        raise ConfigError(
            f"expected a comma-separated list of policies such as 'random,pop,recbole:BPR', got {spec!r}."
        )
    out: list[str] = []
    for name in names:
        if name.lower().startswith(RECBOLE_PREFIX):
            from recsim_personas.recommenders.recbole_policy import resolve_model

            model, _ = resolve_model(name[len(RECBOLE_PREFIX) :])
            name = RECBOLE_PREFIX + model
        elif name.startswith(RL_PREFIX):
            from recsim_personas.artifacts import has_manifest

            if not has_manifest(name[len(RL_PREFIX) :]):
                raise ConfigError(
                    f"policy {name!r}: {name[len(RL_PREFIX) :]!r} is not a saved RL policy (no manifest.json there)."
                    " Fix: train one with `python benchmarks/rl_reinforce.py --out DIR`."
                )
        elif name not in POLICIES:
            raise unknown_choice("policy", name, [*POLICIES, RECBOLE_PREFIX + "<Model>", RL_PREFIX + "DIR"])
        if name in out:
            raise ConfigError(f"policy {name!r} is listed twice.")
        out.append(name)
    return tuple(out)


def recbole_config(model: str, seed: int = 0, epochs: int | None = None) -> Any:
    """The benchmark's :class:`RecBoleConfig` for ``model`` (:data:`RECBOLE_DEFAULTS`, ``epochs`` overrides)."""
    from recsim_personas.recommenders.recbole_policy import RecBoleConfig, resolve_model

    model, _ = resolve_model(model)
    settings = dict(RECBOLE_DEFAULTS.get(model, {}))
    if epochs is not None:
        settings["epochs"] = epochs
    return RecBoleConfig(model=model, seed=seed, **settings)


def policy_config(name: str, seed: int = 0, epochs: int | None = None) -> Any:
    """The training config of benchmark policy ``name``: a :class:`RecBoleConfig` for ``recbole:<Model>``,
    ``None`` for the built-in policies (their only setting is the slate size)."""
    if not name.startswith(RECBOLE_PREFIX):
        return None
    return recbole_config(name[len(RECBOLE_PREFIX) :], seed=seed, epochs=epochs)


def build_policy(
    name: str,
    split: Split,
    world: World,
    *,
    slate_size: int = 10,
    seed: int = 0,
    epochs: int | None = None,
    models_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Any:
    """A ready policy by benchmark name; RecBole models are trained (or reloaded from ``models_dir/<Model>``
    when a model trained on this split with the same settings is there) and saved to ``models_dir``.

    Raises:
        RecsimPersonasError: a policy that cannot be built (e.g. ``PolicyError`` for a RecBole model that fails
            to train).
    """
    from recsim_personas.recommenders.policies import make_policy

    if name.startswith(RL_PREFIX):
        from recsim_personas.recommenders.rl import RLPolicy

        return RLPolicy.load(
            name[len(RL_PREFIX) :], split_id=split.split_id, n_items=world.n_items, slate_size=slate_size, name=name
        )
    config = policy_config(name, seed=seed, epochs=epochs)
    if config is None:
        return make_policy(
            name, n_items=world.n_items, slate_size=slate_size, popularity=world.item_popularity, seed=seed
        )
    from recsim_personas.artifacts import has_manifest
    from recsim_personas.errors import ArtifactError
    from recsim_personas.recommenders.recbole_policy import RecBolePolicy, read_model_manifest, train_recbole

    target = Path(models_dir) / config.model if models_dir is not None else None
    if target is not None and has_manifest(target):
        try:
            manifest = read_model_manifest(target)
            if manifest["split_id"] == split.split_id and manifest["config"] == config.to_dict():
                logger.info("reusing %s from %s", name, target)
                policy = RecBolePolicy.load(target, split, slate_size=slate_size)
                policy.train_seconds = manifest.get("train_seconds")
                return policy
        except ArtifactError as exc:
            logger.warning("not reusing %s: %s", target, exc)
    policy = train_recbole(split, config, slate_size=slate_size, progress=progress)
    if target is not None:
        policy.save(target)
    return policy
