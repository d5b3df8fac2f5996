"""The fidelity suite of one simulator (a split's world: rater + choice model + sessions): run, summarise, write.

:func:`run_fidelity` scores the world's users on the preference-alignment test (:mod:`.alignment`) and, for each
given policy, simulates ``days`` days per seed and compares what the users did with what the real ones did in
the test part (:mod:`.behaviour`). :func:`write_fidelity` writes ``fidelity.json``, ``fidelity.md`` and
``fidelity.png``; every sentence of the markdown is computed from the figures beside it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recsim_personas.envs.world import World

logger = logging.getLogger(__name__)


def choice_description(world: World) -> dict[str, Any]:
    """What the world's choice model is: its ``name`` and, for a fitted one, the split, config and fit report."""
    from recsim_personas.choice.model import HandsetChoice

    choice = world.choice or HandsetChoice()
    describe = getattr(choice, "describe", None)
    out = dict(describe()) if callable(describe) else {"name": getattr(choice, "name", type(choice).__name__)}
    report = getattr(choice, "report", None)
    if report:
        out["fit"] = {k: report[k] for k in ("validation", "positives", "negatives", "seconds") if k in report}
    return out


def alignment_summary(alignment: Mapping[str, Any]) -> dict[str, Any]:
    """Per ratio: the model's ``accuracy``, ``f1`` (at 0.5), ``f1_sampled``, ``roc_auc`` and each baseline's ROC-AUC."""
    return {
        m: {
            "accuracy": r["model"]["threshold"]["accuracy"],
            "f1": r["model"]["threshold"]["f1"],
            "f1_sampled": r["model"]["sampled"]["f1"],
            "roc_auc": r["model"]["roc_auc"],
            "log_likelihood": r["model"]["log_likelihood"],
            "baselines": {b: v["roc_auc"] for b, v in r["baselines"].items()},
        }
        for m, r in alignment["ratios"].items()
    }


def run_fidelity(
    split: Any,
    *,
    rater: Any = "bias",
    choice: Any = "fitted",
    world: World | None = None,
    policies: Sequence[str] = ("random", "pop"),
    seeds: Sequence[int] = (0,),
    days: int = 30,
    ratios: Sequence[int] = (1, 3, 9),
    session_config: Any = None,
    max_users: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The fidelity suite of a split's simulator.

    Args:
        split: a split directory or a loaded ``Split``.
        rater: the users' rater (a classical rater's name, ``agents:DIR``, ``userllm:DIR`` or a Rater); not with
            ``world``.
        choice: ``"fitted"``, ``"handset"`` or a choice-model directory; not with ``world``.
        world: an already built world of ``split`` (instead of ``rater`` and ``choice``).
        policies: built-in policies (``random``, ``pop``) or ``recbole:<Model>`` whose sessions are compared.
        seeds: simulation seeds per policy.
        days: simulated days per seed.
        ratios: random movies per real one in the alignment test.
        session_config: behaviour coefficients (default: those that go with the world's choice model).
        max_users: score the preference alignment on a seeded sample of at most this many users (for slow
            raters such as persona agents); the simulations run every user.
        progress: progress bars.

    Returns:
        ``split_id``, ``rater``, ``choice``, ``session``, ``alignment`` (:func:`~.alignment.preference_alignment`),
        ``policies`` (per policy: ``behaviour`` and ``replay``), ``seconds``.
    """
    from recsim_personas import ENV_IDS
    from recsim_personas.data import load_split
    from recsim_personas.envs.session import SessionConfig
    from recsim_personas.envs.world import make_world
    from recsim_personas.fidelity.alignment import preference_alignment
    from recsim_personas.fidelity.behaviour import behaviour_statistics, replay_check
    from recsim_personas.recommenders.gap_policies import build_policy, parse_policies
    from recsim_personas.recommenders.simulated import evaluate_policy

    t0 = time.perf_counter()
    split = load_split(split)
    names = parse_policies(policies)
    if world is None:
        world = make_world(split, rater, choice=choice)
    session = session_config or world.session_config or SessionConfig()
    alignment = preference_alignment(
        world,
        split.test,
        ratios=tuple(int(m) for m in ratios),
        train=split.train,
        history=split.history(),
        seed=int(seeds[0]),
        max_users=max_users,
        progress=progress,
    )
    per_policy: dict[str, Any] = {}
    for name in names:
        policy = build_policy(name, split, world, slate_size=10, seed=int(seeds[0]), progress=progress)
        sim = evaluate_policy(
            ENV_IDS[0],
            policy,
            tuple(seeds),
            days=days,
            world=world,
            session_config=session,
            progress=progress,
            test=split.test,
        )
        per_policy[name] = {
            "behaviour": behaviour_statistics(world, split.test, sim.watched, sim.sessions, train=split.train),
            "replay": replay_check(sim, split.test),
            "simulated": {m: v.to_dict() for m, v in sim.metrics.items()},
        }
    return {
        "split_id": split.split_id,
        "rater": world.rater_name,
        "choice": choice_description(world),
        "session": session.to_dict(),
        "seeds": [int(s) for s in seeds],
        "days": int(days),
        "users": world.n_users,
        "alignment": alignment,
        "alignment_summary": alignment_summary(alignment),
        "policies": per_policy,
        "seconds": time.perf_counter() - t0,
    }


def render_fidelity(report: Mapping[str, Any]) -> str:
    """``fidelity.md`` of a :func:`run_fidelity` report."""
    from recsim_personas.recommenders.gap_markdown import BEHAVIOUR_LABELS, alignment_lines, num

    choice = report["choice"]
    lines = [
        f"# Simulator fidelity — rater {report['rater']}, {choice.get('name')} choice model",
        "",
        f"Split `{str(report['split_id'])[:12]}`, {report['users']} simulated users; simulations of"
        f" {report['days']} days, seeds {', '.join(map(str, report['seeds']))}.",
        "",
        "## Preference alignment",
        "",
        *alignment_lines(report["alignment_summary"], choice),
    ]
    fit = choice.get("fit")
    if fit:
        v = fit["validation"]
        lines += [
            "",
            f"On the validation users of its fit, the choice model's mean log-likelihood of a real choice is"
            f" {v['fitted']['log_likelihood']:.3f} against {v['handset']['log_likelihood']:.3f} for the hand-set"
            f" formula ({v['fitted']['log_likelihood'] - v['handset']['log_likelihood']:+.3f} per choice).",
        ]
    lines += ["", "## Behaviour, real test part vs simulated", ""]
    columns = ["measure", *(f"{p}" for p in report["policies"])]
    rows = []
    for key, label in BEHAVIOUR_LABELS.items():
        rows.append([label, *(num(p["behaviour"]["distances"].get(key), 3) for p in report["policies"].values())])
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += [
        "",
        "| real vs simulated | real | " + " | ".join(report["policies"]) + " |",
        "|---|---|" + "---|" * len(report["policies"]),
    ]
    first = next(iter(report["policies"].values()), None)
    if first is not None:
        real = first["behaviour"]["real"]
        for key, label in (
            ("mean_rating", "mean rating"),
            ("items_per_session", "items per session"),
            ("sessions_per_user", "sessions per user"),
            ("log_popularity", "mean log(1 + popularity)"),
            ("off_taste_share", "off-taste share"),
            ("users_without_watch", "users without a watch"),
            ("genre_js_floor", "genre JS of a perfect simulator with as many picks"),
            ("rating_w1_per_user_floor", "rating W1 per user of a perfect simulator with as many picks"),
        ):
            sims = [num(p["behaviour"]["simulated"].get(key), 3) for p in report["policies"].values()]
            lines.append(f"| {label} | {num(real.get(key), 3)} | " + " | ".join(sims) + " |")
    lines += ["", "## Replay check", ""]
    for name, p in report["policies"].items():
        r = p["replay"]
        if r["shown"]:
            watched = r["watched_test_share_of_shown_test"]
            other = r["watch_rate_other"]
            share = 100 * (r["shown_test_share"] or 0)
            text = f"- {name}: {r['shown_test']:,} of {r['shown']:,} shown movies ({share:.2f}%) were movies the real"
            text += " user rated in the test part;"
            if watched is not None:
                text += f" the simulated users watched {100 * watched:.1f}% of those"
                text += f" and {100 * (other or 0):.1f}% of the others."
            else:
                text += " none of them was shown."
            lines.append(text)
    return "\n".join(lines) + "\n"


def plot_fidelity(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """``fidelity.png``: ROC-AUC of the model and the baselines per ratio, and the behaviour distances per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from recsim_personas.recommenders.gap_markdown import BASELINE_LABELS, BEHAVIOUR_LABELS

    summary = report["alignment_summary"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ratios = list(summary)
    names = ["model", *BASELINE_LABELS]
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        values = [summary[m]["roc_auc"] if name == "model" else summary[m]["baselines"][name] for m in ratios]
        ax1.bar(np.arange(len(ratios)) + k * width, values, width, label=name)
    ax1.set_xticks(np.arange(len(ratios)) + 0.4 - width / 2, [f"1:{m}" for m in ratios])
    ax1.set_ylim(0.4, 1.0)
    ax1.set_ylabel("ROC-AUC")
    ax1.set_title("preference alignment (real : random)")
    ax1.legend(fontsize=8)
    policies = list(report["policies"])
    keys = list(BEHAVIOUR_LABELS)
    for k, p in enumerate(policies):
        d = report["policies"][p]["behaviour"]["distances"]
        ax2.barh(
            np.arange(len(keys)) + k * 0.8 / max(len(policies), 1),
            [d.get(x) or 0.0 for x in keys],
            0.8 / max(len(policies), 1),
            label=p,
        )
    ax2.set_yticks(np.arange(len(keys)) + 0.4, [BEHAVIOUR_LABELS[x] for x in keys])
    ax2.set_xscale("symlog", linthresh=0.1)
    ax2.set_title("behaviour distance, real vs simulated (smaller is closer)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110, format="png")
    plt.close(fig)
    return out


def write_fidelity(report: Mapping[str, Any], out: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``fidelity.json``, ``fidelity.md`` and ``fidelity.png`` into ``out`` (atomically each)."""
    from recsim_personas._io import atomic_path, atomic_write_text, write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "fidelity.json", dict(report))
    atomic_write_text(out / "fidelity.md", render_fidelity(report))
    with atomic_path(out / "fidelity.png") as tmp:
        plot_fidelity(report, tmp)
    return {"json": out / "fidelity.json", "md": out / "fidelity.md", "png": out / "fidelity.png"}
