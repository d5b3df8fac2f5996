"""The offline distiller: Ms and Ml derived from the data alone, deterministically.

No language model is involved. For each user, from the train part of the split:

- **Ms**: the three trait sections are the trait sentences of the user's levels (see
  :data:`~recsim_personas.personas.traits.TRAIT_SENTENCES`) with the numbers behind them; the profile
  description (first person) names the favourite and least favourite genres (mean rating relative to the
  user's own mean, genres with at least 3 ratings), the favourite decades, directors and actors who appear
  at least twice among well-rated movies, rating habits relative to the historical averages (generous or
  harsh, share of 5s and of 1–2s), and example favourite and disliked titles.
- **Ml**: one reason per train interaction, in the paper's shape ("I rated movie X (year) as r because
  ..."), grounded in the movie's genres, cast and director, the user's tastes above, and how the rating
  compares with the movie's historical average.

The output has the same format as :class:`~recsim_personas.personas.llm_distiller.LLMDistiller`'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recsim_personas.data.catalog import display_title
from recsim_personas.data.protocol import Split
from recsim_personas.personas.store import Persona
from recsim_personas.personas.traits import TRAIT_SENTENCES, compute_traits

logger = logging.getLogger(__name__)

RATING_WORDS = {1: "I hated it", 2: "I disliked it", 3: "I found it just okay", 4: "I liked it", 5: "I loved it"}


@dataclass(frozen=True)
class Tastes:
    """What a user likes and dislikes, as found in its train ratings."""

    mean: float
    liked_genres: list[str]
    disliked_genres: list[str]
    decades: list[str]
    liked_people: list[str]
    disliked_people: list[str]
    generosity: float  # mean (rating - historical average)
    share_5: float
    share_low: float
    favourites: list[str]
    dislikes: list[str]


def _join_items(frame: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    cols = ["item_id", "title", "year", "genres", "cast", "director", "hist_avg_rating"]
    return frame.merge(items[cols], on="item_id", how="left")


def tastes_of(rated: pd.DataFrame) -> Tastes:
    """Tastes from one user's rated items (joined with item metadata)."""
    mean = float(rated["rating"].mean())
    g = rated[["rating", "genres"]].explode("genres")
    g = g[g["genres"].notna() & (g["genres"] != "unknown")]
    stats = g.groupby("genres")["rating"].agg(["mean", "size"])
    stats = stats[stats["size"] >= 3].assign(rel=lambda s: s["mean"] - mean)
    stats = stats.sort_values(["rel", "size"], ascending=[False, False])
    liked = stats[stats["rel"] > 0.1].index[:3].tolist()
    disliked = stats[stats["rel"] < -0.2].sort_values("rel").index[:2].tolist()

    decades = (rated["year"].dropna().astype(int) // 10 * 10).value_counts()
    top_decades = [f"{d}s" for d in decades.index[:2]] if len(decades) else []

    people_rows = []
    for row in rated.itertuples(index=False):
        for person in list(row.director or [])[:1] + list(row.cast or [])[:4]:
            people_rows.append((person, row.rating))
    people = pd.DataFrame(people_rows, columns=["person", "rating"])
    liked_people: list[str] = []
    disliked_people: list[str] = []
    if not people.empty:
        ps = people.groupby("person")["rating"].agg(["mean", "size"])
        ps = ps[ps["size"] >= 2]
        liked_people = ps[ps["mean"] >= mean + 0.3].sort_values(["size", "mean"], ascending=False).index[:4].tolist()
        disliked_people = (
            ps[ps["mean"] <= mean - 0.5].sort_values(["size", "mean"], ascending=[False, True]).index[:2].tolist()
        )

    dev = (rated["rating"] - rated["hist_avg_rating"]).dropna()
    ranked = rated.assign(dev=rated["rating"] - rated["hist_avg_rating"].fillna(mean))
    fav = ranked.sort_values(["rating", "dev"], ascending=False).head(3)
    bad = ranked[ranked["rating"] <= 2].sort_values(["rating", "dev"]).head(2)
    return Tastes(
        mean=mean,
        liked_genres=liked,
        disliked_genres=disliked,
        decades=top_decades,
        liked_people=liked_people,
        disliked_people=disliked_people,
        generosity=float(dev.mean()) if len(dev) else 0.0,
        share_5=float((rated["rating"] == 5).mean()),
        share_low=float((rated["rating"] <= 2).mean()),
        favourites=[display_title(t) for t in fav["title"]],
        dislikes=[display_title(t) for t in bad["title"]],
    )


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _a(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def describe_profile(t: Tastes, n: int) -> str:
    """The first-person profile description built from a user's tastes."""
    parts = []
    if t.liked_genres:
        parts.append(f"I am most drawn to {_join(t.liked_genres)} movies, which I rate above my usual level.")
    else:
        parts.append("No single genre stands out in my ratings; the individual movie matters more to me.")
    if t.disliked_genres:
        parts.append(f"{_join(t.disliked_genres)} movies rarely win me over.")
    if t.decades:
        parts.append(f"Most of what I watch comes from the {_join(t.decades)}.")
    if t.liked_people:
        parts.append(f"I tend to enjoy movies with {_join(t.liked_people)}.")
    if t.disliked_people:
        parts.append(f"Movies with {_join(t.disliked_people)} have tended to disappoint me.")
    if t.generosity > 0.25:
        habit = "I am a generous rater: I usually rate movies higher than other viewers do"
    elif t.generosity < -0.25:
        habit = "I am a demanding rater: I usually rate movies lower than other viewers do"
    else:
        habit = "My ratings are usually close to what other viewers think"
    parts.append(
        f"{habit} (my average is {t.mean:.2f} over {n} movies; {t.share_5:.0%} of my ratings are 5 stars and"
        f" {t.share_low:.0%} are 1 or 2)."
    )
    if t.favourites:
        parts.append(f"Favourites of mine include {_join(t.favourites)}.")
    if t.dislikes:
        parts.append(f"I did not care for {_join(t.dislikes)}.")
    return " ".join(parts)


def reason_for(row: Any, t: Tastes) -> str:
    """The Ml reason of one rated movie (``row`` has title, year, genres, cast, director, rating, hist avg)."""
    title = display_title(row.title)
    year = f" ({int(row.year)})" if row.year is not None and not pd.isna(row.year) else ""
    rating = int(row.rating)
    clauses: list[str] = []
    genres = [g for g in (row.genres or []) if g != "unknown"]
    fav = [g for g in genres if g in t.liked_genres]
    bad = [g for g in genres if g in t.disliked_genres]
    if fav and rating >= 4:
        clauses.append(f"it is {_a(_join(fav))} movie, a kind I enjoy")
    elif bad and rating <= 3:
        clauses.append(f"{_join(bad)} movies rarely work for me")
    elif fav and rating <= 2:
        clauses.append(f"even though I usually like {_join(fav)} movies, this one fell flat")
    elif genres:
        verdict = "worked" if rating >= 4 else "did not really work" if rating <= 2 else "was fine"
        clauses.append(f"as {_a(_join(genres))} movie it {verdict} for me")
    people = [p for p in list(row.director or [])[:1] + list(row.cast or [])[:4]]
    liked = [p for p in people if p in t.liked_people]
    disliked = [p for p in people if p in t.disliked_people]
    if liked and rating >= 3:
        clauses.append(f"I like the work of {_join(liked)}")
    elif disliked and rating <= 3:
        clauses.append(f"{_join(disliked)} seldom convince me")
    avg = row.hist_avg_rating
    if avg is not None and not pd.isna(avg):
        diff = rating - float(avg)
        if diff >= 0.75:
            clauses.append(f"I liked it more than most viewers, who average {avg:.2f}")
        elif diff <= -0.75:
            clauses.append(f"I liked it less than most viewers, who average {avg:.2f}")
        else:
            clauses.append(f"my verdict is close to its reputation of {avg:.2f}")
    head = f"I rated movie {title}{year} as {rating}"
    body = f" because {'; '.join(clauses)}." if clauses else "."
    return f"{head}{body} Overall, {RATING_WORDS[rating]}."


class StatsDistiller:
    """Offline, deterministic Ms/Ml from the data (see the module docstring)."""

    name = "stats"

    def config(self) -> dict[str, Any]:
        return {"distiller": self.name, "version": 1}

    def needs_rerun(self, manifest: dict[str, Any]) -> bool:
        """Never: the offline personas of a split are always the same."""
        return False

    def distill(
        self, split: Split, user_ids: list[int] | None = None, progress: bool = False
    ) -> tuple[list[Persona], pd.DataFrame, dict[str, Any]]:
        """Ms for every selected user and one Ml per train interaction.

        Returns:
            (personas, memories, usage): memories has the columns of ``memories.parquet``; usage is empty.
        """
        from tqdm.auto import tqdm

        traits, cutoffs = compute_traits(split.train, split.items)
        traits = traits.set_index("user_id")
        train = _join_items(split.train, split.items)
        if user_ids is not None:
            train = train[train["user_id"].isin(user_ids)]
        personas: list[Persona] = []
        memory_parts: list[pd.DataFrame] = []
        groups = train.groupby("user_id", sort=True)
        for uid, rated in tqdm(groups, total=groups.ngroups, desc="personas", unit="user", disable=not progress):
            tr = traits.loc[uid]
            t = tastes_of(rated)
            personas.append(
                Persona(
                    user_id=int(uid),
                    activity=f"{TRAIT_SENTENCES['activity'][tr.activity_level]}"
                    f" (You rated {int(tr.activity)} movies in this period.)",
                    conformity=f"{TRAIT_SENTENCES['conformity'][tr.conformity_level]} (Mean squared gap between"
                    f" your ratings and the movies' averages: {tr.conformity:.2f}.)",
                    diversity=f"{TRAIT_SENTENCES['diversity'][tr.diversity_level]}"
                    f" ({int(tr.diversity)} genres make up 80% of what you watch.)",
                    description=describe_profile(t, len(rated)),
                    traits=_traits_dict(tr, cutoffs),
                    provenance={"distiller": self.name, "version": 1, "ratings_used": len(rated)},
                )
            )
            memory_parts.append(
                pd.DataFrame(
                    {
                        "user_id": rated["user_id"].to_numpy(),
                        "item_id": rated["item_id"].to_numpy(),
                        "rating": rated["rating"].to_numpy(),
                        "timestamp": rated["timestamp"].to_numpy(),
                        "reason": [reason_for(r, t) for r in rated.itertuples(index=False)],
                        "source": "stats",
                    }
                )
            )
        memories = pd.concat(memory_parts, ignore_index=True) if memory_parts else pd.DataFrame(columns=["user_id"])
        return personas, memories, {}


def _traits_dict(row: pd.Series, cutoffs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        out[str(key)] = value.item() if isinstance(value, np.generic) else value
    out["cutoffs"] = cutoffs.to_dict()
    return out


__all__ = ["StatsDistiller", "Tastes", "describe_profile", "reason_for", "tastes_of"]
