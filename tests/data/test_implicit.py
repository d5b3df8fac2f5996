"""ml-1m-implicit: ML-1M's rating-free (user, movie) pairs, the stand-in ratings and timestamps, the protocol split
and a world built on them; the download path against a local HTTP server; the real file's counts."""

from __future__ import annotations

import gzip
import hashlib
import io
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from recsim_personas.data import ProtocolConfig, make_split
from recsim_personas.data.datasets import DATASETS, download_dataset, resolve_dataset_dir
from recsim_personas.data.implicit import IMPLICIT_EPOCH, IMPLICIT_RATING
from recsim_personas.data.movielens import _load_from, load_movielens
from recsim_personas.data.readers import read_interactions
from recsim_personas.errors import DataFormatError, DataNotFoundError

SPEC = DATASETS["ml-1m-implicit"]
GENRES = ("Action", "Comedy", "Drama", "Romance")


def _movies(n_items: int) -> str:
    return "".join(
        f"{i}::Movie {i} ({1980 + i % 20})::{GENRES[i % 4]}|{GENRES[(i + 1) % 4]}\n" for i in range(1, n_items + 1)
    )


def _users(n_users: int) -> str:
    return "".join(f"{u}::{'MF'[u % 2]}::25::{u % 21}::0{u:04d}\n" for u in range(1, n_users + 1))


def _pairs(n_users: int, n_items: int, per_user: int, seed: int = 0) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1)
    out = []
    for u in range(1, n_users + 1):
        items = rng.choice(n_items, size=per_user, replace=False, p=pop / pop.sum()) + 1
        out += [(u, int(i)) for i in items]
    return out


def _csv(pairs: list[tuple[int, int]], header: str = "user_id,movie_id") -> bytes:
    return (header + "\n" + "".join(f"{u},{i}\n" for u, i in pairs)).encode()


def write_implicit(directory: Path, n_users: int = 40, n_items: int = 80, per_user: int = 30) -> list[tuple[int, int]]:
    directory.mkdir(parents=True, exist_ok=True)
    pairs = _pairs(n_users, n_items, per_user)
    (directory / SPEC.ratings_file).write_bytes(gzip.compress(_csv(pairs)))
    (directory / "movies.dat").write_text(_movies(n_items), encoding="latin-1")
    (directory / "users.dat").write_text(_users(n_users))
    return pairs


# ------------------------------------------------------------------------------------------- reader
def test_read_interactions_plain_and_gzip_in_file_order(tmp_path: Path) -> None:
    pairs = [(3, 10), (1, 7), (3, 2)]
    plain = tmp_path / "pairs.csv"
    plain.write_bytes(_csv(pairs, "user_id,item_id") + b"\n")  # a trailing blank line is fine
    packed = tmp_path / "pairs.csv.gz"
    packed.write_bytes(gzip.compress(_csv(pairs)))
    for path in (plain, packed):
        frame = read_interactions(path)
        assert list(frame.columns) == ["user_id", "item_id"]
        assert list(zip(frame["user_id"], frame["item_id"], strict=True)) == pairs
        assert frame["user_id"].dtype == np.int64


@pytest.mark.parametrize(
    ("body", "gz", "expected"),
    [
        (b"user,movie\n1,2\n", True, ":1: expected the header 'user_id,movie_id', found 'user,movie'"),
        (b"1,2\n3,4\n", True, ":1: expected the header"),
        (b"user_id,movie_id\n1,2\n1,x\n", True, ":3: field 'item_id'"),
        (b"user_id,movie_id\n1,2\n1,2,3\n", True, ":3: expected 2 ','-separated fields"),
        (
            b"user_id,movie_id\n1,2\n5,6\n1,2\n",
            True,
            ":4: duplicate interaction of item_id 2 by user_id 1 (also on line 2)",
        ),
        (b"user_id,movie_id\n1,2\n", False, "not a complete gzip file"),
    ],
)
def test_read_interactions_names_the_bad_line(tmp_path: Path, body: bytes, gz: bool, expected: str) -> None:
    path = tmp_path / "pairs.csv.gz"
    path.write_bytes(gzip.compress(body) if gz else body)
    with pytest.raises(DataFormatError) as info:
        read_interactions(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_read_interactions_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="does not exist"):
        read_interactions(tmp_path / "nope.csv.gz")


# -------------------------------------------------------------------------------------- the dataset
def test_stand_in_ratings_and_pseudo_time(tmp_path: Path) -> None:
    pairs = write_implicit(tmp_path / "ml-1m")
    ml = load_movielens("ml-1m-implicit", tmp_path, download=False, text=False)
    assert ml.name == "ml-1m-implicit"
    assert list(zip(ml.ratings["user_id"], ml.ratings["item_id"], strict=True)) == pairs
    assert (ml.ratings["rating"] == IMPLICIT_RATING).all()
    assert ml.ratings["timestamp"].tolist() == (IMPLICIT_EPOCH + np.arange(len(pairs))).tolist()
    assert set(ml.source_files) == {SPEC.ratings_file, "movies.dat", "users.dat"}


def test_ratings_dat_stands_in_for_the_pairs_file_with_its_values_dropped(tmp_path: Path) -> None:
    pairs = write_implicit(tmp_path / "ml-1m")
    (tmp_path / "ml-1m" / SPEC.ratings_file).unlink()
    rng = np.random.default_rng(1)
    lines = [f"{u}::{i}::{rng.integers(1, 6)}::{rng.integers(9e8, 1e9)}\n" for u, i in pairs]
    (tmp_path / "ml-1m" / "ratings.dat").write_text("".join(lines))
    ml = load_movielens("ml-1m-implicit", tmp_path, download=False, text=False)
    assert list(zip(ml.ratings["user_id"], ml.ratings["item_id"], strict=True)) == pairs
    assert (ml.ratings["rating"] == IMPLICIT_RATING).all()  # the real values are not used
    assert ml.ratings["timestamp"].is_monotonic_increasing
    assert "ratings.dat" in ml.source_files


def test_a_pair_naming_an_unknown_movie_is_refused(tmp_path: Path) -> None:
    write_implicit(tmp_path / "ml-1m", n_items=80)
    (tmp_path / "ml-1m" / "movies.dat").write_text(_movies(50), encoding="latin-1")
    with pytest.raises(DataFormatError, match=r"item_id \d+, which is not in movies.dat"):
        load_movielens("ml-1m-implicit", tmp_path, download=False, text=False)


def test_missing_users_file_is_named(tmp_path: Path) -> None:
    write_implicit(tmp_path / "ml-1m")
    (tmp_path / "ml-1m" / "users.dat").unlink()
    with pytest.raises(DataNotFoundError, match=r"lacks users\.dat"):
        resolve_dataset_dir("ml-1m-implicit", tmp_path, download=False)


def test_split_and_world_on_implicit_pairs(tmp_path: Path) -> None:
    """The protocol splits by file order; a world builds; the bias rater puts its mass on the stand-in rating."""
    from recsim_personas.envs.world import make_world

    write_implicit(tmp_path / "ml-1m", n_users=40, n_items=80, per_user=30)
    ml = load_movielens("ml-1m-implicit", tmp_path, download=False, text=False)
    config = ProtocolConfig(dataset="ml-1m-implicit", n_users=None, min_ratings=20, max_ratings=100)
    split = make_split(ml, config)
    assert split.train.groupby("user_id").size().eq(18).all() and split.test.groupby("user_id").size().eq(12).all()
    first = ml.ratings[ml.ratings["user_id"] == 1]["item_id"].tolist()
    assert split.train[split.train["user_id"] == 1]["item_id"].tolist() == first[:18]  # file order
    assert (split.items["hist_avg_rating"].dropna() == IMPLICIT_RATING).all()

    world = make_world(split, "bias")
    assert world.n_users == 40 and world.n_items == 80
    assert world.session_config is None  # file order is no clock: the session behaviour stays hand-set
    dist = world.rater.predict(world.user_ids[:5], np.arange(5))
    assert np.allclose(dist.sum(axis=1), 1.0)
    assert (dist.argmax(axis=1) == IMPLICIT_RATING - 1).all() and (dist[:, IMPLICIT_RATING - 1] > 0.9).all()

    # The choice model fitted on the pairs decides: its constant expected-rating feature (rounding-level spread)
    # must not saturate the watch probabilities, and it separates the held-out movies from random ones.
    from recsim_personas.fidelity.alignment import preference_alignment

    model = world.choice.model
    assert model.scale[list(model.report["coefficients"]).index("expected_rating")] == 1.0
    result = preference_alignment(world, split.test, ratios=(1,), train=split.train)["ratios"]["1"]["model"]
    assert result["roc_auc"] > 0.6 and 0.1 < result["mean_probability"] < 0.9


# -------------------------------------------------------------------------------------------- download
def test_download_of_the_official_zip_reads_ratings_dat_as_pairs(tmp_path: Path) -> None:
    """The official archive holds ratings.dat, not the pairs file: the implicit dataset reads it with values dropped."""
    import http.server
    import threading

    ratings = b"1::2::5::978300760\n1::1::3::978302109\n2::1::4::978301968\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", ratings)
        zf.writestr("ml-1m/movies.dat", _movies(2).encode("latin-1"))
        zf.writestr("ml-1m/users.dat", _users(2).encode())
    body = buf.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        spec = replace(SPEC, md5=hashlib.md5(body, usedforsecurity=False).hexdigest())
        url = f"http://127.0.0.1:{httpd.server_address[1]}/ml-1m.zip"
        target = download_dataset(spec, tmp_path / "cache", url=url, progress=False, timeout=10)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    assert target == tmp_path / "cache" / "ml-1m-implicit"
    ml = _load_from(spec, target, text=False)
    assert list(zip(ml.ratings["user_id"], ml.ratings["item_id"], strict=True)) == [(1, 2), (1, 1), (2, 1)]
    assert (ml.ratings["rating"] == IMPLICIT_RATING).all()


# -------------------------------------------------------------------------------------------- real file
def test_real_ml1m_pairs(movielens_root: Path) -> None:
    if not (movielens_root / "ml-1m" / SPEC.ratings_file).is_file():
        pytest.fail(f"{movielens_root / 'ml-1m' / SPEC.ratings_file} is missing; the shared data holds it")
    ml = load_movielens("ml-1m-implicit", movielens_root, download=False, text=False)
    assert len(ml.ratings) == 1_000_209
    assert ml.ratings["user_id"].nunique() == 6040 and ml.ratings["item_id"].nunique() == 3706
    assert ml.ratings.groupby("user_id").size().min() == 20
    assert ml.ratings.iloc[:3]["item_id"].tolist() == [1193, 661, 914]


def test_choice_fit_on_implicit_pairs_keeps_hand_set_sessions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from recsim_personas.cli import build_parser
    from recsim_personas.envs.world import choice_sessions

    write_implicit(tmp_path / "ml-1m")
    config = ProtocolConfig(dataset="ml-1m-implicit", n_users=None, min_ratings=20, max_ratings=100)
    make_split(load_movielens("ml-1m-implicit", tmp_path, download=False, text=False), config).save(tmp_path / "split")
    args = build_parser().parse_args(
        ["choice", "fit", "--split", str(tmp_path / "split"), "--out", str(tmp_path / "c")]
    )
    assert args.func(args) == 0
    assert "sessions: hand-set (ml-1m-implicit has no timestamps)" in capsys.readouterr().out
    assert not (tmp_path / "c" / "sessions.json").exists()
    assert choice_sessions(str(tmp_path / "c"), None) is None
