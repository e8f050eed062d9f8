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


class DatasetMissingError(DatasetFileError):
    """A dataset file is not under the data root; ``downloadable``: mixlab knows its official source."""

    def __init__(self, message: str, downloadable: bool = False):
        super().__init__(message)
        self.downloadable = downloadable


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


#: folder -> the file names of a complete copy (the layout error messages show); filled by the loaders' modules
LAYOUTS: dict[str, tuple[str, ...]] = {}


def download(url: str, dest: Path, timeout: float = 30.0, md5: str | None = None) -> None:
    """Download ``url`` to ``dest``. Nothing is created under the data root unless the download succeeds (and
    matches ``md5`` when given): the bytes go to the system's temporary folder first."""
    with tempfile.NamedTemporaryFile(prefix="mixlab-download-", delete=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, tmp)
        except BaseException:
            os.unlink(tmp.name)
            raise
    got = md5sum(Path(tmp.name)) if md5 is not None else None
    if got != md5:
        os.unlink(tmp.name)
        raise OSError(f"the downloaded file has md5 {got}, expected {md5}")
    place(Path(tmp.name), dest)


def place(src: Path, dest: Path) -> None:
    """Move ``src`` to ``dest`` (creating its folder); ``dest`` appears whole or not at all."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dest)  # same file system: atomic
    except OSError:  # another file system: copy beside dest, then rename
        with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as part, open(src, "rb") as f:
            shutil.copyfileobj(f, part)
        os.replace(part.name, dest)
        os.unlink(src)


def missing_message(folder: str, spec: FileSpec, root, failure: str = "") -> str:
    """Which files of ``folder`` are missing, the expected layout, where the data root came from, how to fix it."""
    base = data_root(root)
    origin = ("--data-dir" if root is not None else "$MIXLAB_DATA" if os.environ.get("MIXLAB_DATA")
              else "the default, as neither --data-dir nor $MIXLAB_DATA is set")
    names = LAYOUTS.get(folder, ())
    names = names if spec.name in names else (*names, spec.name)
    missing = [n for n in names if not (base / folder / n).exists()]
    lines = [f"{base / folder / spec.name} is missing (expected md5 {spec.md5}).{failure}"]
    if not base.exists():
        lines.append(f"The data root {base} (from {origin}) does not exist: a mistyped path?")
    else:
        lines.append(f"Data root {base} (from {origin}).")
    lines.append(f"Missing: {', '.join(missing)}; expected layout: <data root>/{folder}/{{{', '.join(names)}}} "
                 f"(original file names, checked by md5).")
    fix = f"Fix: point --data-dir (or $MIXLAB_DATA) at the folder that holds {folder}/, or put the files there"
    lines.append(fix + (f"; mixlab downloads them from {spec.url} when online." if spec.url and not failure
                        else f" (official source: {spec.url})." if spec.url else "."))
    return " ".join(lines)


def fetch(folder: str, spec: FileSpec, root: str | os.PathLike | None = None, allow_download: bool = True) -> Path:
    """Path of a verified dataset file, downloading it when missing (and allowed, and online). Nothing is written
    under the data root unless a download succeeds."""
    path = data_root(root) / folder / spec.name
    if not path.exists() and allow_download and spec.url:
        try:
            if spec.archive_member:
                _fetch_from_archive(spec, path)
            else:
                download(spec.url, path, md5=spec.md5)
        except OSError as error:
            raise DatasetMissingError(missing_message(folder, spec, root, f" The download from {spec.url} failed "
                                                                         f"({error})."), True) from error
    if not path.exists():
        raise DatasetMissingError(missing_message(folder, spec, root), bool(spec.url))
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
