"""Property-based and targeted tests of the MovieLens file readers."""

from __future__ import annotations

import codecs
import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from recsim_personas.data.readers import (
    ML1M_OCCUPATIONS,
    ML100K_GENRES,
    read_delimited,
    read_genres_ml100k,
    read_items_ml1m,
    read_items_ml100k,
    read_movie_text,
    read_ratings,
    read_users_ml1m,
    read_users_ml100k,
)
from recsim_personas.errors import DataFormatError, DataNotFoundError

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

RATING_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
SEPS = {"u.data": "\t", "ratings.dat": "::"}


@contextmanager
def written(name: str, content: str | bytes, encoding: str = "latin-1") -> Iterator[Path]:
    """A fresh temporary file ``name`` holding ``content`` (usable inside hypothesis tests)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
        yield path


def error_of(fn: Callable[[], object]) -> str:
    """The message of the DataFormatError ``fn`` raises; every such message says how to fix the problem."""
    with pytest.raises(DataFormatError) as info:
        fn()
    msg = str(info.value)
    assert "Fix: " in msg, msg
    return msg


# ------------------------------------------------------------------------------------------- ratings
rating_rows = st.lists(
    st.tuples(
        st.integers(1, 10**7),
        st.integers(1, 10**7),
        st.integers(1, 5),
        st.integers(0, 2**40),
    ),
    min_size=1,
    max_size=25,
    unique_by=lambda r: (r[0], r[1]),
)


def render(rows: list[list[str]] | list[tuple[int, ...]], sep: str, blanks: list[str] | None = None) -> str:
    """Join rows into file text; ``blanks[k]`` (blank-looking lines) goes before row k."""
    out = []
    for k, row in enumerate(rows):
        if blanks is not None:
            out.append(blanks[k])
        out.append(sep.join(str(v) for v in row) + "\n")
    return "".join(out)


blank_runs = st.lists(st.sampled_from(["", " ", "\t", "  \r"]), max_size=2).map(
    lambda xs: "".join(x + "\n" for x in xs)
)


@SETTINGS
@given(rows=rating_rows, name=st.sampled_from(sorted(SEPS)), crlf=st.booleans())
def test_ratings_round_trip(rows: list[tuple[int, int, int, int]], name: str, crlf: bool) -> None:
    text = render(rows, SEPS[name])
    if crlf:
        text = text.replace("\n", "\r\n")
    with written(name, text) as path:
        frame = read_ratings(path, sep=SEPS[name])
    assert list(frame.columns) == RATING_COLUMNS
    assert frame.dtypes.to_dict() == {"user_id": "int64", "item_id": "int64", "rating": "int8", "timestamp": "int64"}
    assert [tuple(int(v) for v in r) for r in frame.itertuples(index=False)] == rows
    assert list(frame.index) == list(range(len(rows)))


@SETTINGS
@given(data=st.data(), rows=rating_rows, name=st.sampled_from(sorted(SEPS)))
def test_blank_lines_are_ignored(data: st.DataObject, rows: list[tuple[int, ...]], name: str) -> None:
    blanks = data.draw(st.lists(blank_runs, min_size=len(rows), max_size=len(rows)))
    trailing = data.draw(blank_runs)
    with written(name, render(rows, SEPS[name], blanks) + trailing) as path:
        frame = read_ratings(path, sep=SEPS[name])
    assert [tuple(int(v) for v in r) for r in frame.itertuples(index=False)] == rows


def test_empty_ratings_file_gives_empty_typed_frame(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_text("\n\n")
    frame = read_ratings(path, sep="\t")
    assert len(frame) == 0
    assert list(frame.columns) == RATING_COLUMNS
    assert str(frame["rating"].dtype) == "int8"


CORRUPTIONS = [
    "extra_field",
    "missing_field",
    "non_numeric",
    "rating_0",
    "rating_6",
    "negative",
    "zero_id",
    "duplicate",
]


@SETTINGS
@given(data=st.data(), rows=rating_rows, name=st.sampled_from(sorted(SEPS)), kind=st.sampled_from(CORRUPTIONS))
def test_any_single_corruption_is_reported_with_file_and_line(
    data: st.DataObject, rows: list[tuple[int, ...]], name: str, kind: str
) -> None:
    if kind == "duplicate":
        assume(len(rows) >= 2)
    sep = SEPS[name]
    table = [[str(v) for v in r] for r in rows]
    k = data.draw(st.integers(0, len(rows) - 1), label="corrupted row")
    blanks = data.draw(st.lists(blank_runs, min_size=len(rows), max_size=len(rows)), label="blank lines")
    # physical 1-based line of each row, counting the blank lines before it
    line_of = []
    n = 0
    for b in blanks:
        n += b.count("\n") + 1
        line_of.append(n)

    expected: list[str] = []  # fragments the message must contain
    if kind == "extra_field":
        table[k].append("7")
        expected = ["expected 4", "found 5"]
    elif kind == "missing_field":
        del table[k][data.draw(st.integers(0, 3), label="dropped field")]
        expected = ["expected 4", "found 3"]
    elif kind == "non_numeric":
        col = data.draw(st.integers(0, 3), label="field")
        bad = data.draw(st.sampled_from(["abc", "1.5", "", "x1", "--1", "1e3", "4 2", "²"]), label="value")
        table[k][col] = bad
        expected = [f"field {RATING_COLUMNS[col]!r}", "must be an integer", repr(bad)]
    elif kind in ("rating_0", "rating_6"):
        table[k][2] = kind[-1]
        expected = ["field 'rating'", "1..5", f"got {kind[-1]}"]
    elif kind == "negative":
        col = data.draw(st.integers(0, 3), label="field")
        table[k][col] = "-1"
        bound = {"rating": "in 1..5", "timestamp": "at least 0"}.get(RATING_COLUMNS[col], "at least 1")
        expected = [f"field {RATING_COLUMNS[col]!r} must be {bound}, got -1"]
    elif kind == "zero_id":
        col = data.draw(st.integers(0, 1), label="field")
        table[k][col] = "0"
        expected = [f"field {RATING_COLUMNS[col]!r} must be at least 1, got 0"]
    else:  # duplicate: row k takes the (user, item) pair of another row j
        j = data.draw(st.integers(0, len(rows) - 1).filter(lambda x: x != k), label="original row")
        table[k][0], table[k][1] = table[j][0], table[j][1]
        first, second = sorted((j, k))
        k = second
        expected = [
            "duplicate",
            f"item_id {table[j][1]}",
            f"user_id {table[j][0]}",
            f"also on line {line_of[first]})",
        ]

    with written(name, render(table, sep, blanks)) as path:
        msg = error_of(lambda: read_ratings(path, sep=sep))
    assert msg.startswith(f"{path}:{line_of[k]}: "), msg
    assert "None" not in msg, msg  # no open range printed as "0..None"
    for fragment in expected:
        assert fragment in msg, (fragment, msg)


@pytest.mark.parametrize("column", RATING_COLUMNS)
def test_value_beyond_int64_is_a_format_error(tmp_path: Path, column: str) -> None:
    row = {"user_id": "1", "item_id": "2", "rating": "3", "timestamp": "874965758"}
    row[column] = "99999999999999999999"
    path = tmp_path / "u.data"
    path.write_text("1\t1\t5\t1\n" + "\t".join(row.values()) + "\n")
    msg = error_of(lambda: read_ratings(path, sep="\t"))
    assert msg.startswith(f"{path}:2: ")
    assert repr(column) in msg


def test_duplicate_error_names_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "ratings.dat"
    path.write_text("1::10::5::0\n2::10::4::0\n\n1::11::3::0\n1::10::2::0\n")
    msg = error_of(lambda: read_ratings(path, sep="::"))
    assert msg.startswith(f"{path}:5: duplicate rating of item_id 10 by user_id 1 (also on line 1)")


# ---------------------------------------------------------------------------------------- delimited
field_text = st.text(st.characters(codec="latin-1", exclude_characters="|\t:\n\r"), max_size=8)


@SETTINGS
@given(
    data=st.data(),
    sep=st.sampled_from(["|", "\t", "::"]),
    n_cols=st.integers(2, 5),
    n_rows=st.integers(0, 10),
)
def test_read_delimited_round_trip_with_line_numbers(data: st.DataObject, sep: str, n_cols: int, n_rows: int) -> None:
    rows = data.draw(st.lists(st.lists(field_text, min_size=n_cols, max_size=n_cols), min_size=n_rows, max_size=n_rows))
    # a row whose joined text is only whitespace (e.g. "\t" for two empty tab-separated fields) counts
    # as a blank line by design
    assume(all(sep.join(row).strip() for row in rows))
    blanks = data.draw(st.lists(blank_runs, min_size=n_rows, max_size=n_rows))
    columns = [f"c{i}" for i in range(n_cols)]
    with written("f.txt", render(rows, sep, blanks)) as path:
        frame = read_delimited(path, sep, columns, encoding="latin-1")
    assert list(frame.columns) == [*columns, "_line"]
    assert frame[columns].to_numpy().tolist() == rows
    expected_lines, n = [], 0
    for b in blanks:
        n += b.count("\n") + 1
        expected_lines.append(n)
    assert [int(x) for x in frame["_line"]] == expected_lines


def test_read_delimited_undecodable_bytes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(b"a|b\nc|d\ne|\xff\xfe\n")
    msg = error_of(lambda: read_delimited(path, "|", ["x", "y"], encoding="utf-8"))
    assert msg.startswith(f"{path}:3: ")
    assert "utf-8" in msg


# ------------------------------------------------------------------------------------------ encodings
TITLE = "Misérables, Les (1995)"


def u_item_text(title: str, item_id: int = 1) -> str:
    return f"{item_id}|{title}|01-Jan-1995||http://x|" + "|".join(["0"] * 13 + ["1"] + ["0"] * 5) + "\n"


@pytest.mark.parametrize("encoding", ["latin-1", "utf-8"])
@pytest.mark.parametrize(
    ("name", "text", "read", "column"),
    [
        ("u.item", u_item_text(TITLE), read_items_ml100k, "title"),
        ("movies.dat", f"73::{TITLE}::Drama|Musical\n", read_items_ml1m, "title"),
        ("u.user", f"1|24|M|{TITLE}|85711\n", read_users_ml100k, "occupation"),
    ],
)
def test_the_encoding_is_detected(
    tmp_path: Path, encoding: str, name: str, text: str, read: Callable[[Path], pd.DataFrame], column: str
) -> None:
    # GroupLens ships latin-1; a copy re-saved as UTF-8 must not come out as "MisÃ©rables"
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    assert read(path)[column].tolist() == [TITLE]


def test_a_file_that_mixes_encodings_is_refused(tmp_path: Path) -> None:
    # one line re-saved as UTF-8 in a latin-1 file: either encoding would garble one of the titles
    path = tmp_path / "u.item"
    path.write_bytes(
        u_item_text("Plain (1989)").encode()
        + u_item_text("Café (1990)", 2).encode("latin-1")
        + u_item_text("Crème (1991)", 3).encode("utf-8")
    )
    msg = error_of(lambda: read_items_ml100k(path))
    assert msg.startswith(f"{path}:3: ")
    assert "line 3 is UTF-8 but line 2 is not" in msg


@pytest.mark.parametrize(("name", "sep"), sorted(SEPS.items()))
def test_a_utf8_byte_order_mark_is_skipped(tmp_path: Path, name: str, sep: str) -> None:
    path = tmp_path / name
    path.write_bytes(codecs.BOM_UTF8 + f"196{sep}242{sep}3{sep}881250949\n".encode())
    assert read_ratings(path, sep=sep).to_dict("records") == [
        {"user_id": 196, "item_id": 242, "rating": 3, "timestamp": 881250949}
    ]
    items = tmp_path / "u.item"
    items.write_bytes(codecs.BOM_UTF8 + u_item_text(TITLE).encode("utf-8"))
    assert read_items_ml100k(items)["item_id"].tolist() == [1]
    text = tmp_path / "movie_text.jsonl"
    text.write_bytes(codecs.BOM_UTF8 + b'{"movie_id": 1, "summary": "S."}\n')
    assert read_movie_text(text)["summary"].tolist() == ["S."]


def test_a_byte_order_mark_on_a_latin1_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "u.item"
    path.write_bytes(
        codecs.BOM_UTF8 + u_item_text("Ok (1990)").encode() + u_item_text("Café (1991)", 2).encode("latin-1")
    )
    msg = error_of(lambda: read_items_ml100k(path))
    assert msg.startswith(f"{path}:2: ")
    assert "byte-order mark" in msg


def test_u_genre_is_read_in_index_order(tmp_path: Path) -> None:
    path = tmp_path / "u.genre"
    path.write_text("Drama|1\nunknown|0\n\nComedy|2\n")
    assert read_genres_ml100k(path) == ("unknown", "Drama", "Comedy")
    path.write_text("unknown|0\nDrama|2\n")
    assert "genre indices must be 0..1" in error_of(lambda: read_genres_ml100k(path))


# -------------------------------------------------------------------------------------------- u.item
title_base = (
    st.text(
        st.characters(codec="latin-1", categories=["L", "Nd"], include_characters=" '&,.-!"), min_size=1, max_size=20
    )
    .map(str.strip)
    .filter(bool)
)


@st.composite
def u_item_rows(draw: st.DrawFn) -> dict:
    title = draw(title_base)
    title_year = draw(st.none() | st.integers(1900, 2030))
    date_year = draw(st.none() | st.integers(1900, 2030))
    if title_year is not None:
        title = f"{title} ({title_year})"
    return {
        "title": title,
        "date": "" if date_year is None else f"01-Jan-{date_year}",
        "flags": draw(st.lists(st.booleans(), min_size=19, max_size=19)),
        "year": title_year if title_year is not None else date_year,
    }


def u_item_line(item_id: int, row: dict) -> str:
    flags = "|".join(str(int(f)) for f in row["flags"])
    return f"{item_id}|{row['title']}|{row['date']}||http://us.imdb.com/M/title-exact?x|{flags}\n"


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@SETTINGS
@given(
    rows=st.lists(u_item_rows(), min_size=1, max_size=15),
    ids=st.data(),
    encoding=st.sampled_from(["latin-1", "utf-8"]),
)
def test_u_item_round_trip(rows: list[dict], ids: st.DataObject, encoding: str) -> None:
    item_ids = ids.draw(st.lists(st.integers(1, 10**6), min_size=len(rows), max_size=len(rows), unique=True))
    text = "".join(u_item_line(i, r) for i, r in zip(item_ids, rows, strict=True))
    data = text.encode(encoding)
    # the one ambiguity of the detection rule: a latin-1 line that happens to be valid UTF-8 ("Ã©" = "é")
    assume(encoding == "utf-8" or not any(not line.isascii() and is_utf8(line) for line in data.split(b"\n")))
    with written("u.item", data) as path:
        items = read_items_ml100k(path)
    assert list(items.columns) == ["item_id", "title", "year", "genres"]
    assert str(items["year"].dtype) == "Int64"
    assert items["item_id"].tolist() == item_ids
    assert items["title"].tolist() == [r["title"] for r in rows]
    for got, r in zip(items["year"], rows, strict=True):
        if r["year"] is None:
            assert got is pd.NA
        else:
            assert got == r["year"]
    assert items["genres"].tolist() == [[g for g, f in zip(ML100K_GENRES, r["flags"], strict=True) if f] for r in rows]


def test_u_item_year_sources_and_latin1(tmp_path: Path) -> None:
    def line(i: int, title: str, date: str) -> str:
        return f"{i}|{title}|{date}||http://x|" + "|".join(["0"] * 18 + ["1"]) + "\n"

    path = tmp_path / "u.item"
    text = line(1, "Café (1995)", "01-Jan-1990") + line(2, "Café", "01-Jan-1996") + line(3, "unknown", "")
    path.write_bytes(text.encode("latin-1"))
    items = read_items_ml100k(path)
    assert items["title"].tolist() == ["Café (1995)", "Café", "unknown"]
    assert items["year"].tolist()[:2] == [1995, 1996]
    assert items["year"][2] is pd.NA
    assert items["genres"].tolist() == [["Western"]] * 3


@pytest.mark.parametrize("bad", ["2", "x", "-1", ""])
def test_u_item_bad_genre_flag(tmp_path: Path, bad: str) -> None:
    good = u_item_line(1, {"title": "A (1995)", "date": "", "flags": [False] * 19})
    flags = ["0"] * 19
    flags[7] = bad
    broken = "2|B (1996)|||http://x|" + "|".join(flags) + "\n"
    path = tmp_path / "u.item"
    path.write_text(good + "\n" + broken)
    msg = error_of(lambda: read_items_ml100k(path))
    assert msg.startswith(f"{path}:3: ")
    assert "'g7'" in msg


def test_u_item_wrong_field_count_and_duplicate_id(tmp_path: Path) -> None:
    path = tmp_path / "u.item"
    path.write_text("1|A|||http://x|" + "|".join(["0"] * 18) + "\n")
    msg = error_of(lambda: read_items_ml100k(path))
    assert msg.startswith(f"{path}:1: expected 24 ")
    row = {"title": "A", "date": "", "flags": [True] * 19}
    path.write_text(u_item_line(5, row) + u_item_line(6, row) + u_item_line(5, row))
    msg = error_of(lambda: read_items_ml100k(path))
    assert msg.startswith(f"{path}:3: duplicate item_id 5 (also on line 1)")


# -------------------------------------------------------------------------------------------- u.user
def test_u_user_parses(tmp_path: Path) -> None:
    path = tmp_path / "u.user"
    path.write_text("1|24|M|technician|85711\n\n2|53|F|other|94043\n3|23|M|writer|T8H1N\n")
    users = read_users_ml100k(path)
    assert list(users.columns) == ["user_id", "gender", "age", "occupation", "zip_code"]
    assert users["user_id"].tolist() == [1, 2, 3]
    assert users["age"].tolist() == [24, 53, 23]
    assert users["gender"].tolist() == ["M", "F", "M"]
    assert users["occupation"].tolist() == ["technician", "other", "writer"]
    assert users["zip_code"].tolist() == ["85711", "94043", "T8H1N"]
    assert str(users["age"].dtype) == "int64"


# ------------------------------------------------------------------------------ ML-1M movies / users
def test_movies_dat_parses(tmp_path: Path) -> None:
    path = tmp_path / "movies.dat"
    lines = [
        "1::Toy Story (1995)::Animation|Children's|Comedy",
        "2::Jumanji (1995)::Adventure|Children's|Fantasy",
        "73::Misérables, Les (1995)::Drama|Musical",
        "99::No Year::",
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    items = read_items_ml1m(path)
    assert items["item_id"].tolist() == [1, 2, 73, 99]
    assert items["title"][2] == "Misérables, Les (1995)"
    assert items["year"].tolist()[:3] == [1995, 1995, 1995]
    assert items["year"][3] is pd.NA
    assert items["genres"].tolist() == [
        ["Animation", "Children's", "Comedy"],
        ["Adventure", "Children's", "Fantasy"],
        ["Drama", "Musical"],
        [],
    ]


def test_movies_dat_errors(tmp_path: Path) -> None:
    path = tmp_path / "movies.dat"
    path.write_text("1::A (1995)::Drama\nx::B (1995)::Drama\n")
    msg = error_of(lambda: read_items_ml1m(path))
    assert msg.startswith(f"{path}:2: field 'item_id'")
    path.write_text("1::A (1995)::Drama\n1::B (1995)::Drama\n")
    assert error_of(lambda: read_items_ml1m(path)).startswith(f"{path}:2: duplicate item_id 1 (also on line 1)")


def test_users_dat_parses_and_maps_occupation_codes(tmp_path: Path) -> None:
    path = tmp_path / "users.dat"
    path.write_text("1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::12::55117\n4::M::45::0::02460\n")
    users = read_users_ml1m(path)
    assert users["user_id"].tolist() == [1, 2, 3, 4]
    assert users["gender"].tolist() == ["F", "M", "M", "M"]
    assert users["age"].tolist() == [1, 56, 25, 45]
    assert users["occupation"].tolist() == ["K-12 student", "self-employed", "programmer", "other"]
    assert users["zip_code"].tolist() == ["48067", "70072", "55117", "02460"]


@SETTINGS
@given(code=st.integers(0, len(ML1M_OCCUPATIONS) - 1), age=st.sampled_from([1, 18, 25, 35, 45, 50, 56]))
def test_users_dat_every_valid_code(code: int, age: int) -> None:
    with written("users.dat", f"7::F::{age}::{code}::12345\n") as path:
        users = read_users_ml1m(path)
    assert users["occupation"][0] == ML1M_OCCUPATIONS[code]
    assert users["age"][0] == age


U_USER_OK, USERS_DAT_OK = "1|24|M|technician|85711", "1::F::1::10::48067"


@pytest.mark.parametrize(
    ("reader", "good", "bad", "fragment"),
    [
        (read_users_ml100k, U_USER_OK, "2|53|X|other|94043", "field 'gender'"),
        (read_users_ml100k, U_USER_OK, "2|old|F|other|94043", "field 'age'"),
        (read_users_ml100k, U_USER_OK, "2|131|F|other|94043", "field 'age' must be in 0..130"),
        (read_users_ml100k, U_USER_OK, "2|53|F|other", "expected 5"),
        (read_users_ml100k, U_USER_OK, "1|53|F|other|94043", "duplicate user_id 1 (also on line 1)"),
        (read_users_ml1m, USERS_DAT_OK, "2::M::17::12::55117", "field 'age'"),
        (read_users_ml1m, USERS_DAT_OK, "2::M::0::12::55117", "field 'age'"),
        (read_users_ml1m, USERS_DAT_OK, "2::M::25::21::55117", "field 'occupation'"),
        (read_users_ml1m, USERS_DAT_OK, "2::M::25::-1::55117", "field 'occupation'"),
        (read_users_ml1m, USERS_DAT_OK, "2::X::25::12::55117", "field 'gender'"),
        (read_users_ml1m, USERS_DAT_OK, "2::M::25::12", "expected 5"),
    ],
)
def test_user_file_errors(tmp_path: Path, reader: Callable[[Path], object], good: str, bad: str, fragment: str) -> None:
    path = tmp_path / ("u.user" if reader is read_users_ml100k else "users.dat")
    path.write_text(f"{good}\n\n{bad}\n")
    msg = error_of(lambda: reader(path))
    assert msg.startswith(f"{path}:3: ")
    assert fragment in msg


# --------------------------------------------------------------------------------------- movie text
def test_movie_text_parses(tmp_path: Path) -> None:
    path = tmp_path / "movie_text.jsonl"
    lines = [
        json.dumps({"movie_id": 1, "summary": " Toys. ", "plot": "Long plot.", "cast": ["A", " B "], "director": "D"}),
        "",
        json.dumps({"movie_id": 2}),
        json.dumps({"movie_id": 3, "summary": "   ", "plot": 5, "cast": "X, Y,,", "director": None}),
    ]
    path.write_text("\n".join(lines) + "\n")
    text = read_movie_text(path)
    assert list(text.columns) == ["item_id", "summary", "plot", "cast", "director"]
    assert str(text["item_id"].dtype) == "int64"
    assert text.to_dict("records") == [
        {"item_id": 1, "summary": "Toys.", "plot": "Long plot.", "cast": ["A", "B"], "director": ["D"]},
        {"item_id": 2, "summary": None, "plot": None, "cast": [], "director": []},
        {"item_id": 3, "summary": None, "plot": None, "cast": ["X", "Y"], "director": []},
    ]


@SETTINGS
@given(
    records=st.lists(
        st.fixed_dictionaries(
            {"movie_id": st.integers(1, 10**6)},
            optional={
                "summary": st.text(max_size=10),
                "cast": st.lists(st.text(st.characters(exclude_characters=","), max_size=6), max_size=3),
            },
        ),
        max_size=10,
        unique_by=lambda r: r["movie_id"],
    )
)
def test_movie_text_round_trip(records: list[dict]) -> None:
    with written("movie_text.jsonl", "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8") as path:
        text = read_movie_text(path)
    assert text["item_id"].tolist() == [r["movie_id"] for r in records]
    for (_, row), r in zip(text.iterrows(), records, strict=True):
        summary = r.get("summary", "").strip()
        assert row["summary"] == (summary or None)
        assert row["cast"] == [c.strip() for c in r.get("cast", []) if c.strip()]


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ('{"movie_id": 3, ', "not valid JSON"),
        ("[1, 2]", "integer 'movie_id'"),
        ('{"summary": "no id"}', "integer 'movie_id'"),
        ('{"movie_id": "3"}', "integer 'movie_id'"),
        ('{"movie_id": 3.5}', "integer 'movie_id'"),
        ('{"movie_id": 1}', "duplicate movie_id 1 (also on line 1)"),
    ],
)
def test_movie_text_bad_line_names_the_line(tmp_path: Path, bad: str, fragment: str) -> None:
    path = tmp_path / "movie_text.jsonl"
    path.write_text('{"movie_id": 1}\n\n' + bad + "\n" + '{"movie_id": 9}\n')
    msg = error_of(lambda: read_movie_text(path))
    assert msg.startswith(f"{path}:3: ")
    assert fragment in msg


def test_movie_text_boolean_movie_id_is_rejected(tmp_path: Path) -> None:
    # JSON true is not an integer id, although Python's bool subclasses int.
    path = tmp_path / "movie_text.jsonl"
    path.write_text('{"movie_id": true}\n')
    msg = error_of(lambda: read_movie_text(path))
    assert msg.startswith(f"{path}:1: ")


def test_movie_text_undecodable_bytes_are_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "movie_text.jsonl"
    path.write_bytes(b'{"movie_id": 1}\n{"movie_id": 2, "plot": "\xff"}\n')
    msg = error_of(lambda: read_movie_text(path))
    assert str(path) in msg


# --------------------------------------------------------------------------------------- missing file
@pytest.mark.parametrize(
    "reader",
    [
        lambda p: read_ratings(p, sep="\t"),
        lambda p: read_ratings(p, sep="::"),
        read_items_ml100k,
        read_items_ml1m,
        read_users_ml100k,
        read_users_ml1m,
        lambda p: read_delimited(p, "|", ["a", "b"], encoding="latin-1"),
        read_movie_text,
    ],
    ids=["u.data", "ratings.dat", "u.item", "movies.dat", "u.user", "users.dat", "delimited", "movie_text"],
)
def test_missing_file(tmp_path: Path, reader: Callable[[Path], object]) -> None:
    missing = tmp_path / "nope" / "file.txt"
    with pytest.raises(DataNotFoundError) as info:
        reader(missing)
    assert str(missing) in str(info.value)
