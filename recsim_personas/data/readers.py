"""Readers for the GroupLens MovieLens files into typed DataFrames.

Every reader validates what it reads and fails with a :class:`~recsim_personas.errors.DataFormatError`
that names the file, the 1-based line, the field and the value, and says how to fix it. Nothing is
written by a reader, so a failure never leaves anything half-done.

Encoding: the GroupLens files are latin-1; a copy re-saved as UTF-8 is recognised (a file that is valid
UTF-8 and not plain ASCII is read as UTF-8, anything else as latin-1), and a leading UTF-8 byte-order mark
is skipped. ``movie_text.jsonl`` is JSON, hence UTF-8 (a byte-order mark is skipped there too).

Frames produced (all ids are the dataset's own integer ids):

- ratings: ``user_id`` int64, ``item_id`` int64, ``rating`` int8 in 1..5, ``timestamp`` int64 (seconds)
- items: ``item_id`` int64, ``title`` str (as in the file, e.g. ``"Toy Story (1995)"``), ``year``
  Int64 (nullable), ``genres`` list[str]
- users: ``user_id`` int64, ``gender`` str (``"M"``/``"F"``), ``age`` int64 (years for ML-100K; the
  age-group code 1/18/25/35/45/50/56 for ML-1M), ``occupation`` str, ``zip_code`` str
- movie text: ``item_id`` int64, ``summary``, ``plot`` (str or None), ``cast``, ``director`` (list[str])
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from recsim_personas.errors import DataFormatError, DataNotFoundError

logger = logging.getLogger(__name__)

ML100K_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip

ML1M_OCCUPATIONS: tuple[str, ...] = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist", "self-employed",
    "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip

ML1M_AGE_GROUPS = {1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}

_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


# --------------------------------------------------------------------------------------------- tables
def decode_text(data: bytes, path: Path, encoding: str | None = None) -> str:
    """The text of a MovieLens file's bytes.

    Args:
        data: the file's bytes.
        path: the file (for messages).
        encoding: the encoding to use; ``None`` detects it: a leading UTF-8 byte-order mark or valid UTF-8
            that is not plain ASCII → UTF-8, anything else → latin-1 (the encoding of the GroupLens files).
            A leading byte-order mark is never part of the text.

    Raises:
        DataFormatError: the bytes cannot be decoded as ``encoding``; the file starts with a UTF-8
            byte-order mark but is not UTF-8; or (detecting) it mixes encodings: a line is UTF-8 but
            another is not, so no one encoding reads every line right. Each message names the line.
    """
    has_bom = data.startswith(codecs.BOM_UTF8)
    if encoding is None:
        if has_bom:
            encoding = "utf-8"
        elif data.isascii():
            return data.decode("ascii")
        else:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                _refuse_mixed_encodings(data, exc, path)
                return data.decode("latin-1")
            logger.info("%s is UTF-8, not the original latin-1: reading it as UTF-8", path)
            return text
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        what = "starts with a UTF-8 byte-order mark but" if has_bom and encoding == "utf-8" else "holds bytes that"
        raise DataFormatError(
            f"{path}:{line}: the file {what} cannot be decoded as {encoding} ({exc.reason}). Fix: use the"
            " original GroupLens file, or re-save this one as UTF-8 (or latin-1, without a byte-order mark)."
        ) from exc
    return text.removeprefix("\ufeff")


def _refuse_mixed_encodings(data: bytes, exc: UnicodeDecodeError, path: Path) -> None:
    """Raise if a file that is not UTF-8 as a whole has a line that is (non-ASCII) UTF-8."""
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.isascii():
            continue
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            continue
        bad = data[: exc.start].count(b"\n") + 1
        raise DataFormatError(
            f"{path}:{number}: the file mixes encodings: line {number} is UTF-8 but line {bad} is not ({exc.reason}),"
            " so reading it as either would garble some text. Fix: re-save the whole file in one encoding (UTF-8,"
            " or latin-1 like the GroupLens original)."
        )


def read_delimited(
    path: str | os.PathLike[str], sep: str, columns: list[str], *, encoding: str | None = None
) -> pd.DataFrame:
    """Read a headerless delimited text file into a frame of strings, checking every line's field count.

    Blank lines are ignored. The returned frame has an extra ``_line`` column (1-based line numbers) used
    by the field parsers for error messages.

    Args:
        path: the file.
        sep: the field separator.
        columns: the field names.
        encoding: see :func:`decode_text` (``None``: detect UTF-8, else latin-1).

    Raises:
        DataNotFoundError: the file does not exist.
        DataFormatError: undecodable bytes, or a line with the wrong number of fields.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{str(path)!r} does not exist. Fix: check the dataset directory.")
    return split_fields(decode_text(path.read_bytes(), path, encoding), path, sep, columns)


def split_fields(text: str, path: Path, sep: str, columns: list[str], *, skip_lines: int = 0) -> pd.DataFrame:
    """:func:`read_delimited` on decoded text (``path`` names it in errors); the first ``skip_lines`` lines
    (a header) are left out but still counted in the line numbers."""
    lines = pd.Series(text.split("\n"))
    lines = lines.str.rstrip("\r")
    numbers = pd.Series(np.arange(1, len(lines) + 1), dtype="int64")
    keep = (lines.str.strip() != "") & (numbers > skip_lines)  # whitespace-only lines count as blank
    lines, numbers = lines[keep], numbers[keep]
    n_fields = lines.str.count(re.escape(sep)) + 1
    bad = n_fields != len(columns)
    if bad.any():
        i = bad.idxmax()
        raise DataFormatError(
            f"{path}:{numbers[i]}: expected {len(columns)} {sep!r}-separated fields"
            f" ({', '.join(columns)}), found {n_fields[i]}: {lines[i][:120]!r}. Fix: repair or remove this line."
        )
    if lines.empty:
        return pd.DataFrame({c: pd.Series(dtype=str) for c in [*columns, "_line"]})
    frame = lines.str.split(sep, n=len(columns) - 1, expand=True, regex=False)
    frame.columns = columns
    frame["_line"] = numbers.to_numpy()
    return frame.reset_index(drop=True)


def parse_int(
    frame: pd.DataFrame, column: str, path: Path, *, lo: int | None = None, hi: int | None = None
) -> pd.Series:
    """Convert a string column to int64, failing on the first non-integer or out-of-range value."""
    raw = frame[column].str.strip()
    ok = raw.str.fullmatch(r"[+-]?\d+")
    if not ok.all():
        i = (~ok).idxmax()
        raise DataFormatError(
            f"{path}:{frame['_line'][i]}: field {column!r} must be an integer, got {frame[column][i]!r}."
            " Fix: repair or remove this line."
        )
    too_big = raw.str.lstrip("+-").str.lstrip("0").str.len() > 18
    if too_big.any():
        i = too_big.idxmax()
        raise DataFormatError(
            f"{path}:{frame['_line'][i]}: field {column!r} has value {frame[column][i]!r}, too large for a 64-bit"
            " integer. Fix: repair or remove this line."
        )
    values = raw.astype("int64")
    out_of_range = pd.Series(False, index=values.index)
    if lo is not None:
        out_of_range |= values < lo
    if hi is not None:
        out_of_range |= values > hi
    if out_of_range.any():
        i = out_of_range.idxmax()
        raise DataFormatError(
            f"{path}:{frame['_line'][i]}: field {column!r} must be {_range_text(lo, hi)}, got {values[i]}."
            " Fix: repair or remove this line."
        )
    return values


def _range_text(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f"in {lo}..{hi}"
    return f"at least {lo}" if lo is not None else f"at most {hi}"


def _year_from(title: pd.Series, fallback: pd.Series | None = None) -> pd.Series:
    year = pd.to_numeric(title.str.extract(_YEAR_IN_TITLE, expand=False), errors="coerce")
    if fallback is not None:
        fb = pd.to_numeric(fallback.str.extract(r"(\d{4})\s*$", expand=False), errors="coerce")
        year = year.fillna(fb)
    return year.astype("Int64")


# -------------------------------------------------------------------------------------------- readers
def read_ratings(path: str | os.PathLike[str], *, sep: str) -> pd.DataFrame:
    """Read a ratings file (``u.data`` with ``sep="\\t"``, ``ratings.dat`` with ``sep="::"``).

    Returns a frame with ``user_id``, ``item_id`` (int64), ``rating`` (int8, 1..5), ``timestamp`` (int64),
    in file order.

    Raises:
        DataFormatError: wrong field count, a non-integer field, a rating outside 1..5, a negative
            timestamp, or a duplicate (user, item) pair (both lines are named).
    """
    path = Path(path)
    raw = read_delimited(path, sep, ["user_id", "item_id", "rating", "timestamp"])
    out = pd.DataFrame(
        {
            "user_id": parse_int(raw, "user_id", path, lo=1),
            "item_id": parse_int(raw, "item_id", path, lo=1),
            "rating": parse_int(raw, "rating", path, lo=1, hi=5).astype("int8"),
            "timestamp": parse_int(raw, "timestamp", path, lo=0),
        }
    )
    _refuse_duplicates(out, raw, path, "rating")
    return out


def _refuse_duplicates(out: pd.DataFrame, raw: pd.DataFrame, path: Path, what: str) -> None:
    dup = out.duplicated(["user_id", "item_id"], keep=False)
    if dup.any():
        first = dup.idxmax()
        u, i = out.loc[first, "user_id"], out.loc[first, "item_id"]
        where = raw["_line"][dup & (out["user_id"] == u) & (out["item_id"] == i)].tolist()
        raise DataFormatError(
            f"{path}:{where[1]}: duplicate {what} of item_id {i} by user_id {u} (also on line {where[0]})."
            f" Fix: keep one {what} per (user, item) pair."
        )


INTERACTION_HEADERS = ("user_id,movie_id", "user_id,item_id")


def read_interactions(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a rating-free interaction file: CSV (gzip-compressed when the name ends in ``.gz``) with the header
    ``user_id,movie_id`` (or ``user_id,item_id``) and one (user, movie) pair per line.

    Returns a frame with ``user_id``, ``item_id`` (int64), in file order.

    Raises:
        DataNotFoundError: the file does not exist.
        DataFormatError: not gzip data, a missing or different header, wrong field count, a non-integer id,
            or a duplicate pair (both lines named).
    """
    import gzip

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{str(path)!r} does not exist. Fix: check the dataset directory.")
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DataFormatError(
                f"{path}: not a complete gzip file ({exc}). Fix: restore the file (or name it without .gz if it is"
                " plain text)."
            ) from None
    text = decode_text(data, path)
    header = text.split("\n", 1)[0].strip().lstrip("\ufeff").replace(" ", "")
    if header not in INTERACTION_HEADERS:
        raise DataFormatError(
            f"{path}:1: expected the header {INTERACTION_HEADERS[0]!r}, found {header[:80]!r}. Fix: add the header"
            " line, or list the columns in that order."
        )
    raw = split_fields(text, path, ",", ["user_id", "item_id"], skip_lines=1)
    out = pd.DataFrame(
        {"user_id": parse_int(raw, "user_id", path, lo=1), "item_id": parse_int(raw, "item_id", path, lo=1)}
    )
    _refuse_duplicates(out, raw, path, "interaction")
    return out


def read_items_ml100k(path: str | os.PathLike[str], genre_names: tuple[str, ...] = ML100K_GENRES) -> pd.DataFrame:
    """Read ML-100K ``u.item`` (``|``-separated, 5 fields + one 0/1 flag per genre)."""
    path = Path(path)
    flags = [f"g{i}" for i in range(len(genre_names))]
    raw = read_delimited(path, "|", ["item_id", "title", "release_date", "video_release_date", "imdb_url", *flags])
    matrix = np.stack([parse_int(raw, f, path, lo=0, hi=1).to_numpy(dtype=bool) for f in flags], axis=1)
    names = np.array(genre_names, dtype=object)
    genres = [list(names[row]) for row in matrix]
    items = pd.DataFrame(
        {
            "item_id": parse_int(raw, "item_id", path, lo=1),
            "title": raw["title"].str.strip(),
            "year": _year_from(raw["title"], raw["release_date"]),
            "genres": genres,
        }
    )
    _check_unique(items, "item_id", raw, path)
    return items


def read_items_ml1m(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ML-1M ``movies.dat`` (``MovieID::Title::Genres``, genres ``|``-separated)."""
    path = Path(path)
    raw = read_delimited(path, "::", ["item_id", "title", "genres"])
    items = pd.DataFrame(
        {
            "item_id": parse_int(raw, "item_id", path, lo=1),
            "title": raw["title"].str.strip(),
            "year": _year_from(raw["title"]),
            "genres": [[g for g in s.split("|") if g] for s in raw["genres"]],
        }
    )
    _check_unique(items, "item_id", raw, path)
    return items


def read_users_ml100k(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ML-100K ``u.user`` (``user id | age | gender | occupation | zip code``)."""
    path = Path(path)
    raw = read_delimited(path, "|", ["user_id", "age", "gender", "occupation", "zip_code"])
    users = pd.DataFrame(
        {
            "user_id": parse_int(raw, "user_id", path, lo=1),
            "gender": _parse_gender(raw, path),
            "age": parse_int(raw, "age", path, lo=0, hi=130),
            "occupation": raw["occupation"].str.strip(),
            "zip_code": raw["zip_code"].str.strip(),
        }
    )
    _check_unique(users, "user_id", raw, path)
    return users


def read_users_ml1m(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ML-1M ``users.dat`` (``UserID::Gender::Age::Occupation::Zip-code``; age and occupation are codes)."""
    path = Path(path)
    raw = read_delimited(path, "::", ["user_id", "gender", "age", "occupation", "zip_code"])
    age = parse_int(raw, "age", path)
    bad_age = ~age.isin(list(ML1M_AGE_GROUPS))
    if bad_age.any():
        i = bad_age.idxmax()
        raise DataFormatError(
            f"{path}:{raw['_line'][i]}: field 'age' must be one of the ML-1M age codes"
            f" {sorted(ML1M_AGE_GROUPS)}, got {age[i]}. Fix: repair or remove this line."
        )
    occupation = parse_int(raw, "occupation", path, lo=0, hi=len(ML1M_OCCUPATIONS) - 1)
    users = pd.DataFrame(
        {
            "user_id": parse_int(raw, "user_id", path, lo=1),
            "gender": _parse_gender(raw, path),
            "age": age,
            "occupation": np.array(ML1M_OCCUPATIONS, dtype=object)[occupation.to_numpy()],
            "zip_code": raw["zip_code"].str.strip(),
        }
    )
    _check_unique(users, "user_id", raw, path)
    return users


def _parse_gender(raw: pd.DataFrame, path: Path) -> pd.Series:
    gender = raw["gender"].str.strip()
    bad = ~gender.isin(["M", "F"])
    if bad.any():
        i = bad.idxmax()
        raise DataFormatError(
            f"{path}:{raw['_line'][i]}: field 'gender' must be 'M' or 'F', got {gender[i]!r}. Fix: repair or remove"
            " this line."
        )
    return gender


def _check_unique(frame: pd.DataFrame, column: str, raw: pd.DataFrame, path: Path) -> None:
    dup = frame[column].duplicated(keep=False)
    if dup.any():
        value = frame.loc[dup.idxmax(), column]
        lines = raw["_line"][frame[column] == value].tolist()
        raise DataFormatError(
            f"{path}:{lines[1]}: duplicate {column} {value} (also on line {lines[0]}). Fix: keep one row per id."
        )


TEXT_FIELDS = ("summary", "plot", "cast", "director")


def read_movie_text(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read optional movie text (``movie_text.jsonl``: one JSON object per line, keyed by ``movie_id``).

    Returns a frame with ``item_id`` and the columns ``summary``, ``plot`` (str or None), ``cast`` and
    ``director`` (list[str], possibly empty). Fields absent from a line are treated as missing.

    Raises:
        DataFormatError: a line that is not a JSON object, lacks an integer ``movie_id``, or repeats one.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{str(path)!r} does not exist. Fix: check the movie text path.")
    rows: list[dict] = []
    seen: dict[int, int] = {}
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # JSON text is UTF-8; a leading byte-order mark is skipped
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataFormatError(
            f"{path}:{line}: not valid UTF-8 ({exc.reason}). Fix: re-save the file as UTF-8."
        ) from exc
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}:{lineno}: not valid JSON ({exc.msg}). Fix: repair this line.") from exc
        mid = obj.get("movie_id") if isinstance(obj, dict) else None
        if not isinstance(mid, int) or isinstance(mid, bool):
            raise DataFormatError(
                f"{path}:{lineno}: expected an object with an integer 'movie_id', got {line[:80]!r}. Fix: give"
                ' this line an integer movie_id (the item id of u.item / movies.dat), e.g. {"movie_id": 1, ...}.'
            )
        if mid in seen:
            raise DataFormatError(
                f"{path}:{lineno}: duplicate movie_id {mid} (also on line {seen[mid]}). Fix: keep one line per movie."
            )
        seen[mid] = lineno
        rows.append(
            {
                "item_id": mid,
                "summary": _text_or_none(obj.get("summary")),
                "plot": _text_or_none(obj.get("plot")),
                "cast": _str_list(obj.get("cast")),
                "director": _str_list(obj.get("director")),
            }
        )
    return pd.DataFrame(rows, columns=["item_id", *TEXT_FIELDS]).astype({"item_id": "int64"})


def _text_or_none(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _str_list(value: object) -> list[str]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, list):
        return []
    return [v.strip() for v in value if isinstance(v, str) and v.strip()]


def read_genres_ml100k(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Read ML-100K ``u.genre`` (``name|index``) into the genre names, in index order (0, 1, ...).

    Raises:
        DataFormatError: a malformed line, or indices that are not 0..n-1.
    """
    path = Path(path)
    raw = read_delimited(path, "|", ["genre", "index"])
    index = parse_int(raw, "index", path, lo=0)
    if sorted(index) != list(range(len(index))):
        raise DataFormatError(
            f"{path}: genre indices must be 0..{len(index) - 1}, got {sorted(index)}. Fix: number the genres 0, 1,"
            " ... in the order of u.item's genre flags, or remove u.genre to use the standard ML-100K genres."
        )
    return tuple(raw["genre"].to_numpy()[np.argsort(index.to_numpy())])
