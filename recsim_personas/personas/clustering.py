"""Persona clustering: KMeans++ on the Ms embeddings, K chosen by the elbow method.

For every K in ``k_min..k_max`` scikit-learn's ``KMeans(init="k-means++", n_init=10)`` is fitted on the
L2-normalised embeddings of the users' Ms texts; its inertia (within-cluster sum of squares) and the
silhouette score are recorded.

**Knee rule.** K and the inertia are rescaled to [0, 1] (first K → 0, last → 1; largest inertia → 1,
smallest → 0). The chosen K is the one whose rescaled point lies farthest *below* the straight line from
the first to the last point — where the curve bends most (the Kneedle difference curve for a decreasing,
convex curve). Ties go to the smaller K; if no point lies below the line (no bend), the smallest K is
chosen. ``k`` in the config overrides the rule.

Output (``<personas>/clusters/``): ``clusters.json`` (K, how it was chosen, the assignment of every user,
cluster sizes, the inertia and silhouette curves, the embedder and the persona set it was made from),
``clusters.md``, ``elbow.png`` and, written last, ``manifest.json`` (:data:`CLUSTERS`, by
:mod:`recsim_personas.artifacts`: the persona set's manifest digest, the embedder, K, the sha256 of the three
files and the library versions). A clusters directory written before it had a manifest is still read (its
``clusters.json`` says what it is and which persona set it was made from).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsim_personas._io import atomic_path, atomic_write_text, write_json
from recsim_personas.artifacts import (
    MANIFEST,
    ArtifactKind,
    check_input,
    has_manifest,
    manifest_digest,
    read_manifest,
    verify_files,
    write_manifest,
)
from recsim_personas.errors import ArtifactError, ConfigError
from recsim_personas.personas.store import PersonaSet

logger = logging.getLogger(__name__)

CLUSTERS_FORMAT = "recsim-personas/clusters"
CLUSTERS = ArtifactKind(
    CLUSTERS_FORMAT, 1, "persona clustering", "run `recsim-personas personas cluster --personas DIR`"
)
"""The clusters artifact (``clusters.json`` + ``clusters.md`` + ``elbow.png`` + ``manifest.json``)."""
_REFRESH = "rerun `recsim-personas personas cluster`"


@dataclass(frozen=True)
class ClusterConfig:
    """How the personas are clustered: KMeans++ over a K range, K by the knee rule unless fixed.

    Attributes:
        k: a fixed number of clusters, or None to choose it by the knee rule.
        k_min: the smallest K the knee rule tries.
        k_max: the largest K the knee rule tries (capped at the number of personas - 1).
        n_init: KMeans restarts per K.
        seed: KMeans random state.
    """

    k: int | None = None
    k_min: int = 2
    k_max: int = 10
    n_init: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k is not None and self.k < 1:
            raise ConfigError(f"ClusterConfig.k must be >= 1 or None (auto), got {self.k!r}.")
        if not 1 <= self.k_min < self.k_max:
            raise ConfigError(f"need 1 <= k_min < k_max, got k_min={self.k_min!r}, k_max={self.k_max!r}.")
        if self.n_init < 1:
            raise ConfigError(f"ClusterConfig.n_init must be >= 1, got {self.n_init!r}.")


def knee(ks: list[int], inertias: list[float]) -> int:
    """The K where the inertia curve bends most (see the module docstring)."""
    if len(ks) < 3:
        return ks[0]
    x = (np.asarray(ks, float) - ks[0]) / (ks[-1] - ks[0])
    y = np.asarray(inertias, float)
    span = y.max() - y.min()
    if span <= 0:
        return ks[0]
    y = (y - y.min()) / span
    line = y[0] + (y[-1] - y[0]) * x
    below = line - y
    best = int(np.argmax(below))
    return ks[best] if below[best] > 1e-9 else ks[0]


@dataclass
class ClusterResult:
    """Clustering of a persona set."""

    k: int
    chosen_by: str
    labels: dict[int, int]
    sizes: list[int]
    ks: list[int] = field(default_factory=list)
    inertias: list[float] = field(default_factory=list)
    silhouettes: list[float | None] = field(default_factory=list)
    embedder: str = ""
    personas_manifest: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    def cluster_of(self, user_id: int) -> int:
        try:
            return self.labels[int(user_id)]
        except KeyError:
            raise ArtifactError(f"user_id {user_id} is not in the clustering ({len(self.labels)} users).") from None

    def to_markdown(self) -> str:
        lines = [f"K = {self.k} ({self.chosen_by}); embedder {self.embedder}", "", "| cluster | users |", "|---|---|"]
        lines += [f"| {c} | {n} |" for c, n in enumerate(self.sizes)]
        if self.ks:
            lines += ["", "| K | inertia | silhouette |", "|---|---|---|"]
            for k, i, s in zip(self.ks, self.inertias, self.silhouettes, strict=True):
                lines.append(f"| {k}{' ←' if k == self.k else ''} | {i:.3f} | {'' if s is None else f'{s:.4f}'} |")
        return "\n".join(lines)


def cluster_embeddings(x: np.ndarray, config: ClusterConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Run the K search and the final KMeans on embeddings ``x`` (n, d). Returns (labels (n,), curves)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(x)
    if n < 2:
        raise ConfigError(f"need at least 2 personas to cluster, got {n}.")
    k_max = min(config.k_max, n - 1)
    ks = list(range(config.k_min, k_max + 1)) if config.k_min <= k_max else []
    inertias: list[float] = []
    silhouettes: list[float | None] = []
    fitted: dict[int, np.ndarray] = {}
    for k in ks:
        km = KMeans(n_clusters=k, init="k-means++", n_init=config.n_init, random_state=config.seed).fit(x)
        inertias.append(float(km.inertia_))
        fitted[k] = km.labels_
        silhouettes.append(float(silhouette_score(x, km.labels_)) if 1 < k < n else None)
    if config.k is not None:
        if config.k > n:
            raise ConfigError(f"k={config.k} is larger than the number of personas ({n}).")
        k, chosen_by = config.k, "fixed (--k)"
        labels = fitted.get(k)
        if labels is None:
            labels = (
                KMeans(n_clusters=k, init="k-means++", n_init=config.n_init, random_state=config.seed).fit(x).labels_
            )
    else:
        if not ks:
            raise ConfigError(f"the K range {config.k_min}..{config.k_max} is empty for {n} personas; pass --k.")
        k, chosen_by = knee(ks, inertias), f"elbow over K={ks[0]}..{ks[-1]}"
        labels = fitted[k]
    return np.asarray(labels), {
        "k": k,
        "chosen_by": chosen_by,
        "ks": ks,
        "inertias": inertias,
        "silhouettes": silhouettes,
    }


def cluster_personas(pset: PersonaSet, embedder: Any, config: ClusterConfig | None = None) -> ClusterResult:
    """Embed every persona's Ms text and cluster the users."""
    config = config or ClusterConfig()
    uids = pset.user_ids
    x = embedder.embed([pset.personas[u].ms_text() for u in uids])
    labels, curves = cluster_embeddings(x, config)
    sizes = np.bincount(labels, minlength=curves["k"]).tolist()
    return ClusterResult(
        labels={int(u): int(c) for u, c in zip(uids, labels, strict=True)},
        sizes=[int(s) for s in sizes],
        embedder=embedder.model_id,
        personas_manifest=manifest_digest(pset.path) if pset.path else "",
        config=asdict(config),
        **curves,
    )


def save_clusters(result: ClusterResult, out_dir: str | os.PathLike[str], *, plot: bool = True) -> dict[str, Path]:
    """Write ``clusters.json``, ``clusters.md``, ``elbow.png`` and (last) ``manifest.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # unfinished until the new manifest lands
    paths = {"json": out / "clusters.json", "md": out / "clusters.md"}
    payload = {"format": CLUSTERS_FORMAT, **asdict(result)}
    payload["labels"] = {str(u): c for u, c in result.labels.items()}
    write_json(paths["json"], payload)
    atomic_write_text(paths["md"], "# Persona clusters\n\n" + result.to_markdown() + "\n")
    if plot and result.ks:
        paths["png"] = out / "elbow.png"
        plot_elbow(result, paths["png"])
    else:
        (out / "elbow.png").unlink(missing_ok=True)
    body = {"k": result.k, "embedder": result.embedder, "personas_manifest": result.personas_manifest}
    files = [p.name for p in paths.values()]
    write_manifest(out, CLUSTERS, body, files=files, libraries=("scikit-learn", "matplotlib"))
    return paths


def load_clusters(path: str | os.PathLike[str], pset: PersonaSet | None = None) -> ClusterResult:
    """Load a clustering: a clusters directory (verified against its manifest) or a ``clusters.json`` file.

    Args:
        path: the directory (``<personas>/clusters``) or its ``clusters.json``.
        pset: the persona set it must have been made from (refused when it was made from another version).

    Raises:
        ArtifactError: nothing there, a damaged or altered clustering, or one made from other personas.
    """
    path = Path(path)
    if path.is_file():
        where, recorded = path, None
    elif has_manifest(path) or not (path / "clusters.json").is_file():
        manifest = read_manifest(path, CLUSTERS, required=("personas_manifest", "files"))
        verify_files(path, manifest, CLUSTERS, fix=_REFRESH)
        where, recorded = path / "clusters.json", manifest["personas_manifest"]
    else:  # written before clusters had a manifest: clusters.json alone says what it is
        where, recorded = path / "clusters.json", None
    result = _read_result(where)
    if pset is not None and pset.path is not None:
        made_from = result.personas_manifest if recorded is None else recorded
        check_input(path, CLUSTERS, "persona set", made_from, manifest_digest(pset.path), _REFRESH)
    return result


def _read_result(f: Path) -> ClusterResult:
    try:
        d = json.loads(f.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{f}: expected the JSON of a persona clustering, got {exc}. Fix: {_REFRESH}.") from None
    got = d.pop("format", None) if isinstance(d, dict) else f"a JSON {type(d).__name__}"
    if got != CLUSTERS_FORMAT:
        raise ArtifactError(
            f"{f}: expected a clusters file (format {CLUSTERS_FORMAT!r}), got {got!r}. Fix: {_REFRESH}."
        )
    try:
        d["labels"] = {int(u): int(c) for u, c in d["labels"].items()}
        return ClusterResult(**d)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactError(f"{f}: the clusters file is damaged ({exc!r}). Fix: {_REFRESH}.") from None


def plot_elbow(result: ClusterResult, path: str | os.PathLike[str]) -> None:
    """Inertia and silhouette against K, with the chosen K marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(result.ks, result.inertias, "o-", color="tab:blue", label="inertia")
    ax.set_xlabel("K (number of persona clusters)")
    ax.set_ylabel("inertia (within-cluster sum of squares)", color="tab:blue")
    if result.k in result.ks:
        i = result.ks.index(result.k)
        ax.plot(
            [result.k], [result.inertias[i]], "o", ms=14, mfc="none", mec="red", mew=2, label=f"chosen K = {result.k}"
        )
    sil = [(k, s) for k, s in zip(result.ks, result.silhouettes, strict=True) if s is not None]
    if sil:
        ax2 = ax.twinx()
        ax2.plot([k for k, _ in sil], [s for _, s in sil], "s--", color="tab:orange", label="silhouette")
        ax2.set_ylabel("silhouette score", color="tab:orange")
    ax.set_title(f"Elbow method: K = {result.k} ({result.chosen_by})")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
