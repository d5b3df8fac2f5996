"""What the view page shows, gathered from a run directory into one JSON-ready dict.

A *run directory* is any of:

- a gap benchmark's ``--out`` (``gap.json``, and ``traces/<policy>/seed-<s>`` when run with ``--trace-users``);
- a single trace (``simulate --trace DIR``);
- a directory holding either of them and a fidelity suite's ``fidelity.json`` (found anywhere below it).

:func:`collect` reads what is there and, for the traced users, the real side from the split the traces name (or
``split=``): the user's demographics, trait scores and levels, persona text and cluster (with ``personas=``, a
``personas build`` directory), the train history and the held-out test ratings, beside what the simulations had
them watch. Every table is kept small: only traced users, and only the movies they were shown or rated.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from recsim_personas.errors import ArtifactError, ConfigError

logger = logging.getLogger(__name__)

MAX_TRACES = 64
"""At most this many traces are gathered (the first, by policy and seed)."""


def find_traces(run: Path) -> list[Path]:
    """Trace directories in ``run`` (itself, or below it), sorted by path."""
    from recsim_personas.artifacts import MANIFEST

    found = []
    for manifest in sorted(run.rglob(MANIFEST)):
        try:
            fmt = json.loads(manifest.read_text(encoding="utf-8")).get("format")
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if fmt == "recsim-personas/trace":
            found.append(manifest.parent)
    return found


def _first(run: Path, name: str) -> Path | None:
    direct = run / name
    if direct.is_file():
        return direct
    return next(iter(sorted(run.rglob(name))), None)


def collect(
    run: str | os.PathLike[str],
    *,
    split: str | os.PathLike[str] | None = None,
    personas: str | os.PathLike[str] | None = None,
    fidelity: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Everything the page shows (see the module docstring).

    Args:
        run: the run directory.
        split: the split of the traced users (default: the one the traces record).
        personas: a personas directory (persona texts; its ``clusters/`` for the clusters).
        fidelity: a fidelity suite's ``fidelity.json`` or its directory (default: one found in ``run``).

    Returns:
        ``{"run", "gap", "fidelity", "traces": [{"policy", "seed", "users", "pages", "shown", ...}], "users":
        {id: {...}}, "items": {id: {"title", "genres"}}, "notes": [...]}``.

    Raises:
        ConfigError: ``run`` is not a directory or holds neither a gap report, a fidelity suite nor a trace.
    """
    from recsim_personas.envs.trace import read_trace

    root = Path(run)
    if not root.is_dir():
        raise ConfigError(f"{str(root)!r} is not a directory. Fix: pass a `benchmark --out` or `simulate --trace` dir.")
    notes: list[str] = []
    gap_file, fid_file = _first(root, "gap.json"), _first(root, "fidelity.json")
    if fidelity is not None:
        fid_file = Path(fidelity) / "fidelity.json" if Path(fidelity).is_dir() else Path(fidelity)
        if not fid_file.is_file():
            raise ConfigError(f"{str(fid_file)!r} does not exist. Fix: pass the --out of `recsim-personas fidelity`.")
    gap = json.loads(gap_file.read_text(encoding="utf-8")) if gap_file else None
    fidelity = json.loads(fid_file.read_text(encoding="utf-8")) if fid_file else None
    trace_dirs = find_traces(root)
    if gap is None and fidelity is None and not trace_dirs:
        raise ConfigError(
            f"{str(root)!r} holds no gap report (gap.json), fidelity suite (fidelity.json) or trace. Fix: pass the"
            " --out of `recsim-personas benchmark` (with --trace-users N for sessions), or a `simulate --trace` dir."
        )
    if len(trace_dirs) > MAX_TRACES:
        notes.append(f"{len(trace_dirs)} traces found; the first {MAX_TRACES} are shown.")
        trace_dirs = trace_dirs[:MAX_TRACES]
    traces = []
    for d in trace_dirs:
        try:
            manifest, shown, pages = read_trace(d)
        except ArtifactError as exc:
            notes.append(f"{d}: skipped ({exc})")
            continue
        traces.append({"dir": d, "manifest": manifest, "shown": shown, "pages": pages})
    order = {p: k for k, p in enumerate((gap or {}).get("config", {}).get("policies", []))}
    traces.sort(key=lambda t: (order.get(t["manifest"].get("policy"), len(order)), int(t["manifest"].get("seed", 0))))

    split_path = split or next((t["manifest"].get("split") for t in traces if t["manifest"].get("split")), None)
    loaded = None
    if traces and split_path:
        from recsim_personas.data import load_split

        try:
            loaded = load_split(split_path)
        except (ArtifactError, OSError) as exc:
            notes.append(f"the split {split_path} could not be loaded ({exc}); real histories are not shown.")
    elif traces:
        notes.append("the traces name no split; pass --split to see the real users beside the simulated ones.")
    if loaded is not None:
        ids = {t["manifest"].get("split_id") for t in traces} - {None}
        if ids and ids != {loaded.split_id}:
            notes.append(f"the traces were made on split {sorted(ids)} but {split_path} is {loaded.split_id}.")

    traced_users = sorted({int(u) for t in traces for u in t["manifest"].get("users", [])})
    users = _users(loaded, traced_users, personas, notes) if loaded is not None else {}
    item_ids: set[int] = set()
    for t in traces:
        item_ids.update(int(i) for i in t["shown"]["item_id"].unique())
    for u in users.values():
        item_ids.update(int(i) for i, _ in u["history"])
        item_ids.update(int(i) for i, _ in u["test"])
    items = _items(loaded, item_ids) if loaded is not None else {}
    return {
        "run": str(root),
        "gap": gap,
        "fidelity": _fidelity_summary(fidelity) if fidelity else None,
        "traces": [_trace_payload(t) for t in traces],
        "users": users,
        "items": items,
        "notes": notes,
    }


def _users(split: Any, user_ids: list[int], personas: Any, notes: list[str]) -> dict[str, Any]:
    from recsim_personas.personas.traits import compute_traits

    known = set(int(u) for u in split.user_ids)
    user_ids = [u for u in user_ids if u in known]
    if not user_ids:
        return {}
    traits, _ = compute_traits(split.train, split.items)  # scores and levels are relative to all the split's users
    traits = traits.set_index("user_id")
    demo = split.users.set_index("user_id")
    texts: dict[int, str] = {}
    clusters: dict[int, int] = {}
    if personas is not None:
        from recsim_personas.personas.clustering import load_clusters
        from recsim_personas.personas.store import load_persona_set

        try:
            pset = load_persona_set(personas)
            texts = {u: pset.persona(u).ms_text() for u in user_ids if u in set(pset.user_ids)}
        except ArtifactError as exc:
            notes.append(f"personas {personas}: {exc}")
        cdir = Path(personas) / "clusters"
        if (cdir / "clusters.json").is_file():
            labels = load_clusters(cdir).labels
            clusters = {u: labels[u] for u in user_ids if u in labels}
    out: dict[str, Any] = {}
    for frame_name in ("train", "test"):
        frame = getattr(split, frame_name)
        frame = frame[frame["user_id"].isin(user_ids)].sort_values(["user_id", "timestamp"], kind="mergesort")
        for u, g in frame.groupby("user_id", sort=True):
            entry = out.setdefault(str(int(u)), {})
            key = "history" if frame_name == "train" else "test"
            entry[key] = [[int(i), int(r)] for i, r in zip(g["item_id"], g["rating"], strict=True)]
    for u in user_ids:
        entry = out.setdefault(str(u), {})
        entry.setdefault("history", [])
        entry.setdefault("test", [])
        row = traits.loc[u] if u in traits.index else None
        entry["traits"] = (
            {
                t: {"score": float(row[f"{t}_score"]), "level": str(row[f"{t}_level"]), "value": float(row[t])}
                for t in ("activity", "conformity", "diversity")
            }
            if row is not None
            else {}
        )
        d = demo.loc[u] if u in demo.index else None
        entry["demographics"] = {} if d is None else {k: _plain(d[k]) for k in ("gender", "age", "occupation")}
        entry["persona"] = texts.get(u)
        entry["cluster"] = clusters.get(u)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _items(split: Any, item_ids: set[int]) -> dict[str, Any]:
    items = split.items[split.items["item_id"].isin(sorted(item_ids))]
    return {
        str(int(i)): {"title": str(t), "genres": [str(g) for g in gs]}
        for i, t, gs in zip(items["item_id"], items["title"], items["genres"], strict=True)
    }


def _trace_payload(t: dict[str, Any]) -> dict[str, Any]:
    """A trace as compact columns (arrays of numbers), rounded where a person reads them."""
    m, shown, pages = t["manifest"], t["shown"], t["pages"]
    dist = shown[["p1", "p2", "p3", "p4", "p5"]].to_numpy(dtype=np.float64).round(4)
    return {
        "dir": str(t["dir"]),
        "policy": str(m.get("policy", "?")),
        "seed": int(m.get("seed", 0)),
        "days": m.get("days"),
        "rater": m.get("rater"),
        "users": [int(u) for u in m.get("users", [])],
        "counts": m.get("counts", {}),
        "shown": {
            "user_id": shown["user_id"].astype(int).tolist(),
            "session": shown["session"].astype(int).tolist(),
            "page": shown["page"].astype(int).tolist(),
            "position": shown["position"].astype(int).tolist(),
            "item_id": shown["item_id"].astype(int).tolist(),
            "seen": shown["seen"].astype(bool).tolist(),
            "expected": shown["expected"].round(3).tolist(),
            "p_watch": shown["p_watch"].round(4).tolist(),
            "watched": shown["watched"].astype(bool).tolist(),
            "rating": shown["rating"].astype(int).tolist(),
            "dist": dist.tolist(),
        },
        "pages": {
            "user_id": pages["user_id"].astype(int).tolist(),
            "session": pages["session"].astype(int).tolist(),
            "page": pages["page"].astype(int).tolist(),
            "day": pages["day"].astype(int).tolist(),
            "minute": pages["minute"].round(1).tolist(),
            "watched": pages["watched"].astype(int).tolist(),
            "likes": pages["likes"].astype(int).tolist(),
            "satisfaction": pages["satisfaction"].round(3).tolist(),
            "exit": pages["exit"].astype(str).tolist(),
        },
    }


def _fidelity_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The fidelity suite's figures the page plots: the alignment table and the behaviour distances."""
    ratios = report.get("alignment", {}).get("ratios", {})
    return {
        "rater": report.get("rater"),
        "choice": (report.get("choice") or {}).get("name"),
        "users": report.get("users"),
        "alignment": {
            m: {
                "roc_auc": r["model"]["roc_auc"],
                "accuracy": r["model"]["threshold"]["accuracy"],
                "baselines": {b: v["roc_auc"] for b, v in r["baselines"].items()},
            }
            for m, r in ratios.items()
        },
        "behaviour": {
            p: dict((r.get("behaviour") or {}).get("distances", {})) for p, r in (report.get("policies") or {}).items()
        },
    }
