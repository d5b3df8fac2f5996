"""The offline-vs-simulated gap report: do offline metrics rank recommenders the way simulated users do?

:func:`run_gap_benchmark` builds each policy (Random, Popular, RecBole models trained on the split's
history), measures its offline metrics on the held-out test part
(:func:`~recsim_personas.recommenders.offline.evaluate_offline`, and RecBole's own evaluator for general
RecBole models), runs the simulated population under it for several seeds
(:func:`~recsim_personas.recommenders.simulated.evaluate_policy`), and assembles a :class:`GapReport`:
both rankings, Kendall τ between the offline headline (NDCG@k) and each simulated metric, per-model
deltas, a plain-words reading, and a fidelity check of the simulator where ground truth exists (the test
ratings of the real users). :meth:`GapReport.save` writes ``gap.md``, ``gap.json`` and ``gap.png``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsim_personas._io import atomic_path, atomic_write_text, write_json
from recsim_personas.errors import ConfigError, unknown_choice
from recsim_personas.recommenders.simulated import SIM_METRICS

if TYPE_CHECKING:
    from recsim_personas.data.protocol import Split
    from recsim_personas.envs.world import World

logger = logging.getLogger(__name__)

ENV_ID = "recsim_personas/MovieLens-v0"
RECBOLE_PREFIX = "recbole:"
DEFAULT_POLICIES = ("random", "pop", "recbole:BPR", "recbole:LightGCN", "recbole:SASRec")
HEADLINE_OFFLINE = "ndcg"
HEADLINE_SIMULATED = "likes_per_user"
SIM_LABELS = {
    "mean_rating": "mean rating",
    "like_rate": "like rate",
    "watch_rate": "watch rate",
    "pages_per_session": "pages/session",
    "exit_rate": "exit rate",
    "returning": "returning",
    "likes_per_user": "likes/user",
    "coverage": "coverage",
    "shown_popularity": "shown popularity",
}
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


# ------------------------------------------------------------------------------------------- policies
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
        elif name not in POLICIES:
            raise unknown_choice("policy", name, [*POLICIES, RECBOLE_PREFIX + "<Model>"])
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
    when a model trained on this split with the same settings is there) and saved to ``models_dir``."""
    from recsim_personas.recommenders.policies import make_policy

    if not name.startswith(RECBOLE_PREFIX):
        return make_policy(
            name, n_items=world.n_items, slate_size=slate_size, popularity=world.item_popularity, seed=seed
        )
    from recsim_personas.errors import ArtifactError
    from recsim_personas.recommenders.recbole_policy import (
        RecBolePolicy,
        read_model_manifest,
        train_recbole,
    )

    config = recbole_config(name[len(RECBOLE_PREFIX) :], seed=seed, epochs=epochs)
    target = Path(models_dir) / config.model if models_dir is not None else None
    if target is not None and (target / "manifest.json").is_file():
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


# ------------------------------------------------------------------------------------------- report
@dataclass
class PolicyResult:
    """One policy's figures in the gap report."""

    name: str
    offline: dict[str, float]
    simulated: dict[str, dict[str, Any]]
    recbole: dict[str, float] | None = None
    train_seconds: float | None = None
    offline_seconds: float = 0.0
    simulated_seconds: float = 0.0
    watched_test: dict[str, Any] = field(default_factory=dict)


@dataclass
class GapReport:
    """The offline-vs-simulated comparison of several policies on one split (see the module docstring)."""

    split_id: str
    rater: str
    seeds: tuple[int, ...]
    days: int
    k: int
    users: int
    results: list[PolicyResult]
    fidelity: dict[str, Any]
    wall_seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------------------ derived
    def offline_ranking(self) -> list[str]:
        """Policy names by decreasing offline NDCG@k."""
        return [r.name for r in sorted(self.results, key=lambda r: -r.offline[HEADLINE_OFFLINE])]

    def simulated_ranking(self, metric: str = HEADLINE_SIMULATED) -> list[str]:
        """Policy names by decreasing simulated ``metric`` (mean over seeds)."""
        return [r.name for r in sorted(self.results, key=lambda r: -r.simulated[metric]["mean"])]

    def kendall(self) -> dict[str, dict[str, float | None]]:
        """Kendall τ (and its p-value) between offline NDCG@k and each simulated metric over the policies."""
        from scipy.stats import kendalltau

        x = [r.offline[HEADLINE_OFFLINE] for r in self.results]
        out: dict[str, dict[str, float | None]] = {}
        for metric in SIM_METRICS:
            y = [r.simulated[metric]["mean"] for r in self.results]
            if len(x) < 2:
                out[metric] = {"tau": None, "p_value": None}
                continue
            res = kendalltau(x, y)
            tau, p = float(res.statistic), float(res.pvalue)
            out[metric] = {"tau": None if math.isnan(tau) else tau, "p_value": None if math.isnan(p) else p}
        return out

    def deltas(self) -> list[dict[str, Any]]:
        """Per policy: offline and simulated rank, the rank shift, and the lift over the Random policy on both
        sides (headline metrics; ``None`` without a ``random`` policy)."""
        off, sim = self.offline_ranking(), self.simulated_ranking()
        base = next((r for r in self.results if r.name == "random"), None)
        rows = []
        for r in self.results:
            row: dict[str, Any] = {
                "policy": r.name,
                "offline_rank": off.index(r.name) + 1,
                "simulated_rank": sim.index(r.name) + 1,
            }
            row["rank_shift"] = row["offline_rank"] - row["simulated_rank"]
            if base is not None:
                b_off, b_sim = base.offline[HEADLINE_OFFLINE], base.simulated[HEADLINE_SIMULATED]["mean"]
                row["offline_lift"] = r.offline[HEADLINE_OFFLINE] / b_off if b_off > 0 else None
                row["simulated_lift"] = r.simulated[HEADLINE_SIMULATED]["mean"] / b_sim if b_sim > 0 else None
            rows.append(row)
        return rows

    def reading(self) -> list[str]:
        """A plain-words reading of where offline evaluation misleads (generated from the figures)."""
        return _reading(self)

    # ------------------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        return {
            "split_id": self.split_id,
            "rater": self.rater,
            "seeds": list(self.seeds),
            "days": self.days,
            "k": self.k,
            "users": self.users,
            "headline": {"offline": f"{HEADLINE_OFFLINE}@{self.k}", "simulated": HEADLINE_SIMULATED},
            "results": [
                {
                    "policy": r.name,
                    "offline": r.offline,
                    "recbole_evaluator": r.recbole,
                    "simulated": r.simulated,
                    "watched_test": r.watched_test,
                    "train_seconds": r.train_seconds,
                    "offline_seconds": r.offline_seconds,
                    "simulated_seconds": r.simulated_seconds,
                }
                for r in self.results
            ],
            "offline_ranking": self.offline_ranking(),
            "simulated_ranking": self.simulated_ranking(),
            "kendall_tau": self.kendall(),
            "deltas": self.deltas(),
            "fidelity": self.fidelity,
            "reading": self.reading(),
            "wall_seconds": self.wall_seconds,
            "versions": self.versions,
        }

    def to_markdown(self) -> str:
        k = self.k
        seeds = ", ".join(map(str, self.seeds))
        conf = "95%"
        lines = [
            f"# Offline vs simulated: {len(self.results)} recommenders on split {self.split_id[:12]}",
            "",
            f"{self.users} simulated users, rater `{self.rater}`, {self.days} days, seeds {seeds};"
            f" wall time {self.wall_seconds:.0f} s.",
            "",
            f"## Offline (held-out test part, full ranking, history excluded, k = {k})",
            "",
            f"| policy | Recall@{k} | NDCG@{k} | MRR@{k} | RecBole's evaluator (R / N / M) | train s |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.results:
            rb = "–"
            if r.recbole:
                rb = " / ".join(f"{r.recbole.get(f'{m}@{k}', float('nan')):.4f}" for m in ("recall", "ndcg", "mrr"))
            ts = "–" if r.train_seconds is None else f"{r.train_seconds:.0f}"
            lines.append(
                f"| {r.name} | {r.offline['recall']:.4f} | {r.offline['ndcg']:.4f} | {r.offline['mrr']:.4f} | {rb} |"
                f" {ts} |"
            )
        lines += [
            "",
            f"## Simulated (mean over seeds [{conf} CI])",
            "",
            "| policy | " + " | ".join(SIM_LABELS[m] for m in SIM_METRICS) + " |",
            "|---|" + "---|" * len(SIM_METRICS),
        ]
        for r in self.results:
            cells = [_ci(r.simulated[m], 1 if m in ("likes_per_user", "shown_popularity") else 3) for m in SIM_METRICS]
            lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
        tau = self.kendall()
        lines += [
            "",
            "## Rankings",
            "",
            f"- offline (NDCG@{k}): " + " > ".join(self.offline_ranking()),
            "- simulated (liked watches per user): " + " > ".join(self.simulated_ranking()),
            "",
            f"Kendall τ between offline NDCG@{k} and each simulated metric:",
            "",
            "| simulated metric | τ | p |",
            "|---|---|---|",
        ]
        for m in SIM_METRICS:
            t, p = tau[m]["tau"], tau[m]["p_value"]
            lines.append(f"| {SIM_LABELS[m]} | {_num(t, 3)} | {_num(p, 3)} |")
        lines += [
            "",
            "## Per-model deltas",
            "",
            "| policy | offline rank | simulated rank | shift | offline lift vs random | simulated lift vs random |",
            "|---|---|---|---|---|---|",
        ]
        for d in self.deltas():
            lines.append(
                f"| {d['policy']} | {d['offline_rank']} | {d['simulated_rank']} | {d['rank_shift']:+d} |"
                f" {_num(d.get('offline_lift'), 2, 'x')} | {_num(d.get('simulated_lift'), 2, 'x')} |"
            )
        lines += ["", "## Reading", ""] + [f"- {s}" for s in self.reading()]
        f = self.fidelity
        lines += ["", "## Fidelity of the simulator where ground truth exists", ""]
        rt = f["rater_on_test"]
        lines.append(
            f"- The rater on the {rt['n']:,} real test ratings: real mean {rt['real_mean']:.3f}, expected simulated"
            f" mean {rt['expected_mean']:.3f}, MAE {rt['mae']:.3f}, RMSE {rt['rmse']:.3f}; a sampled rating equals"
            f" the real one {rt['sampled_exact']:.1%} of the time; like (≥ 4) agreement {rt['like_agreement']:.1%}."
        )
        wt = f["watched_test"]
        if wt["n"]:
            lines.append(
                f"- In the simulations, {wt['n']:,} watches (all policies and seeds) were of movies the real user rated"
                f" in the test part: simulated mean {wt['sim_mean']:.3f} vs real {wt['real_mean']:.3f}, MAE"
                f" {wt['mae']:.3f}, exact {wt['exact']:.1%}, like agreement {wt['like_agreement']:.1%}."
            )
            lines += [
                "",
                "| policy | watches per seed | share of watches the real user rated in test | their sim / real mean |",
                "|---|---|---|---|",
            ]
            for r in self.results:
                w = r.watched_test
                lines.append(
                    f"| {r.name} | {w['watches_per_seed']:.0f} | {w['test_share']:.1%} |"
                    f" {_num(w.get('sim_mean'), 2)} / {_num(w.get('real_mean'), 2)} |"
                )
        lines += ["", "![offline vs simulated](gap.png)", ""]
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Scatter of offline NDCG@k against liked watches per user and mean rating (CI bars), one dot per policy."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        for ax, metric in zip(axes, ("likes_per_user", "returning"), strict=True):
            for r in self.results:
                s = r.simulated[metric]
                x = r.offline[HEADLINE_OFFLINE]
                ax.errorbar(x, s["mean"], yerr=[[s["mean"] - s["low"]], [s["high"] - s["mean"]]], fmt="o", capsize=4)
                ax.annotate(r.name, (x, s["mean"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
            ax.set_xlabel(f"offline NDCG@{self.k} (test part)")
            ax.set_ylabel(f"simulated {SIM_LABELS[metric]} ({self.days} days)")
            ax.grid(alpha=0.3)
        tau = self.kendall()[HEADLINE_SIMULATED]["tau"]
        fig.suptitle(f"offline vs simulated, split {self.split_id[:12]} (Kendall τ = {_num(tau, 2)})")
        fig.tight_layout()
        path = Path(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)
        return path

    def save(self, out: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``gap.md``, ``gap.json`` and ``gap.png`` into ``out``; returns their paths."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"markdown": out / "gap.md", "json": out / "gap.json", "png": out / "gap.png"}
        atomic_write_text(paths["markdown"], self.to_markdown() + "\n")
        write_json(paths["json"], self.to_dict())
        self.plot(paths["png"])
        return paths


def _num(value: float | None, digits: int, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}{suffix}"


def _ci(s: Mapping[str, Any], digits: int) -> str:
    return f"{s['mean']:.{digits}f} [{s['low']:.{digits}f}, {s['high']:.{digits}f}]"


def _overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return not (a["low"] > b["high"] or b["low"] > a["high"])


def _reading(rep: GapReport) -> list[str]:
    out: list[str] = []
    res = {r.name: r for r in rep.results}
    if len(res) < 2:
        return ["Only one policy: nothing to compare."]
    k = rep.k
    tau = rep.kendall()[HEADLINE_SIMULATED]["tau"]
    off, sim = rep.offline_ranking(), rep.simulated_ranking()
    if tau is None:
        verdict = "the two rankings cannot be compared (constant figures)"
    elif tau >= 0.8:
        verdict = "offline evaluation orders these recommenders almost exactly as the simulated users do"
    elif tau >= 0.4:
        verdict = "offline evaluation gets the broad order right but not every pair"
    elif tau > -0.4:
        verdict = "offline evaluation is a weak guide to what the simulated users prefer"
    else:
        verdict = "offline evaluation orders these recommenders roughly backwards relative to the simulated users"
    out.append(f"Kendall τ = {_num(tau, 2)} between NDCG@{k} and liked watches per user: {verdict}.")
    flips = []
    for i, a in enumerate(off):
        for b in off[i + 1 :]:
            if sim.index(b) < sim.index(a):
                ra, rb = res[a], res[b]
                sa, sb = ra.simulated[HEADLINE_SIMULATED], rb.simulated[HEADLINE_SIMULATED]
                noise = (
                    "within the seed-to-seed noise (the intervals overlap)"
                    if _overlap(sa, sb)
                    else "a difference larger than the seed-to-seed noise"
                )
                flips.append(
                    f"Offline, {a} beats {b} (NDCG@{k} {ra.offline['ndcg']:.3f} vs {rb.offline['ndcg']:.3f}), but the"
                    f" simulated users liked more of {b}'s recommendations ({sb['mean']:.1f} vs {sa['mean']:.1f} per"
                    f" user) — {noise}."
                )
    out += flips or ["No pair of recommenders swaps places between the offline and the simulated ranking."]
    if "random" in res:
        best = off[0]
        if best != "random":
            d = next(x for x in rep.deltas() if x["policy"] == best)
            if d.get("offline_lift") and d.get("simulated_lift"):
                more = "overstates" if d["offline_lift"] > d["simulated_lift"] else "understates"
                out.append(
                    f"Magnitudes: the offline winner {best} has {d['offline_lift']:.1f}× Random's NDCG@{k} but"
                    f" {d['simulated_lift']:.2f}× its liked watches per user — the offline lift {more} the gain the"
                    " simulated users feel: a random slate still holds movies they like, while offline metrics"
                    " only credit the few movies each real user happened to rate next."
                )
    ratings = [r.simulated["mean_rating"]["mean"] for r in rep.results]
    watch = [r.simulated["watch_rate"]["mean"] for r in rep.results]
    out.append(
        f"The mean rating of what users watched barely moves across recommenders ({min(ratings):.2f}–"
        f"{max(ratings):.2f}), the watch rate moves more ({min(watch):.3f}–{max(watch):.3f}): recommenders differ in"
        " how much users find worth watching and whether they come back, not in how much they enjoy it once"
        " watched — which offline accuracy does not measure at all."
    )
    cov = ", ".join(
        f"{r.name} {r.simulated['coverage']['mean']:.0%} / {r.simulated['shown_popularity']['mean']:.0f}"
        for r in rep.results
    )
    out.append(
        f"Catalogue coverage over {rep.days} days / mean popularity (history ratings) of the shown movies: {cov}."
        " Offline accuracy rewards concentrating on popular movies (they are the likeliest next ratings); whether"
        " that also pays in simulation depends on how the rater treats them."
    )
    shares = {r.name: r.watched_test.get("test_share", 0.0) for r in rep.results}
    hi = max(shares, key=shares.get)  # type: ignore[arg-type]
    out.append(
        f"Offline metrics reward showing what the real user rated next; in the simulation {hi} has the largest"
        f" share of watches that the real user also rated in the test part ({shares[hi]:.1%}), but liked watches"
        " come mostly from movies the user never rated, which the test part cannot score."
    )
    out.append(
        f"Caveat: the simulated users are only as faithful as the rater (`{rep.rater}`): see the fidelity check"
        " below; with the classical bias rater, ratings are pulled toward user and item means, which favours"
        " popular, well-rated movies in simulation."
    )
    return out


# ------------------------------------------------------------------------------------------- fidelity
def rater_fidelity(world: World, test: Any, seed: int = 0) -> dict[str, Any]:
    """The world's rater on the real test ratings: means, MAE/RMSE of the expected rating, exact and like
    agreement of a sampled rating."""
    from recsim_personas.agents.rater import RATINGS, sample_ratings

    users = test["user_id"].to_numpy(dtype=np.int64)
    items = test["item_id"].to_numpy(dtype=np.int64)
    real = test["rating"].to_numpy(dtype=np.float64)
    dist = world.rater.predict(users, items)
    expected = dist @ RATINGS
    sampled = sample_ratings(dist, np.random.default_rng(seed)).astype(np.float64)
    return {
        "n": len(real),
        "real_mean": float(real.mean()),
        "expected_mean": float(expected.mean()),
        "sampled_mean": float(sampled.mean()),
        "mae": float(np.abs(expected - real).mean()),
        "rmse": float(np.sqrt(((expected - real) ** 2).mean())),
        "sampled_exact": float((sampled == real).mean()),
        "like_agreement": float(((sampled >= 4) == (real >= 4)).mean()),
    }


def watched_test_fidelity(watched: Sequence[Mapping[str, np.ndarray]], test: Any) -> dict[str, Any]:
    """Simulated ratings of watched movies that the real user rated in the test part, against the real ones.

    Args:
        watched: per seed, ``user_id``, ``item_id``, ``rating`` arrays of the simulated watches.
        test: the split's test ratings.
    """
    import pandas as pd

    frames = [pd.DataFrame({k: np.asarray(v) for k, v in w.items()}) for w in watched]
    sim = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["user_id", "item_id", "rating"])
    n_watches = len(sim)
    merged = sim.merge(
        test[["user_id", "item_id", "rating"]].rename(columns={"rating": "real"}), on=["user_id", "item_id"]
    )
    out: dict[str, Any] = {
        "watches_per_seed": n_watches / max(len(watched), 1),
        "n": len(merged),
        "test_share": len(merged) / n_watches if n_watches else 0.0,
    }
    if len(merged):
        s, r = merged["rating"].to_numpy(float), merged["real"].to_numpy(float)
        out.update(
            sim_mean=float(s.mean()),
            real_mean=float(r.mean()),
            mae=float(np.abs(s - r).mean()),
            exact=float((s == r).mean()),
            like_agreement=float(((s >= 4) == (r >= 4)).mean()),
        )
    return out


# ------------------------------------------------------------------------------------------- driver
def run_gap_benchmark(
    split: str | os.PathLike[str] | Split,
    policies: str | Sequence[str] = DEFAULT_POLICIES,
    *,
    rater: str = "bias",
    seeds: Sequence[int] = (0, 1, 2),
    days: int = 30,
    k: int = 10,
    slate_size: int = 10,
    epochs: int | None = None,
    models_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> GapReport:
    """Offline and simulated metrics of each policy on a split, and the gap between them.

    Args:
        split: a split directory or a loaded ``Split``.
        policies: names (``random``, ``pop``, ``recbole:<Model>``), as a list or comma-separated.
        rater: the simulated users' rater: ``bias`` or another classical rater, or ``agents:DIR`` (persona
            agents; see :func:`recsim_personas.envs.world.resolve_rater`).
        seeds: simulation seeds (also the seed of the Random policy's streams and of RecBole's training:
            the first seed).
        days: simulated days per seed.
        k: offline cut-off (≤ ``slate_size``).
        slate_size: items per page.
        epochs: training epochs of every RecBole model (default: :data:`RECBOLE_DEFAULTS`).
        models_dir: where trained RecBole models are saved (and reused from when they match).
        progress: progress bars.
    """
    import scipy

    from recsim_personas import __version__
    from recsim_personas.data import load_split
    from recsim_personas.envs.world import make_world
    from recsim_personas.recommenders.offline import evaluate_offline
    from recsim_personas.recommenders.simulated import evaluate_policy

    t0 = time.perf_counter()
    names = parse_policies(policies)
    seeds = tuple(seeds)
    if not seeds:
        raise ConfigError("seeds must not be empty.")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= slate_size:
        raise ConfigError(f"k must be an integer in [1, slate_size={slate_size}], got {k!r}.")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ConfigError(f"epochs must be a positive integer, got {epochs!r}.")
    split = load_split(split)
    world = make_world(split, rater)
    results: list[PolicyResult] = []
    all_watched: list[Mapping[str, np.ndarray]] = []
    for name in names:
        logger.info("policy %s", name)
        policy = build_policy(
            name,
            split,
            world,
            slate_size=slate_size,
            seed=seeds[0],
            epochs=epochs,
            models_dir=models_dir,
            progress=progress,
        )
        t1 = time.perf_counter()
        if callable(getattr(policy, "seed", None)):
            policy.seed(np.random.SeedSequence(seeds[0]))
        offline = evaluate_offline(policy, world, split.test, k=k)
        recbole = None
        if name.startswith(RECBOLE_PREFIX) and policy.kind == "general" and k == 10:
            from recsim_personas.recommenders.recbole_policy import recbole_evaluate

            recbole = recbole_evaluate(policy, split)
        t2 = time.perf_counter()
        sim = evaluate_policy(ENV_ID, policy, seeds, days=days, world=world, progress=progress)
        all_watched += list(sim.watched)
        results.append(
            PolicyResult(
                name=name,
                offline={m: getattr(offline, m) for m in ("recall", "ndcg", "mrr")},
                simulated={m: v.to_dict() for m, v in sim.metrics.items()},
                recbole=recbole,
                train_seconds=getattr(policy, "train_seconds", None),
                offline_seconds=t2 - t1,
                simulated_seconds=sim.seconds,
                watched_test=watched_test_fidelity(sim.watched, split.test),
            )
        )
    versions = {"recsim_personas": __version__, "numpy": np.__version__, "scipy": scipy.__version__}
    if any(n.startswith(RECBOLE_PREFIX) for n in names):
        from recsim_personas.artifacts import library_versions

        versions = library_versions("recbole", "torch", "scipy")
    fidelity = {
        "rater_on_test": rater_fidelity(world, split.test, seed=seeds[0]),
        "watched_test": watched_test_fidelity(all_watched, split.test),
    }
    return GapReport(
        split_id=split.split_id,
        rater=world.rater_name,
        seeds=seeds,
        days=days,
        k=k,
        users=world.n_users,
        results=results,
        fidelity=fidelity,
        wall_seconds=time.perf_counter() - t0,
        versions=versions,
    )
