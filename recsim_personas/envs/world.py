"""What a simulation is built from, and how it is built from a split.

:class:`World` holds the immutable inputs of a simulation — the split's items (ids, historical averages,
genres, popularity), its users (ids, :class:`Traits`, top genres, train histories) and the rater — with its
arrays made read-only, so every population and environment built on it can share it. :func:`make_world` does
all the loading once (split, trait statistics, item arrays, fitting or loading the rater); populations and
environments are then cheap to create and reset from it. Nothing is cached globally: keep the world and pass
it around (``gym.make(..., world=world)``) to share one load between environments. What a simulation changes
never lives here: each :class:`~recsim_personas.envs.model.Population` owns its state and its own rater session.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from recsim_personas.errors import ConfigError, UnknownUserError, unknown_choice

if TYPE_CHECKING:
    from recsim_personas.agents.rater import Rater
    from recsim_personas.choice.config import ChoiceConfig
    from recsim_personas.choice.model import ChoiceModel
    from recsim_personas.data.protocol import Split
    from recsim_personas.envs.session import SessionConfig

logger = logging.getLogger(__name__)

AGENTS_PREFIX = "agents:"
"""Prefix of a trained agents directory as a rater: persona agents or, by its manifest, a USER-LLM agent."""
USERLLM_PREFIX = "userllm:"
"""Prefix of a trained USER-LLM agent directory as a rater (``recsim-personas userllm train --out DIR``)."""
REMOTE_PREFIX = "remote:"
"""``remote:FILE.json``: trained causal persona agents rated by an OpenAI-compatible server (:func:`load_remote`)."""


@dataclass(frozen=True)
class Traits:
    """A user's trait statistics (see :mod:`recsim_personas.personas.traits`).

    Attributes:
        activity: number of train ratings.
        conformity: mean squared deviation from the items' historical averages (small = conformist).
        diversity: number of genres covering 80% of the user's genre share.
        activity_level, conformity_level, diversity_level: ``"low"`` / ``"medium"`` / ``"high"``.
        activity_score, conformity_score, diversity_score: percentile ranks in [0, 1] (1 = most active,
            most conformist, most diverse); the simulation uses these.
        top_genres: the genres covering 80% of the user's genre share, largest first.
    """

    activity: int
    conformity: float
    diversity: int
    activity_level: str
    conformity_level: str
    diversity_level: str
    activity_score: float
    conformity_score: float
    diversity_score: float
    top_genres: tuple[str, ...]

    def scores(self) -> np.ndarray:
        """``[activity_score, conformity_score, diversity_score]``, float64 (3,)."""
        return np.array([self.activity_score, self.conformity_score, self.diversity_score], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class World:
    """The immutable inputs of a simulation, shared by every population and environment built on them.

    Its arrays are made read-only; a :class:`Population` copies what it changes.

    Items are addressed by their *index* ``j`` into :attr:`item_ids` (ascending ids), users by their index
    ``u`` into :attr:`user_ids` (ascending ids).

    Attributes:
        item_ids: item ids, int64 (n_items,), ascending.
        item_hist_avg: historical average rating of each item (items nobody rated get the mean rating of the
            history), float64 (n_items,).
        item_genres: genre bitmask of each item (bit ``g`` = ``genres[g]``), int64 (n_items,).
        item_popularity: number of ratings of each item in the split's history, int64 (n_items,).
        genres: genre names, in bit order.
        user_ids: user ids, int64 (n_users,), ascending.
        traits: each user's :class:`~recsim_personas.envs.agents.Traits`.
        trait_scores: ``[activity, conformity, diversity]`` scores, float64 (n_users, 3) in [0, 1].
        user_top_genres: bitmask of each user's top genres, int64 (n_users,).
        history_items: per user, the item indices of its train ratings, oldest first (int64 arrays).
        history_ratings: per user, the matching ratings 1..5 (int64 arrays).
        rater: the rater every user shares.
        split_id: id of the split it was built from, if known.
        choice: how the users decide what to watch (a :class:`~recsim_personas.choice.model.ChoiceModel`:
            the fitted model by default, or the hand-set formula).
        session_config: the session behaviour fitted with the choice model
            (:class:`~recsim_personas.envs.session.SessionConfig`), the environments' default; ``None`` keeps
            the hand-set defaults.
        user_ref_day: the day (unix days) of each user's latest train rating, int64 (n_users,).
        user_genre_share: each user's genre shares over its train ratings (columns in :attr:`genres` order),
            float64 (n_users, n_genres).
    """

    item_ids: np.ndarray
    item_hist_avg: np.ndarray
    item_genres: np.ndarray
    item_popularity: np.ndarray
    genres: tuple[str, ...]
    user_ids: np.ndarray
    traits: tuple[Traits, ...]
    trait_scores: np.ndarray
    user_top_genres: np.ndarray
    history_items: tuple[np.ndarray, ...]
    history_ratings: tuple[np.ndarray, ...]
    rater: Rater
    split_id: str | None = None
    choice: ChoiceModel | None = None
    session_config: SessionConfig | None = None
    user_ref_day: np.ndarray | None = None
    user_genre_share: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Shared by every population and environment built on it: make the arrays read-only.
        for value in vars(self).values():
            for arr in value if isinstance(value, tuple) else (value,):
                if isinstance(arr, np.ndarray):
                    arr.flags.writeable = False

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def rater_name(self) -> str:
        return str(getattr(self.rater, "name", type(self.rater).__name__))

    def user_index(self, user_id: Any) -> int:
        """Index of ``user_id`` in :attr:`user_ids`.

        Raises:
            UnknownUserError: the id is not one of this world's users (the message lists a few valid ones).
        """
        try:
            uid = int(user_id)
            ok = uid == user_id and not isinstance(user_id, bool | np.bool_)
        except (TypeError, ValueError):
            ok = False
        if ok:
            pos = int(np.searchsorted(self.user_ids, uid))
            if pos < len(self.user_ids) and self.user_ids[pos] == uid:
                return pos
        some = ", ".join(str(int(u)) for u in self.user_ids[:5])
        raise UnknownUserError(
            f"user id {user_id!r} is not one of the {self.n_users} simulated users (valid ids include {some}, …)."
            " Fix: pick an id from env.unwrapped.user_ids."
        )


def parse_rater(spec: str) -> tuple[Literal["classical", "agents", "userllm", "remote"], str]:
    """What a rater spec names, checked without loading anything.

    Args:
        spec: a classical rater's name, ``agents:DIR``, ``userllm:DIR`` or ``remote:FILE.json``.

    Returns:
        ``("classical", name)``, ``("agents", DIR)`` (persona agents or a USER-LLM agent, told apart by the
        directory's manifest: :func:`agents_kind`), ``("userllm", DIR)`` or ``("remote", FILE)``.

    Raises:
        ConfigError: an unknown name (the message lists the classical raters and both prefixes) or an empty path.
    """
    from recsim_personas.agents.classical import CLASSICAL_RATERS

    prefixes = (
        ("agents", AGENTS_PREFIX, "agents", "runs/agents", "agents train"),
        ("userllm", USERLLM_PREFIX, "USER-LLM agent", "runs/userllm", "userllm train"),
        ("remote", REMOTE_PREFIX, "remote rater's JSON", "remote.json", "agents export --format vllm"),
    )
    for kind, prefix, what, example, command in prefixes:
        if spec.startswith(prefix):
            path = spec[len(prefix) :]
            if not path:
                raise ConfigError(
                    f"rater {spec!r}: name the {what} directory, e.g. {prefix}{example} (from `recsim-personas"
                    f" {command} --out DIR`)."
                )
            return kind, path
    if spec not in CLASSICAL_RATERS:
        raise unknown_choice(
            "rater", spec, [*CLASSICAL_RATERS, AGENTS_PREFIX + "DIR", USERLLM_PREFIX + "DIR", REMOTE_PREFIX + "FILE"]
        )
    return "classical", spec


def agents_kind(path: str | os.PathLike[str]) -> Literal["userllm", "persona"]:
    """``"userllm"`` when ``path``'s manifest names a USER-LLM agent (its ``format``), else ``"persona"``.

    A directory without a readable manifest counts as persona agents, whose loader then says what is wrong.
    """
    import json
    from pathlib import Path

    from recsim_personas.agents.userllm.agent import USERLLM
    from recsim_personas.artifacts import MANIFEST

    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "persona"
    return "userllm" if isinstance(manifest, dict) and manifest.get("format") == USERLLM.format else "persona"


def load_agents(spec: str, split: Split) -> Rater:
    """The trained agents ``agents:DIR`` or ``userllm:DIR`` names, checked against ``split``.

    Raises:
        ConfigError: not an agents spec, or an empty path.
        ArtifactError: agents of another split, or an unfinished or altered agents directory.
    """
    kind, path = parse_rater(spec)
    if kind == "classical":
        raise ConfigError(
            f"{spec!r} names a classical rater, not trained agents. Fix: {AGENTS_PREFIX}DIR or {USERLLM_PREFIX}DIR."
        )
    if kind == "remote":
        return load_remote(path, split)
    if kind == "userllm" or agents_kind(path) == "userllm":
        from recsim_personas.agents.userllm.agent import UserLLMAgent

        agent = UserLLMAgent.load(path, split_id=split.split_id)
        logger.info("loaded the USER-LLM agent %s from %s", agent.name, path)
        return agent
    from recsim_personas.agents.persona_agents import PersonaAgents

    agents = PersonaAgents.open(path, split)
    logger.info("loaded persona agents %s from %s", agents.name, path)
    return agents


def read_remote_spec(path: str | os.PathLike[str]) -> tuple[str, Any]:
    """The trained agents directory and the :class:`~recsim_personas.agents.remote.RemoteRaterConfig` a
    ``remote:FILE.json`` names: ``{"agents": DIR, "base_url": URL, ...}`` (every other key a RemoteRaterConfig
    field; ``"served_names"`` may also be the directory ``agents export --format vllm`` wrote).

    Raises:
        ConfigError: the file cannot be read, is not a JSON object, lacks ``agents`` or holds an unknown field.
    """
    import json
    from pathlib import Path

    from recsim_personas.agents.remote import RemoteRaterConfig, read_served_names

    example = '{"agents": "runs/agents/causal", "base_url": "http://localhost:8000/v1", "served_names": "SERVE_DIR"}'
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"remote rater file {str(path)!r}: cannot read it as JSON ({exc}). Fix: write {example}."
        ) from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("agents"), str):
        raise ConfigError(
            f"remote rater file {str(path)!r} must be a JSON object with an 'agents' directory, e.g. {example}."
        )
    fields = {k: v for k, v in spec.items() if k != "agents"}
    if isinstance(fields.get("served_names"), str):
        fields["served_names"] = read_served_names(fields["served_names"])
    return spec["agents"], RemoteRaterConfig.from_dict(fields)


def load_remote(path: str | os.PathLike[str], split: Split) -> Rater:
    """The :class:`~recsim_personas.agents.remote.RemoteRater` a ``remote:FILE.json`` names (see
    :func:`read_remote_spec`), its agents checked against ``split``."""
    from recsim_personas.agents.remote import RemoteRater

    agents_dir, config = read_remote_spec(path)
    rater = RemoteRater.open(agents_dir, split, config)
    logger.info("remote rater for %s at %s", agents_dir, config.base_url)
    return rater


def resolve_rater(rater: str | Rater, split: Split) -> Rater:
    """A ready rater: a classical rater's name (fitted on ``split.history()``), trained agents, or a rater object
    as is.

    ``agents:DIR`` loads the agents trained into DIR, of the kind its manifest records: persona agents
    (``recsim-personas agents train --out DIR``;
    :meth:`~recsim_personas.agents.persona_agents.PersonaAgents.open`: every persona adapter, the persona set
    and the memory index recorded in their manifest) or a USER-LLM agent. ``userllm:DIR`` loads a USER-LLM agent
    (``recsim-personas userllm train --out DIR``;
    :meth:`~recsim_personas.agents.userllm.agent.UserLLMAgent.load`). Either is checked against ``split``.

    Raises:
        ConfigError: an unknown name, an empty ``agents:`` or ``userllm:`` path, or an object without a
            ``predict`` method.
        ArtifactError: agents of another split, or an unfinished or altered agents directory.
    """
    from recsim_personas.agents.classical import make_rater

    if isinstance(rater, str):
        kind, name = parse_rater(rater)
        if kind != "classical":
            return load_agents(rater, split)
        fitted = make_rater(name).fit(split.history())
        logger.info("fitted the %s rater on %d history ratings", name, len(split.train) + len(split.background))
        return fitted
    if not callable(getattr(rater, "predict", None)):
        raise ConfigError(
            f"rater must be a classical rater's name or an object with predict(users, items), got {rater!r}."
        )
    return rater


CHOICES: tuple[str, ...] = ("fitted", "handset")
"""The named choice models (any other string is read as the path of a saved ``choice/`` directory)."""


def resolve_choice(
    choice: str | os.PathLike[str] | ChoiceModel, split: Split, config: ChoiceConfig | None = None
) -> tuple[ChoiceModel, SessionConfig | None]:
    """A ready choice model and the session behaviour that goes with it.

    Args:
        choice: ``"fitted"`` (fitted on ``split``'s history now, with the session behaviour; a few seconds on
            ML-100K), ``"handset"`` (the hand-set formula and the hand-set sessions), the path of a directory
            saved by ``recsim-personas choice fit`` (checked against ``split``), or a ChoiceModel object.
        split: the loaded split.
        config: fitting settings for ``"fitted"``.

    Returns:
        ``(choice model, fitted SessionConfig or None)``.

    Raises:
        ConfigError: an unknown name that is not a directory either, or ``config`` without ``"fitted"``.
        ArtifactError: a saved choice model that is damaged or was fitted on another split.
    """
    from recsim_personas.choice.model import FittedChoice, HandsetChoice

    if config is not None and choice != "fitted":
        raise ConfigError(f"choice_config applies to choice='fitted' only, not to choice={choice!r}.")
    if isinstance(choice, str) and choice == "handset":
        return HandsetChoice(), None
    if isinstance(choice, str) and choice == "fitted":
        from recsim_personas.choice.fit import fit_choice

        return fit_choice(split, config), choice_sessions(choice, split)
    if isinstance(choice, str | os.PathLike):
        if not os.path.exists(choice):
            raise unknown_choice("choice", str(choice), [*CHOICES, "a directory from `recsim-personas choice fit`"])
        model = FittedChoice.load(choice, split_id=split.manifest.get("split_id"))
        return model, choice_sessions(choice, split)
    if not callable(getattr(choice, "session", None)):
        raise ConfigError(
            f"choice must be {' or '.join(map(repr, CHOICES))}, a choice-model directory or a ChoiceModel (an"
            f" object with session(world)), got {choice!r}."
        )
    return choice, None


def choice_sessions(choice: Any, split: Any) -> SessionConfig | None:
    """The session behaviour that goes with a choice model, without fitting the choice model: ``None`` for
    ``"handset"`` (the hand-set defaults) or a choice-model object, fitted on ``split``'s timestamps for
    ``"fitted"`` (hand-set, ``None``, on an implicit dataset: its file-order pseudo-time has no sessions), read
    from a ``choice fit`` directory's ``sessions.json`` (``None`` when it has none).

    Raises:
        ArtifactError: a damaged ``sessions.json`` (:meth:`~recsim_personas.envs.calibration.SessionFit.load`).
    """
    from pathlib import Path

    from recsim_personas.choice.model import SESSIONS_FILE
    from recsim_personas.envs.calibration import SessionFit, fit_split_sessions

    if choice == "handset" or not isinstance(choice, str | os.PathLike):
        return None
    if choice == "fitted":
        fit = fit_split_sessions(split)
        return None if fit is None else fit.config
    path = Path(choice) / SESSIONS_FILE
    return SessionFit.load(path).config if path.is_file() else None


def make_world(
    split: str | os.PathLike[str] | Split,
    rater: str | Rater = "bias",
    *,
    choice: str | os.PathLike[str] | ChoiceModel = "fitted",
    choice_config: ChoiceConfig | None = None,
) -> World:
    """Load everything a simulation needs from a split, once.

    Args:
        split: a split directory (from ``recsim-personas data prepare``) or a loaded ``Split``.
        rater: ``"bias"`` (default) or another classical rater's name — fitted on ``split.history()``
            (train + background, no test rating) —, ``"agents:DIR"`` (trained persona agents, or a USER-LLM
            agent), ``"userllm:DIR"`` (a trained USER-LLM agent), or any object implementing the Rater protocol.
        choice: how the users decide what to watch — ``"fitted"`` (default: the choice model and the session
            behaviour fitted on the split's history, :func:`resolve_choice`), ``"handset"``, a saved choice
            model's directory, or a ChoiceModel.
        choice_config: fitting settings for ``choice="fitted"``.

    Returns:
        the :class:`~recsim_personas.envs.model.World`: the split's items (ascending ids), its sampled users
        (ascending ids) with their traits and train histories, and the rater.
    """

    from recsim_personas.data import load_split
    from recsim_personas.personas.traits import COVERAGE, compute_traits, genre_share

    split = load_split(split)
    history = split.history()
    fitted = resolve_rater(rater, split)

    items = split.items.sort_values("item_id", kind="mergesort").reset_index(drop=True)
    item_ids = items["item_id"].to_numpy(dtype=np.int64)
    mean_rating = float(history["rating"].mean()) if len(history) else 3.0
    hist_avg = items["hist_avg_rating"].astype("float64").fillna(mean_rating).to_numpy()
    genre_lists = [[g for g in gs if g != "unknown"] or ["unknown"] for gs in items["genres"]]
    genres = tuple(sorted({g for gs in genre_lists for g in gs}))
    if len(genres) > 62:
        raise ConfigError(f"the split's items have {len(genres)} genres; at most 62 are supported.")
    bit = {g: 1 << k for k, g in enumerate(genres)}
    item_genres = np.array([sum(bit[g] for g in set(gs)) for gs in genre_lists], dtype=np.int64)
    popularity = (
        history["item_id"].value_counts().reindex(item_ids, fill_value=0).to_numpy(dtype=np.int64)
        if len(history)
        else np.zeros(len(item_ids), dtype=np.int64)
    )

    user_ids = np.sort(split.user_ids)
    frame, _ = compute_traits(split.train, split.items)
    frame = frame.set_index("user_id")
    missing = np.setdiff1d(user_ids, frame.index.to_numpy())
    if missing.size:
        raise ConfigError(f"users {missing[:5].tolist()} of the split have no train ratings; cannot simulate them.")
    frame = frame.loc[user_ids]
    shares = genre_share(split.train, split.items).reindex(user_ids).fillna(0.0)
    traits, top_bits = [], np.zeros(len(user_ids), dtype=np.int64)
    for u, (uid, row) in enumerate(frame.iterrows()):
        share = shares.loc[uid].sort_values(ascending=False, kind="mergesort")
        n_top = int(np.searchsorted(np.cumsum(share.to_numpy()), COVERAGE - 1e-12) + 1)
        top = tuple(str(g) for g in share.index[:n_top] if share[g] > 0)
        top_bits[u] = sum(bit.get(g, 0) for g in top)
        traits.append(
            Traits(
                activity=int(row["activity"]),
                conformity=float(row["conformity"]),
                diversity=int(row["diversity"]),
                activity_level=str(row["activity_level"]),
                conformity_level=str(row["conformity_level"]),
                diversity_level=str(row["diversity_level"]),
                activity_score=float(row["activity_score"]),
                conformity_score=float(row["conformity_score"]),
                diversity_score=float(row["diversity_score"]),
                top_genres=top,
            )
        )
    scores = np.clip(np.stack([t.scores() for t in traits]), 0.0, 1.0)

    train = split.train.sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")
    t_users = train["user_id"].to_numpy(dtype=np.int64)
    t_items = np.searchsorted(item_ids, train["item_id"].to_numpy(dtype=np.int64))
    t_ratings = train["rating"].to_numpy(dtype=np.int64)
    bounds = np.searchsorted(t_users, np.concatenate([user_ids, [np.iinfo(np.int64).max]]))
    hist_items = tuple(t_items[bounds[u] : bounds[u + 1]].copy() for u in range(len(user_ids)))
    hist_ratings = tuple(t_ratings[bounds[u] : bounds[u + 1]].copy() for u in range(len(user_ids)))

    from recsim_personas.choice.features import SECONDS_PER_DAY, genre_shares, item_genre_matrix

    last = train.groupby("user_id")["timestamp"].max().reindex(user_ids).to_numpy(dtype=np.int64)
    t_rows = np.repeat(np.arange(len(user_ids)), [len(h) for h in hist_items])
    shares_matrix = genre_shares(
        t_rows, np.concatenate(hist_items), item_genre_matrix(item_genres, len(genres)), len(user_ids)
    )
    choice_model, fitted_sessions = resolve_choice(choice, split, choice_config)

    split_id = split.manifest.get("split_id")
    logger.info("world: %d users, %d items, %d genres, rater %s", len(user_ids), len(item_ids), len(genres), rater)
    world = World(
        item_ids=item_ids,
        item_hist_avg=hist_avg,
        item_genres=item_genres,
        item_popularity=popularity,
        genres=genres,
        user_ids=user_ids,
        traits=tuple(traits),
        trait_scores=scores,
        user_top_genres=top_bits,
        history_items=hist_items,
        history_ratings=hist_ratings,
        rater=fitted,
        split_id=split_id,
        choice=choice_model,
        session_config=fitted_sessions,
        user_ref_day=last // SECONDS_PER_DAY,
        user_genre_share=shares_matrix,
    )
    bind = getattr(choice_model, "bind", None)
    return dataclasses.replace(world, choice=bind(world)) if callable(bind) else world


def as_world(
    split: Any = None, rater: str | Rater | None = None, world: World | None = None, choice: Any = None
) -> World:
    """Exactly one of ``split`` (loaded with :func:`make_world`; ``rater`` defaults to ``"bias"``, ``choice`` to
    ``"fitted"``) or a world.

    A :class:`World` may also be passed as ``split``. A world already holds its rater, so giving ``rater``
    too is refused; it holds its choice model too, so a ``choice`` naming another one is refused.
    """
    if isinstance(split, World):
        split, world = None, split
    if world is not None:
        if split is not None:
            raise ConfigError("pass either split=... or world=..., not both.")
        if rater is not None:
            raise ConfigError("a World already holds its rater; do not pass rater=... with it.")
        if not isinstance(world, World):
            raise ConfigError(f"world must be a World (from make_world), got {type(world).__name__}.")
        held = getattr(world.choice, "name", "handset")
        if choice is not None and choice != held:
            raise ConfigError(
                f"the world's users choose with the {held!r} choice model, not {choice!r}. Fix: build the world"
                f" with make_world(split, choice={choice!r}), or do not pass choice= with world=."
            )
        return world
    if split is None:
        raise ConfigError(
            "no split given. Fix: pass split=DIR (a directory from `recsim-personas data prepare`), a Split, or"
            " world=make_world(...)."
        )
    return make_world(split, "bias" if rater is None else rater, choice="fitted" if choice is None else choice)
