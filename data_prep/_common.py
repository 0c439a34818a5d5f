"""Helpers shared by the data_prep scripts: downloads with checksums, safe extraction, atomic
writes.

The data_prep scripts are the only code in lnl that downloads. Every download is checked against an
md5 when one is published, every file written is reported with its sha256, and every step is
idempotent (rerunning skips what is already in place).

Importing this module also puts the repository root on ``sys.path`` so that the scripts can use
``lnl`` when run as ``python data_prep/<script>.py`` without an installed package.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def file_hash(path: Path, algo: str = "sha256") -> str:
    """Hex digest of a file (``md5`` or ``sha256``), read in 1 MiB chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_md5(path: Path, md5: str | None) -> bool:
    """True when ``path`` exists and (if ``md5`` is given) matches it."""
    return path.is_file() and (md5 is None or file_hash(path, "md5") == md5)


def download(url: str, dest: Path, md5: str | None = None) -> Path:
    """Download ``url`` to ``dest`` (skipped when ``dest`` already matches ``md5``).

    Works for ``http(s)://`` and ``file://`` URLs (the tests use the latter). The file is written to
    a temporary name and renamed only after the md5 check passes.

    Args:
        url: source URL.
        dest: destination file.
        md5: expected md5, or None to skip the check (the sha256 is printed either way).

    Returns:
        ``dest``.

    Raises:
        ValueError: the md5 does not match.
    """
    if check_md5(dest, md5):
        print(f"already downloaded and verified: {dest}")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        got = file_hash(Path(tmp), "md5")
        if md5 is not None and got != md5:
            raise ValueError(f"md5 mismatch for {url}: expected {md5}, got {got}")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    print(f"downloaded {url} -> {dest} (md5 {file_hash(dest, 'md5')})")
    return dest


def _safe_target(root: Path, name: str) -> Path:
    """Resolve an archive member under ``root``; refuse absolute paths and ``..`` escapes."""
    target = (root / name).resolve()
    if not str(target).startswith(str(root.resolve()) + os.sep) and target != root.resolve():
        raise ValueError(f"archive member escapes the destination: {name}")
    return target


def extract(archive: Path, dest: Path, members: Iterable[str] | None = None) -> None:
    """Extract a ``.tar[.gz]`` or ``.zip`` archive into ``dest`` (optionally only ``members``).

    Member paths are checked so that nothing is written outside ``dest``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    wanted = set(members) if members is not None else None
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if wanted is None or n in wanted]
            for name in tqdm(names, desc=f"extracting {archive.name}", unit="file"):
                _safe_target(dest, name)
                z.extract(name, dest)
        return
    with tarfile.open(archive) as t:
        chosen = [m for m in t.getmembers() if wanted is None or m.name in wanted]
        for m in chosen:
            _safe_target(dest, m.name)
            if m.issym() or m.islnk():
                raise ValueError(f"refusing link member {m.name} in {archive}")
        for m in tqdm(chosen, desc=f"extracting {archive.name}", unit="file"):
            t.extract(m, dest, filter="data")


def write_text_atomic(path: Path, text: str) -> str:
    """Write text via a temporary file and ``os.replace``; return the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return file_hash(path)


def report(paths: Iterable[Path]) -> None:
    """Print ``sha256  size  path`` for each written file."""
    for p in paths:
        print(f"{file_hash(p)}  {p.stat().st_size:>12}  {p}")


def place(src: Path, dst: Path, mode: str) -> None:
    """Put ``src`` at ``dst`` by ``copy``, ``move`` or ``symlink`` (skipped if ``dst`` exists)."""
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "copy":
        shutil.copy2(src, dst)
    elif mode == "move":
        shutil.move(str(src), dst)
    elif mode == "symlink":
        dst.symlink_to(src.resolve())
    else:
        raise ValueError(f"mode must be copy, move or symlink, got {mode!r}")
