"""What an execution left in /mnt/data, read without following a single symlink.

Runs once no process of the execution is left. Still, every folder is entered through a file
descriptor opened with O_NOFOLLOW relative to its parent, never by path. Only regular files are
considered; symlinks, FIFOs, sockets and devices are skipped; every open uses O_NOFOLLOW.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

# Files an execution may hand back (the official service's idea: source, text and data,
# documents, images, fonts, archives). A file without one of these extensions stays behind.
ALLOWED_EXTENSIONS = frozenset(
    """
    txt md markdown rst csv tsv json jsonl ndjson geojson xml yaml yml toml ini cfg conf log env properties
    html htm css scss js mjs cjs ts tsx jsx vue svelte py pyi ipynb r rmd jl sql sh bash zsh ps1 bat
    c h cc cpp cxx hpp hh java kt kts scala php rs go d f f90 f95 f03 rb pl lua swift dart hs ml ex exs
    erl clj lisp el vim tex bib sty cls rtf pdf doc docx xls xlsx xlsm ods odt odp ppt pptx key pages epub
    png jpg jpeg gif bmp tif tiff webp svg ico avif heic eps ps
    ttf otf woff woff2
    zip tar gz tgz bz2 xz zst 7z rar
    parquet feather arrow orc avro npy npz pkl pickle joblib h5 hdf5 nc mat sav dta sqlite sqlite3 db
    mp3 wav ogg flac m4a mp4 webm mov avi mkv gpx kml kmz dot gv graphml gexf pdb mol sdf stl obj ply gltf glb
    tf hcl tfvars dockerfile diff patch
    """.split()
)


@dataclass
class FoundFile:
    name: str  # relative to /mnt/data (undecodable bytes as surrogates, as os.scandir gives them)
    root: Path  # the data dir it lies under
    size: int  # apparent size: a sparse file is charged what a copy of it writes
    inode: tuple[int, int] = (0, 0)  # (st_dev, st_ino): hard links share it
    mtime_ns: int = 0

    def open(self):
        return open_beneath(self.root, self.name)


def open_beneath(root: Path, name: str):
    """Opens root/name for reading without following a symlink at any step (each folder is
    opened relative to the previous one with O_NOFOLLOW), and only if it is a regular file.
    Even a program still running could not steer the server out of its work dir."""
    parts = name.split("/")
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{name} is not a regular file")
    return os.fdopen(fd, "rb")


def extension_allowed(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return "." in base[1:] and base.rsplit(".", 1)[1].lower() in ALLOWED_EXTENSIONS


def walk(data_dir: Path, max_depth: int, keep_hidden: set[str], all_hidden: bool = False) -> tuple[list[FoundFile], list[dict]]:
    """Regular files below data_dir, and what was passed over (too deep). Folders are entered
    through file descriptors opened with O_NOFOLLOW, never by path. Hidden folders are passed
    over unless named in keep_hidden (or all_hidden: a stateful workspace keeps them)."""
    found: list[FoundFile] = []
    skipped: list[dict] = []

    def visit(dir_fd: int, prefix: str, depth: int) -> None:
        try:
            entries = sorted(os.scandir(dir_fd), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                if entry.name.startswith(".") and rel not in keep_hidden and not all_hidden:
                    continue
                if depth + 1 >= max_depth:
                    skipped.append({"name": rel + "/", "reason": "max_depth"})
                    continue
                try:
                    child = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
                except OSError:
                    continue  # replaced by a symlink or removed meanwhile
                try:
                    visit(child, rel + "/", depth + 1)
                finally:
                    os.close(child)
            elif stat.S_ISREG(info.st_mode):
                found.append(FoundFile(rel, data_dir, info.st_size, (info.st_dev, info.st_ino), info.st_mtime_ns))

    top = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        visit(top, "", 0)
    finally:
        os.close(top)
    return found, skipped


def sha256_of(item: FoundFile) -> str:
    digest = hashlib.sha256()
    with item.open() as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
