"""Where a MovieLens dataset comes from: the registry of known datasets, local resolution, download.

Resolution order (first hit wins):

1. an explicit ``data_dir`` argument (the CLI's ``--data-dir``);
2. the environment variable ``RECSIM_PERSONAS_DATA_DIR``;
3. the user cache directory (``RECSIM_PERSONAS_CACHE_DIR`` overrides it), filled by an earlier download;
4. a download of the official GroupLens zip, verified by its published MD5 and extracted atomically.

A directory given explicitly (1 or 2) may hold the dataset's files directly or in a sub-directory named
after the dataset (``DIR/ml-100k/u.data``). An explicit directory that lacks the files is an error, not a
reason to fall through to a download: the user asked for that copy.

Downloads are all-or-nothing: the archive is streamed into a temporary file, its size and MD5 checked, it
is extracted into a temporary directory, the expected files are checked, and only then is the directory
renamed into the cache. An interrupted or corrupt download leaves the cache as it was.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from recsim_personas._io import scratch_dir
from recsim_personas.errors import DataNotFoundError, DownloadError, unknown_choice

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "RECSIM_PERSONAS_DATA_DIR"
CACHE_DIR_ENV = "RECSIM_PERSONAS_CACHE_DIR"


@dataclass(frozen=True)
class DatasetSpec:
    """A GroupLens MovieLens release: where to get it and which files make it up."""

    name: str
    url: str
    md5: str
    archive_dir: str
    ratings_file: str
    items_file: str
    users_file: str
    text_file: str = "movie_text.jsonl"
    implicit: bool = False
    """the ratings file holds (user, item) pairs only (see :mod:`~recsim_personas.data.implicit`)"""
    ratings_fallback: str | None = None
    """a file read instead of ``ratings_file`` when that is absent (its values and timestamps dropped)"""

    @property
    def required_files(self) -> tuple[str, str, str]:
        return (self.ratings_file, self.items_file, self.users_file)

    def interactions_in(self, directory: Path) -> Path | None:
        """The file ``directory`` holds the interactions in (``ratings_file``, else ``ratings_fallback``)."""
        for name in (self.ratings_file, self.ratings_fallback):
            if name is not None and (directory / name).is_file():
                return directory / name
        return None

    def missing_in(self, directory: Path) -> list[str]:
        """The files of the dataset ``directory`` lacks."""
        missing = [] if self.interactions_in(directory) is not None else [self.ratings_file]
        return missing + [f for f in (self.items_file, self.users_file) if not (directory / f).is_file()]


DATASETS: dict[str, DatasetSpec] = {
    "ml-100k": DatasetSpec(
        name="ml-100k",
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        md5="0e33842e24a9c977be4e0107933c0723",
        archive_dir="ml-100k",
        ratings_file="u.data",
        items_file="u.item",
        users_file="u.user",
    ),
    "ml-1m": DatasetSpec(
        name="ml-1m",
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        md5="c4d9eecfca2ab87c1945afe126590906",
        archive_dir="ml-1m",
        ratings_file="ratings.dat",
        items_file="movies.dat",
        users_file="users.dat",
    ),
    "ml-1m-implicit": DatasetSpec(
        name="ml-1m-implicit",
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        md5="c4d9eecfca2ab87c1945afe126590906",
        archive_dir="ml-1m",
        ratings_file="interactions_user_movie.csv.gz",
        items_file="movies.dat",
        users_file="users.dat",
        implicit=True,
        ratings_fallback="ratings.dat",
    ),
}


def get_spec(name: str) -> DatasetSpec:
    """Look up a dataset by name, suggesting the closest known names on a typo."""
    try:
        return DATASETS[name]
    except KeyError:
        raise unknown_choice("dataset", name, DATASETS) from None


def cache_root() -> Path:
    """The directory downloaded datasets are kept in."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("recsim-personas")) / "datasets"


def _dataset_in(directory: Path, spec: DatasetSpec) -> Path | None:
    for candidate in (directory / spec.name, directory / spec.archive_dir, directory):
        if spec.interactions_in(candidate) is not None:
            return candidate
    return None


def _missing_message(directory: Path, spec: DatasetSpec, origin: str) -> str:
    where = [directory / spec.name, directory]
    present = next((d for d in where if d.is_dir() and any(d.iterdir())), None)
    msg = f"{origin} {str(directory)!r} does not hold the {spec.name} dataset: expected {spec.ratings_file!r}"
    msg += f" in {str(where[0])!r} or {str(where[1])!r}."
    if present is not None:
        have = sorted(p.name for p in present.iterdir())[:12]
        msg += f" {str(present)!r} contains: {', '.join(have)}."
    if spec.name == "ml-1m" and present is not None and (present / "movies.dat").is_file():
        msg += (
            " This copy of ML-1M has movies and users but no rating values; rating-based stages need the"
            " official ml-1m.zip (it holds ratings.dat)."
            + (
                " Its rating-free interaction pairs are the dataset 'ml-1m-implicit'."
                if (present / DATASETS["ml-1m-implicit"].ratings_file).is_file()
                else ""
            )
        )
    msg += (
        f" Fix: point it at a directory with the GroupLens files, or unset it to use the cache/download ({spec.url})."
    )
    return msg


def resolve_dataset_dir(name: str, data_dir: str | os.PathLike[str] | None = None, *, download: bool = True) -> Path:
    """Return the directory that holds dataset ``name``'s files, downloading it if needed.

    Args:
        name: ``"ml-100k"`` or ``"ml-1m"``.
        data_dir: an explicit directory (highest priority); see the module docstring for the order.
        download: when False, never touch the network; raise if no local copy exists.

    Raises:
        ConfigError: unknown dataset name.
        DataNotFoundError: an explicit directory lacks the files, or no copy and ``download=False``.
        DownloadError: the download failed or did not match its checksum.
    """
    spec = get_spec(name)
    for origin, value in (("--data-dir", data_dir), (DATA_DIR_ENV, os.environ.get(DATA_DIR_ENV))):
        if value:
            directory = Path(value).expanduser()
            found = _dataset_in(directory, spec)
            if found is None:
                raise DataNotFoundError(_missing_message(directory, spec, origin))
            _check_complete(found, spec)
            return found
    cached = cache_root() / spec.name
    if _dataset_in(cached, spec) == cached:
        _check_complete(cached, spec)
        return cached
    if not download:
        raise DataNotFoundError(
            f"{spec.name} is not in the cache ({str(cached)!r}) and downloading is off. Fix: pass"
            f" --data-dir, set {DATA_DIR_ENV}, or allow the download from {spec.url}."
        )
    return download_dataset(spec, cache_root())


def _check_complete(directory: Path, spec: DatasetSpec) -> None:
    missing = spec.missing_in(directory)
    if missing:
        raise DataNotFoundError(
            f"{str(directory)!r} holds {spec.ratings_file} but lacks {', '.join(missing)} of the {spec.name}"
            f" dataset. Fix: restore the complete GroupLens release ({spec.url})."
        )


def download_dataset(
    spec: DatasetSpec, root: Path, *, url: str | None = None, timeout: float = 60.0, progress: bool = True
) -> Path:
    """Download ``spec``'s zip into ``root/<name>`` atomically and return that directory.

    Args:
        spec: the dataset to fetch.
        root: the cache root; the dataset ends up in ``root / spec.name``.
        url: override the download address (mirrors, tests).
        timeout: socket timeout in seconds.
        progress: show a tqdm progress bar.

    Raises:
        DownloadError: HTTP error, network error, short body, checksum mismatch, or a bad archive. The
            cache is left exactly as it was.
    """
    url = url or spec.url
    target = root / spec.name
    root.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s from %s", spec.name, url)
    with scratch_dir(target) as tmp_path:  # also removes what killed downloads left beside target
        archive = tmp_path / "archive.zip"
        _fetch(url, archive, expected_md5=spec.md5, timeout=timeout, progress=progress)
        extract_dir = tmp_path / "extract"
        try:
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if member.startswith(("/", "\\")) or ".." in Path(member).parts:
                        raise DownloadError(
                            f"{url}: archive member {member!r} escapes the archive; refusing it. Fix: download the"
                            f" official archive ({spec.url})."
                        )
                zf.extractall(extract_dir)
        except zipfile.BadZipFile as exc:
            raise DownloadError(
                f"{url}: the downloaded file is not a valid zip archive ({exc}). Fix: check the URL (the official one"
                f" is {spec.url})."
            ) from exc
        inner = extract_dir / spec.archive_dir
        missing = spec.missing_in(inner)
        if missing:
            raise DownloadError(
                f"{url}: the archive lacks {spec.archive_dir}/{', '.join(missing)}. Fix: check the URL (the official"
                f" one is {spec.url})."
            )
        if target.exists():  # another process finished first, or a broken leftover
            if _dataset_in(target, spec) == target and not spec.missing_in(target):
                return target
            shutil.rmtree(target)
        os.replace(inner, target)
    logger.info("%s is ready in %s", spec.name, target)
    return target


def _fetch(url: str, dest: Path, *, expected_md5: str, timeout: float, progress: bool) -> None:
    from tqdm.auto import tqdm

    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
            length_header = resp.headers.get("Content-Length")
            expected_len = int(length_header) if length_header and length_header.isdigit() else None
            with tqdm(
                total=expected_len, unit="B", unit_scale=True, desc=dest.parent.name, disable=not progress
            ) as bar:
                while True:
                    block = resp.read(1 << 16)
                    if not block:
                        break
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}. Fix: check the URL, or try again later.") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"{url}: download failed after {received} bytes ({reason}); nothing was written to the cache. Fix:"
            " check the network and retry, or use a local copy with --data-dir."
        ) from exc
    if expected_len is not None and received != expected_len:
        raise DownloadError(
            f"{url}: the server announced {expected_len} bytes but sent {received} (truncated download)."
            " Nothing was written to the cache. Fix: retry the download."
        )
    if digest.hexdigest() != expected_md5:
        raise DownloadError(
            f"{url}: MD5 {digest.hexdigest()} does not match the published {expected_md5} (corrupt or"
            " different file); nothing was written to the cache. Fix: retry, or use a local copy with --data-dir."
        )
