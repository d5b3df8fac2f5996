"""The off-policy evaluation report: each estimator's error against the simulator's truth, over seeds.

Per target and estimator, with ``e_s = estimate_s - truth_s`` over the seeds where the estimator is defined:
``bias = mean(e_s)``, ``rmse = sqrt(mean(e_s²))``, ``relative_rmse = rmse / mean(truth_s)`` (the figure the
report judges against ``target_error``), ``relative_error = mean(|e_s| / truth_s)`` and ``coverage`` = the share
of seeds whose interval holds ``truth_s``. Every sentence of the markdown is computed from the figures it shows;
a sentence whose premise the figures do not support is not printed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsim_personas._io import atomic_path, atomic_write_text, write_json
from recsim_personas.ope.evaluate import OPEConfig

LABELS = {
    "ips": "IPS",
    "snips": "SNIPS",
    "iips": "IIPS",
    "rips": "RIPS",
    "dm": "DM",
    "dr": "DR",
    "pi": "PI",
}


def _estimator_summary(rows: list[dict[str, Any]], name: str, target_error: float) -> dict[str, Any]:
    """Aggregate one estimator of one target over seeds (``rows``: the per-seed target dicts)."""
    pairs = [(r["estimates"].get(name, {}), r["truth"]) for r in rows]
    defined = [(e, t) for e, t in pairs if e.get("value") is not None]
    if not defined:
        reasons = sorted({e.get("reason", "not run") for e, _ in pairs})
        return {"seeds": 0, "reason": "; ".join(reasons)}
    est = np.array([e["value"] for e, _ in defined])
    truth = np.array([t for _, t in defined])
    err = est - truth
    mean_truth = float(truth.mean())
    rmse = float(np.sqrt((err**2).mean()))
    covered = [e["low"] <= t <= e["high"] for e, t in defined]
    rel_rmse = rmse / mean_truth if mean_truth else math.inf
    return {
        "seeds": len(defined),
        "estimate": float(est.mean()),
        "bias": float(err.mean()),
        "rmse": rmse,
        "relative_bias": float(err.mean()) / mean_truth if mean_truth else math.inf,
        "relative_rmse": rel_rmse,
        "relative_error": float(np.mean(np.abs(err) / np.abs(truth))),
        "coverage": float(np.mean(covered)),
        "covered": int(np.sum(covered)),
        "se": float(np.mean([e["se"] for e, _ in defined])),
        "meets_target": bool(rel_rmse <= target_error and len(defined) == len(pairs)),
    }


def summarise(config: OPEConfig, per_seed: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The report's figures from the per-seed results (see the module docstring)."""
    targets: dict[str, Any] = {}
    for name in config.target_names:
        rows = [r["targets"][name] for r in per_seed]
        on_policy = [r["on_policy"] for r in rows if r.get("on_policy") is not None]
        estimators = {e: _estimator_summary(rows, e, config.target_error) for e in config.estimators}
        ranked = sorted(
            (s["relative_rmse"], e) for e, s in estimators.items() if s["seeds"] == len(rows) and s["seeds"] > 0
        )
        targets[name] = {
            "truth": float(np.mean([r["truth"] for r in rows])),
            "truth_mc_se": float(np.mean([r["truth_se"] for r in rows])),
            "on_policy": float(np.mean(on_policy)) if on_policy else None,
            "distance": {k: float(np.mean([r["distance"][k] for r in rows])) for k in rows[0]["distance"]},
            "estimators": estimators,
            "best": ranked[0][1] if ranked else None,
        }
    met = {e: [t for t, s in targets.items() if s["estimators"][e].get("meets_target")] for e in config.estimators}
    return {
        "seeds": len(per_seed),
        "pages": int(np.mean([r["pages"] for r in per_seed])),
        "behaviour_value": float(np.mean([r["behaviour_value"] for r in per_seed])),
        "behaviour_expected": float(np.mean([r["behaviour_expected"] for r in per_seed])),
        "targets": targets,
        "met": met,
    }


def _spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(spearmanr(x, y).statistic)


@dataclass(frozen=True, eq=False)
class OPEReport:
    """The result of :func:`~recsim_personas.ope.evaluate.evaluate_offpolicy`.

    Attributes:
        config: the run's settings.
        world: the world it ran on (split id, rater, choice model, sizes).
        per_seed: each seed's results (see :func:`~recsim_personas.ope.evaluate.evaluate_seed`).
        seconds: wall time of this call.
        reused: the seeds whose results were read from an earlier run's per-seed files (not recomputed).
    """

    config: OPEConfig
    world: dict[str, Any]
    per_seed: tuple[dict[str, Any], ...]
    seconds: float = 0.0
    reused: tuple[int, ...] = ()

    @property
    def summary(self) -> dict[str, Any]:
        return summarise(self.config, self.per_seed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "world": self.world,
            "seconds": self.seconds,
            "reused_seeds": list(self.reused),
            "summary": self.summary,
            "findings": self.findings(),
            "per_seed": list(self.per_seed),
        }

    # ------------------------------------------------------------------------------------ reading
    def findings(self) -> list[str]:
        """The report's sentences, each computed from the summary's figures."""
        s, cfg = self.summary, self.config
        bar = f"{cfg.target_error:.0%}"
        out = [
            f"{s['seeds']} seeds × {s['pages']} logged pages of {cfg.behaviour}: logged page reward"
            f" {s['behaviour_value']:.3f} (the simulator's expectation at those pages {s['behaviour_expected']:.3f})."
        ]
        targets = s["targets"]
        n_t = len(targets)
        for e in cfg.estimators:
            met = s["met"][e]
            defined = [t for t in targets.values() if t["estimators"][e]["seeds"] > 0]
            if not defined:
                reason = next(iter(targets.values()))["estimators"][e].get("reason", "")
                out.append(f"{LABELS[e]} was not computed ({reason}).")
                continue
            listed = f": {', '.join(met)}" if met else ""
            out.append(
                f"{LABELS[e]} is within {bar} relative RMSE of the truth on {len(met)} of {n_t} targets{listed}."
            )
        for e in cfg.estimators:
            xs, ys = [], []
            for t in targets.values():
                if t["estimators"][e]["seeds"] > 0:
                    xs.append(t["distance"]["kl_first"])
                    ys.append(t["estimators"][e]["relative_rmse"])
            rho = _spearman(xs, ys)
            if math.isfinite(rho) and abs(rho) >= 0.5:
                way = "rises" if rho > 0 else "falls"
                out.append(
                    f"{LABELS[e]}'s relative RMSE {way} with the target's distance from the behaviour"
                    f" (first-position KL; Spearman ρ = {rho:.2f} over {len(xs)} targets)."
                )
        level = f"{cfg.confidence:.0%}"
        for e in cfg.estimators:
            cases = [(t["estimators"][e].get("covered", 0), t["estimators"][e]["seeds"]) for t in targets.values()]
            covered, total = sum(c for c, n in cases if n), sum(n for _, n in cases)
            if total:
                out.append(
                    f"{LABELS[e]}'s {level} intervals held the truth in {covered} of {total} seed × target cases"
                    f" ({covered / total:.0%})."
                )
        best = {name: t["best"] for name, t in targets.items() if t["best"]}
        if best:
            parts = [
                f"{name}: {LABELS[b]} ({targets[name]['estimators'][b]['relative_rmse']:.1%})"
                for name, b in best.items()
            ]
            out.append("Lowest relative RMSE per target — " + "; ".join(parts) + ".")
        gaps = [
            (t["on_policy"] - t["truth"]) / t["truth"]
            for t in targets.values()
            if t["on_policy"] is not None and t["truth"]
        ]
        if gaps:
            out.append(
                f"Played on-policy, the targets' page rewards differ from their values at the logged contexts by"
                f" {min(gaps):+.1%} to {max(gaps):+.1%}: a target leads users through other states than the"
                " behaviour did, which the contextual estimand does not include."
            )
        return out

    # ----------------------------------------------------------------------------------- rendering
    def to_markdown(self) -> str:
        s, cfg, w = self.summary, self.config, self.world
        lines = [
            "# Off-policy evaluation of slate recommenders against the simulator",
            "",
            f"World: split {str(w.get('split_id'))[:12]}, rater {w.get('rater')}, choice {w.get('choice')},"
            f" {w.get('n_users')} users × {w.get('n_items')} items. Behaviour `{cfg.behaviour}`; slate"
            f" {cfg.slate_size}; reward `{cfg.reward}`; seeds {', '.join(map(str, cfg.seeds))};"
            f" {cfg.pages} pages per seed; {self.seconds:.0f} s"
            + (f" (seeds {', '.join(map(str, self.reused))} read from an earlier run)." if self.reused else "."),
            "",
            "## Findings",
            "",
            *[f"- {f}" for f in self.findings()],
            "",
            "## Targets",
            "",
            "| target | truth (MC se) | on-policy | KL first | ESS item | ESS slate |",
            "|---|---|---|---|---|---|",
        ]
        for name, t in s["targets"].items():
            d = t["distance"]
            on = f"{t['on_policy']:.3f}" if t["on_policy"] is not None else "–"
            lines.append(
                f"| `{name}` | {t['truth']:.3f} ({t['truth_mc_se']:.4f}) | {on} | {d['kl_first']:.3f} |"
                f" {d['ess_item']:.3f} | {d['ess_slate']:.2e} |"
            )
        lines += [
            "",
            "## Estimators (over seeds)",
            "",
            "| target | estimator | estimate | bias | RMSE | rel. RMSE | rel. error | coverage |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, t in s["targets"].items():
            for e, row in t["estimators"].items():
                if row["seeds"] == 0:
                    lines.append(f"| `{name}` | {LABELS[e]} | – | – | – | – | – | – |")
                    continue
                mark = " ✓" if row["meets_target"] else ""
                lines.append(
                    f"| `{name}` | {LABELS[e]} | {row['estimate']:.3f} | {row['bias']:+.3f} | {row['rmse']:.3f} |"
                    f" {row['relative_rmse']:.1%}{mark} | {row['relative_error']:.1%} |"
                    f" {row['covered']}/{row['seeds']} |"
                )
        lines += [
            "",
            f"✓: relative RMSE ≤ {cfg.target_error:.0%} with every seed defined. The truth is the exact expected"
            " page reward of the target's slate at each logged context, from the simulator's rater and choice"
            " model (a Monte Carlo mean over the target's slates for a stochastic target; its standard error in"
            " brackets). KL first: KL(target ‖ behaviour) of the first-position distributions; ESS: effective"
            " sample size share of the item-marginal and slate weights.",
        ]
        return "\n".join(lines) + "\n"

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Relative RMSE against the first-position KL, a line per estimator (PNG, written atomically)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        s, cfg = self.summary, self.config
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for e in cfg.estimators:
            pts = sorted(
                (t["distance"]["kl_first"], t["estimators"][e]["relative_rmse"])
                for t in s["targets"].values()
                if t["estimators"][e]["seeds"] > 0
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=LABELS[e])
        ax.axhline(cfg.target_error, color="grey", linestyle="--", linewidth=1, label=f"{cfg.target_error:.0%}")
        ax.set_yscale("log")
        ax.set_xlabel("target's distance from the behaviour: KL of first-position distributions")
        ax.set_ylabel("relative RMSE over seeds")
        ax.set_title(f"Off-policy estimators vs the simulator ({s['seeds']} seeds × {s['pages']} pages)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)
        return path

    def save(self, out: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``report.json``, ``report.md`` and ``report.png`` into ``out`` (atomically each)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "report.json", "markdown": out / "report.md", "plot": out / "report.png"}
        write_json(paths["json"], self.to_dict())
        atomic_write_text(paths["markdown"], self.to_markdown())
        self.plot(paths["plot"])
        return paths
