"""Download and local resolution of MovieLens datasets, against a local HTTP server started by the tests.

Nothing here contacts any address but 127.0.0.1: every URL points at the server below, and proxy
variables are cleared so urllib cannot route the requests elsewhere.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from recsim_personas.data import datasets as ds
from recsim_personas.data.datasets import (
    CACHE_DIR_ENV,
    DATA_DIR_ENV,
    DATASETS,
    DatasetSpec,
    cache_root,
    download_dataset,
    resolve_dataset_dir,
)
from recsim_personas.data.movielens import _load_from
from recsim_personas.data.readers import read_ratings
from recsim_personas.errors import ConfigError, DataNotFoundError, DownloadError

# ------------------------------------------------------------------------------------------ fake data
U_DATA = "1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\t4\t888550871\n2\t3\t1\t888550999\n"


def _item_line(item_id: int, title: str, date: str, genres: set[int]) -> str:
    flags = "|".join("1" if g in genres else "0" for g in range(19))
    return f"{item_id}|{title}|{date}||http://us.imdb.com/M/title-exact?{item_id}|{flags}\n"


U_ITEM = (
    _item_line(1, "Toy Story (1995)", "01-Jan-1995", {3, 4, 5})
    + _item_line(2, "Café Society", "01-Jan-1996", {8})
    + _item_line(3, "Untitled", "", set())
)
U_USER = "1|24|M|technician|85711\n2|53|F|other|94043\n"

GOOD_FILES = {"u.data": U_DATA.encode(), "u.item": U_ITEM.encode("latin-1"), "u.user": U_USER.encode()}


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def good_zip() -> bytes:
    return make_zip({"ml-100k/": b"", **{f"ml-100k/{k}": v for k, v in GOOD_FILES.items()}})


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def spec_for(body: bytes, **changes: str) -> DatasetSpec:
    return replace(DATASETS["ml-100k"], md5=md5(body), **changes)


def write_dataset(directory: Path, files: dict[str, bytes] = GOOD_FILES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


def listing(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


# --------------------------------------------------------------------------------------- local server
@dataclass
class Route:
    body: bytes
    status: int = 200
    content_length: int | None = None  # announce this instead of len(body) (truncation)
    stall: threading.Event | None = None  # send half the body, set this, then wait for `release`
    release: threading.Event = field(default_factory=threading.Event)


@dataclass
class LocalServer:
    port: int = 0
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, body: bytes, **kw: object) -> str:
        self.routes[path] = Route(body, **kw)
        return self.url(path)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    state = LocalServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            route = state.routes.get(self.path)
            if route is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(route.status)
            self.send_header("Content-Type", "application/zip")
            length = len(route.body) if route.content_length is None else route.content_length
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if route.stall is not None:
                self.wfile.write(route.body[: len(route.body) // 2])
                self.wfile.flush()
                route.stall.set()
                route.release.wait()
                return
            self.wfile.write(route.body)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No RECSIM_PERSONAS_DATA_DIR (CI sets it), and a cache root inside tmp_path; returns that root."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(cache))
    return cache


def fetch(spec: DatasetSpec, root: Path, url: str) -> Path:
    return download_dataset(spec, root, url=url, progress=False, timeout=10)


def assert_cache_untouched(root: Path) -> None:
    """After a failed download: the root exists (download_dataset creates it) but holds nothing."""
    assert not (root / "ml-100k").exists()
    assert listing(root) == []


# ------------------------------------------------------------------------------------ download_dataset
def test_download_good_zip_extracts_and_loads(server: LocalServer, tmp_path: Path) -> None:
    body = good_zip()
    url = server.serve("/ml-100k.zip", body)
    root = tmp_path / "root"
    spec = spec_for(body)

    target = fetch(spec, root, url)

    assert target == root / "ml-100k"
    assert listing(root) == ["ml-100k"]  # no temp dir or archive left beside it
    assert listing(target) == ["u.data", "u.item", "u.user"]
    for name, data in GOOD_FILES.items():
        assert (target / name).read_bytes() == data
    assert server.requests == ["/ml-100k.zip"]

    ratings = read_ratings(target / "u.data", sep="\t")
    assert ratings["rating"].tolist() == [5, 3, 4, 1]
    ml = _load_from(spec, target, text=False)
    assert ml.name == "ml-100k"
    assert ml.ratings.loc[3, "timestamp"] == 888550999
    assert ml.items.set_index("item_id").loc[2, "title"] == "Café Society"
    assert ml.items.set_index("item_id").loc[2, "year"] == 1996
    assert ml.items.set_index("item_id").loc[1, "genres"] == ["Animation", "Children's", "Comedy"]
    assert ml.users["gender"].tolist() == ["M", "F"]
    assert ml.text is None


def test_second_resolution_uses_the_cache_without_downloading(
    server: LocalServer, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = good_zip()
    url = server.serve("/ml-100k.zip", body)
    monkeypatch.setitem(DATASETS, "ml-100k", spec_for(body, url=url))

    first = resolve_dataset_dir("ml-100k")
    assert first == clean_env / "ml-100k"
    assert server.requests == ["/ml-100k.zip"]

    second = resolve_dataset_dir("ml-100k")
    assert second == first
    assert server.requests == ["/ml-100k.zip"]  # not fetched again
    assert listing(clean_env) == ["ml-100k"]


def test_download_keeps_an_existing_complete_target(server: LocalServer, tmp_path: Path) -> None:
    """download_dataset itself always fetches, but a complete target that appeared meanwhile wins."""
    body = good_zip()
    url = server.serve("/ml-100k.zip", body)
    root = tmp_path / "root"
    existing = write_dataset(root / "ml-100k")
    (existing / "sentinel").write_text("mine")

    assert fetch(spec_for(body), root, url) == existing
    assert (existing / "sentinel").read_text() == "mine"
    assert listing(root) == ["ml-100k"]


def test_download_replaces_a_broken_leftover_target(server: LocalServer, tmp_path: Path) -> None:
    body = good_zip()
    url = server.serve("/ml-100k.zip", body)
    root = tmp_path / "root"
    leftover = write_dataset(root / "ml-100k", {"u.data": b"garbage\n"})  # no u.item / u.user

    target = fetch(spec_for(body), root, url)

    assert target == leftover
    assert listing(target) == ["u.data", "u.item", "u.user"]
    assert (target / "u.data").read_bytes() == GOOD_FILES["u.data"]
    assert listing(root) == ["ml-100k"]


def test_corrupt_zip_fails_md5_check(server: LocalServer, tmp_path: Path) -> None:
    body = good_zip()
    corrupt = bytearray(body)
    corrupt[len(corrupt) // 2] ^= 0xFF
    url = server.serve("/ml-100k.zip", bytes(corrupt))
    root = tmp_path / "root"

    with pytest.raises(DownloadError, match="MD5") as info:
        fetch(spec_for(body), root, url)
    assert md5(body) in str(info.value)
    assert md5(bytes(corrupt)) in str(info.value)
    assert_cache_untouched(root)


def test_body_that_is_not_a_zip_is_rejected(server: LocalServer, tmp_path: Path) -> None:
    body = b"<html>this is not a zip archive</html>\n" * 20
    url = server.serve("/ml-100k.zip", body)
    root = tmp_path / "root"

    with pytest.raises(DownloadError, match="not a valid zip"):
        fetch(spec_for(body), root, url)
    assert_cache_untouched(root)


def test_truncated_body_is_rejected(server: LocalServer, tmp_path: Path) -> None:
    full = good_zip()
    sent = full[: len(full) // 2]
    url = server.serve("/ml-100k.zip", sent, content_length=len(full))
    root = tmp_path / "root"

    # The declared MD5 is that of the bytes actually sent, so only the length check can catch this.
    with pytest.raises(DownloadError, match=r"truncated|download failed") as info:
        fetch(spec_for(sent), root, url)
    assert str(len(sent)) in str(info.value)
    assert_cache_untouched(root)


@pytest.mark.parametrize("status", [404, 503])
def test_http_error_is_reported(server: LocalServer, tmp_path: Path, status: int) -> None:
    body = good_zip()
    url = server.serve("/ml-100k.zip", b"nope", status=status) if status != 404 else server.url("/missing.zip")
    root = tmp_path / "root"

    with pytest.raises(DownloadError, match=str(status)):
        fetch(spec_for(body), root, url)
    assert len(server.requests) == 1
    assert_cache_untouched(root)


def test_unreachable_server_is_a_download_error(server: LocalServer, tmp_path: Path) -> None:
    # A port on 127.0.0.1 that nothing listens on: bind one, note it, close it.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "root"
    with pytest.raises(DownloadError, match="download failed"):
        fetch(spec_for(b""), root, f"http://127.0.0.1:{port}/ml-100k.zip")
    assert_cache_untouched(root)


def test_zip_lacking_a_required_file_is_rejected(server: LocalServer, tmp_path: Path) -> None:
    body = make_zip({"ml-100k/u.data": GOOD_FILES["u.data"], "ml-100k/u.item": GOOD_FILES["u.item"]})
    url = server.serve("/ml-100k.zip", body)
    root = tmp_path / "root"

    with pytest.raises(DownloadError, match=r"u\.user"):
        fetch(spec_for(body), root, url)
    assert_cache_untouched(root)


def test_zip_with_files_outside_the_dataset_dir_is_rejected(server: LocalServer, tmp_path: Path) -> None:
    body = make_zip({f"other-dir/{k}": v for k, v in GOOD_FILES.items()})
    url = server.serve("/ml-100k.zip", body)
    root = tmp_path / "root"

    with pytest.raises(DownloadError, match="lacks"):
        fetch(spec_for(body), root, url)
    assert_cache_untouched(root)


@pytest.mark.parametrize("evil", ["ml-100k/../evil.txt", "../evil.txt", "ml-100k/../../evil.txt"])
def test_zip_member_escaping_the_archive_is_rejected(server: LocalServer, tmp_path: Path, evil: str) -> None:
    members = {f"ml-100k/{k}": v for k, v in GOOD_FILES.items()}
    members[evil] = b"pwned"
    body = make_zip(members)
    url = server.serve("/ml-100k.zip", body)
    root = tmp_path / "a" / "b" / "root"

    with pytest.raises(DownloadError, match="escapes"):
        fetch(spec_for(body), root, url)
    assert_cache_untouched(root)
    assert not any(p.name == "evil.txt" for p in tmp_path.rglob("*"))


def test_failed_download_leaves_an_existing_cache_untouched(server: LocalServer, tmp_path: Path) -> None:
    root = tmp_path / "root"
    existing = write_dataset(root / "ml-100k")
    (existing / "sentinel").write_text("mine")
    before = {p.name: p.read_bytes() for p in existing.iterdir()}
    body = good_zip()
    corrupt = body[:-1] + bytes([body[-1] ^ 0xFF])
    url = server.serve("/ml-100k.zip", corrupt)

    with pytest.raises(DownloadError, match="MD5"):
        fetch(spec_for(body), root, url)
    assert listing(root) == ["ml-100k"]
    assert {p.name: p.read_bytes() for p in existing.iterdir()} == before


KILLED_DOWNLOAD = """
import sys
from dataclasses import replace
from pathlib import Path
from recsim_personas.data.datasets import DATASETS, download_dataset

spec = replace(DATASETS["ml-100k"], md5=sys.argv[3])
download_dataset(spec, Path(sys.argv[1]), url=sys.argv[2], progress=False, timeout=60)
"""


def test_a_killed_downloads_leftover_is_removed_by_the_next_download(server: LocalServer, tmp_path: Path) -> None:
    body = good_zip()
    stalled = threading.Event()
    url = server.serve("/ml-100k.zip", body, stall=stalled)
    root = tmp_path / "root"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_DOWNLOAD, str(root), url, md5(body)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    # wake up when the server has sent half the archive, or when the child died before that
    threading.Thread(target=lambda: (child.wait(), stalled.set()), daemon=True).start()
    try:
        stalled.wait()
        assert child.poll() is None, f"the download exited early with status {child.returncode}"
        child.kill()  # SIGKILL, half-way through the archive
        child.wait()
    finally:
        server.routes["/ml-100k.zip"].release.set()
        if child.poll() is None:
            child.kill()
            child.wait()
    leftovers = listing(root)
    assert len(leftovers) == 1 and leftovers[0].startswith(".ml-100k.")  # the killed download's scratch directory

    server.serve("/ml-100k.zip", body)
    assert fetch(spec_for(body), root, url) == root / "ml-100k"
    assert listing(root) == ["ml-100k"]


# --------------------------------------------------------------------------------- resolve_dataset_dir
@pytest.fixture
def served_spec(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> DatasetSpec:
    """Point the registry's ml-100k at the local server, so a download would hit it (and be counted)."""
    body = good_zip()
    spec = spec_for(body, url=server.serve("/ml-100k.zip", body))
    monkeypatch.setitem(DATASETS, "ml-100k", spec)
    return spec


def test_cache_root_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv(CACHE_DIR_ENV)
    assert cache_root() != tmp_path / "c"
    assert cache_root().name == "datasets"


def test_explicit_dir_beats_env_and_cache(
    server: LocalServer, served_spec: DatasetSpec, clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit = write_dataset(tmp_path / "explicit")
    env_dir = write_dataset(tmp_path / "env")
    write_dataset(clean_env / "ml-100k")
    monkeypatch.setenv(DATA_DIR_ENV, str(env_dir))

    assert resolve_dataset_dir("ml-100k", explicit) == explicit
    assert resolve_dataset_dir("ml-100k", str(explicit)) == explicit
    assert server.requests == []


def test_env_dir_beats_cache(
    server: LocalServer, served_spec: DatasetSpec, clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_dir = write_dataset(tmp_path / "env")
    write_dataset(clean_env / "ml-100k")
    monkeypatch.setenv(DATA_DIR_ENV, str(env_dir))

    assert resolve_dataset_dir("ml-100k") == env_dir
    assert server.requests == []


def test_cache_is_used_without_contacting_the_server(
    server: LocalServer, served_spec: DatasetSpec, clean_env: Path
) -> None:
    cached = write_dataset(clean_env / "ml-100k")
    (cached / "sentinel").write_text("mine")

    assert resolve_dataset_dir("ml-100k") == cached
    assert resolve_dataset_dir("ml-100k", download=False) == cached
    assert server.requests == []
    assert (cached / "sentinel").read_text() == "mine"


def test_download_is_the_last_resort(server: LocalServer, served_spec: DatasetSpec, clean_env: Path) -> None:
    assert not clean_env.exists()
    found = resolve_dataset_dir("ml-100k")
    assert found == clean_env / "ml-100k"
    assert server.requests == ["/ml-100k.zip"]
    assert listing(found) == ["u.data", "u.item", "u.user"]
    assert listing(clean_env) == ["ml-100k"]


def test_failed_download_via_resolve_raises_and_leaves_cache_empty(
    server: LocalServer, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = good_zip()
    spec = spec_for(body, url=server.serve("/ml-100k.zip", body[:-1] + bytes([body[-1] ^ 0xFF])))
    monkeypatch.setitem(DATASETS, "ml-100k", spec)

    with pytest.raises(DownloadError, match="MD5"):
        resolve_dataset_dir("ml-100k")
    assert_cache_untouched(clean_env)


@pytest.mark.parametrize("via", ["argument", "env"])
def test_explicit_dir_without_files_is_an_error_not_a_download(
    server: LocalServer,
    served_spec: DatasetSpec,
    clean_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    via: str,
) -> None:
    empty = tmp_path / "somewhere-else"
    empty.mkdir()
    (empty / "README.txt").write_text("hi")
    write_dataset(clean_env / "ml-100k")  # a valid cache must not be a fallback either
    if via == "env":
        monkeypatch.setenv(DATA_DIR_ENV, str(empty))
        arg = None
    else:
        arg = empty

    with pytest.raises(DataNotFoundError) as info:
        resolve_dataset_dir("ml-100k", arg)
    msg = str(info.value)
    assert str(empty) in msg
    assert "u.data" in msg
    assert "README.txt" in msg
    assert (DATA_DIR_ENV if via == "env" else "--data-dir") in msg
    assert server.requests == []


def test_explicit_dir_that_does_not_exist(served_spec: DatasetSpec, clean_env: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    with pytest.raises(DataNotFoundError, match="no-such-dir"):
        resolve_dataset_dir("ml-100k", missing)


def test_explicit_dir_with_incomplete_dataset(served_spec: DatasetSpec, clean_env: Path, tmp_path: Path) -> None:
    partial = write_dataset(tmp_path / "partial", {"u.data": GOOD_FILES["u.data"], "u.item": GOOD_FILES["u.item"]})
    with pytest.raises(DataNotFoundError, match=r"lacks u\.user") as info:
        resolve_dataset_dir("ml-100k", partial)
    assert str(partial) in str(info.value)


def test_no_download_and_nothing_cached(server: LocalServer, served_spec: DatasetSpec, clean_env: Path) -> None:
    with pytest.raises(DataNotFoundError, match="downloading is off") as info:
        resolve_dataset_dir("ml-100k", download=False)
    assert str(clean_env / "ml-100k") in str(info.value)
    assert server.requests == []
    assert not (clean_env / "ml-100k").exists()


def test_incomplete_cache_is_an_error(server: LocalServer, served_spec: DatasetSpec, clean_env: Path) -> None:
    write_dataset(clean_env / "ml-100k", {"u.data": GOOD_FILES["u.data"]})
    with pytest.raises(DataNotFoundError, match=r"u\.item, u\.user"):
        resolve_dataset_dir("ml-100k")
    assert server.requests == []


@pytest.mark.parametrize("sub", ["", "ml-100k"])
def test_explicit_dir_layouts(served_spec: DatasetSpec, clean_env: Path, tmp_path: Path, sub: str) -> None:
    base = tmp_path / "data"
    holder = write_dataset(base / sub if sub else base)
    found = resolve_dataset_dir("ml-100k", base)
    assert found == holder
    assert _load_from(served_spec, found, text=False).ratings.shape == (4, 4)


def test_unknown_dataset_name_suggests_the_close_one(clean_env: Path) -> None:
    with pytest.raises(ConfigError, match=r"Did you mean 'ml-100k'") as info:
        resolve_dataset_dir("ml-100")
    assert "ml-1m" in str(info.value)  # the list of choices
    assert ds.get_spec("ml-1m").ratings_file == "ratings.dat"
