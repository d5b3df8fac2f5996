from __future__ import annotations

import math

import pandas as pd
import pytest

from recsim_personas.data.catalog import ItemCatalog, display_title, render_description
from recsim_personas.errors import DataFormatError, RecsimPersonasError, UnknownItemError


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("Toy Story (1995)", "Toy Story"),
        ("American President, The (1995)", "The American President"),
        ("Enfer, L' (1994)", "L'Enfer"),
        ("unknown", "unknown"),
        ("Seven (Se7en) (1995)", "Seven (Se7en)"),
    ],
)
def test_display_title(raw, shown):
    assert display_title(raw) == shown


def test_full_description_has_the_papers_shape():
    text = render_description(
        "Toy Story (1995)",
        1995,
        ["Animation", "Children's", "Comedy"],
        3.8777,
        summary="Toys come alive.",
        cast=["Tom Hanks", "Tim Allen", "Don Rickles", "Jim Varney", "Extra Person"],
    )
    assert text == (
        "The movie Toy Story was released in the year 1995 is of Animation, Children's, Comedy genre with"
        " historical average rating of 3.88. Toys come alive. Starring Tom Hanks, Tim Allen, Don Rickles,"
        " Jim Varney."
    )


def test_missing_text_degrades_gracefully():
    bare = render_description("Obscure (1970)", None, [], math.nan)
    assert bare == "The movie Obscure is of unknown genre with no historical ratings."
    from_plot = render_description("X (1990)", 1990, ["Drama"], 2.5, plot="First sentence. Second one.")
    assert from_plot.endswith("rating of 2.50. First sentence.")
    assert "Starring" not in from_plot


def test_catalog_lookup_and_cache():
    items = pd.DataFrame(
        {
            "item_id": [2, 1],
            "title": ["B (1990)", "A (1980)"],
            "year": pd.array([1990, None], dtype="Int64"),
            "genres": [["Drama"], ["unknown"]],
            "hist_avg_rating": [4.0, float("nan")],
            "cast": [["Someone"], []],
        }
    )
    cat = ItemCatalog(items)
    assert len(cat) == 2 and 1 in cat and 3 not in cat
    assert cat.item_ids.tolist() == [1, 2]
    assert cat.describe(1) == "The movie A is of unknown genre with no historical ratings."
    assert cat.describe_many([2]) == [
        "The movie B was released in the year 1990 is of Drama genre with historical average rating of 4.00."
        " Starring Someone."
    ]
    assert cat.describe(2) is cat.describe_many([2])[0]  # rendered once, then cached
    with pytest.raises(UnknownItemError, match=r"item_id 3 is not in the catalog \(2 items, ids 1\.\.2\)\. Fix: "):
        cat.describe(3)
    assert issubclass(UnknownItemError, KeyError) and issubclass(UnknownItemError, RecsimPersonasError)
    with pytest.raises(DataFormatError, match=r"lacks columns \['genres'\].*Fix: "):
        ItemCatalog(items.drop(columns="genres"))


@pytest.mark.movielens
def test_real_catalog_descriptions(ml100k_split):
    cat = ml100k_split.catalog()
    assert len(cat) == 1682
    toy = cat.describe(1)
    assert toy.startswith("The movie Toy Story was released in the year 1995 is of Animation, Children's, Comedy")
    assert "Starring Tom Hanks" in toy
    assert all(isinstance(cat.describe(i), str) for i in cat.item_ids)
