"""Data root, checksums and downloads.

The data root is, in order: the ``root`` argument (CLI ``--data-dir``), ``$MIXLAB_DATA``, ``~/.cache/mixlab``.
Each dataset lives in ``<root>/<dataset>/`` under its original file names. Files are checked by md5; a missing
file is downloaded from its official location when the machine is online, otherwise a clear error says what to
put where.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class DatasetFileError(RuntimeError):
    """A dataset file is missing or corrupt; the message says how to fix it."""


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset: its name under ``<root>/<folder>/``, md5, and where to get it."""

    name: str
    md5: str
    url: str | None = None
    #: an archive to download and unpack instead of a direct URL (member path inside it)
    archive_member: str | None = None


def data_root(root: str | os.PathLike | None = None) -> Path:
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("MIXLAB_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "mixlab"


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


_VERIFIED: dict[tuple[str, float, int], str] = {}


def verify(path: Path, md5: str) -> None:
    """Raise :class:`DatasetFileError` if ``path`` does not have checksum ``md5`` (cached per mtime and size)."""
    stat = path.stat()
    key = (str(path), stat.st_mtime, stat.st_size)
    got = _VERIFIED.get(key) or md5sum(path)
    if got != md5:
        raise DatasetFileError(
            f"{path} is corrupt: md5 {got}, expected {md5}. Delete it and download it again "
            f"(mixlab fetches it when online), or copy a good copy there.")
    _VERIFIED[key] = got


def download(url: str, dest: Path, timeout: float = 30.0) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, tmp)
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, dest)


def fetch(folder: str, spec: FileSpec, root: str | os.PathLike | None = None, allow_download: bool = True) -> Path:
    """Path of a verified dataset file, downloading it when missing (and allowed, and online)."""
    path = data_root(root) / folder / spec.name
    if not path.exists() and allow_download and spec.url:
        try:
            if spec.archive_member:
                _fetch_from_archive(spec, path)
            else:
                download(spec.url, path)
        except OSError as error:
            raise DatasetFileError(
                f"{path} is missing and the download from {spec.url} failed ({error}). "
                f"Put the file there (md5 {spec.md5}) or point --data-dir / MIXLAB_DATA at a folder that has "
                f"{folder}/{spec.name}.") from error
    if not path.exists():
        where = f" Official source: {spec.url}." if spec.url else ""
        raise DatasetFileError(
            f"{path} is missing (expected md5 {spec.md5}).{where} Put the file there, or point --data-dir / "
            f"MIXLAB_DATA at a folder that has {folder}/{spec.name}.")
    verify(path, spec.md5)
    return path


def _fetch_from_archive(spec: FileSpec, path: Path) -> None:
    import tarfile

    archive = path.parent / Path(spec.url).name
    if not archive.exists():
        download(spec.url, archive, timeout=120)
    with tarfile.open(archive) as tar:
        member = tar.getmember(spec.archive_member)
        with tar.extractfile(member) as src, tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            shutil.copyfileobj(src, tmp)
    os.replace(tmp.name, path)
