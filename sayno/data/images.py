"""Images: one robust loader, class-name lists, and the ImageFolder layout ``root/<class>/<image>``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from sayno.data._io import one_line
from sayno.data.errors import BadRow, DataError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` has an image extension (jpg/jpeg/png/webp/bmp, any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def walk_images(folder: str | os.PathLike) -> list[Path]:
    """Every image file under ``folder`` (any depth): the one folder walker of sayno.

    Rules, decided here once: files with an image extension (:data:`IMAGE_EXTENSIONS`, any case); hidden files
    and folders (``.name``) skipped; symlinked files and folders followed, each real folder visited once (a link
    cycle ends there). Order: a folder's files sorted by name, then its sub-folders sorted, depth first. A missing
    folder raises :class:`DataError`.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: no such image folder")
    out: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".") and is_image_file(f))
    return out


def load_image(path: str | os.PathLike) -> Image.Image:
    """Read and fully decode one image file -> RGB PIL image.

    Any mode (RGBA, P, L, CMYK, 16-bit, ...) becomes RGB; alpha is dropped, as open_clip's preprocessing
    does. Raises :class:`DataError` (one line, naming the file) for a missing, unreadable or corrupt file.
    """
    p = Path(path)
    try:
        with Image.open(p) as im:
            im.load()
            return to_rgb(im)
    except FileNotFoundError:
        raise DataError(f"{p}: image not found") from None
    except IsADirectoryError:
        raise DataError(f"{p}: is a folder, not an image") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, EOFError, struct.error, ...
        raise DataError(f"{p}: cannot decode image ({type(e).__name__}: {one_line(e, 120)})") from e


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB (a new image; 16-bit and float grey images are scaled to 8 bits)."""
    if im.mode == "RGB":
        return im.copy()
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        peak = float(a.max()) if a.size else 0.0
        top = 1.0 if im.mode == "F" and peak <= 1.0 else (255.0 if peak <= 255 else 65535.0)
        a = np.clip(a / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(a).convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def read_class_names(file: str | os.PathLike) -> list[str]:
    """Class names, one per line; blank lines and lines starting with ``#`` are ignored.

    Raises :class:`DataError` for a missing file, no names, or duplicated names.
    """
    p = Path(file)
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DataError(f"{p}: no such class-name file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot read class names ({one_line(e)})") from e
    names = [s.strip() for s in lines]
    names = [s for s in names if s and not s.startswith("#")]
    if not names:
        raise DataError(f"{p}: no class names in the file")
    seen: set[str] = set()
    dups = []
    for n in names:
        if n in seen and n not in dups:
            dups.append(n)
        seen.add(n)
    if dups:
        raise DataError(f"{p}: duplicated class name(s): {', '.join(dups[:10])}")
    return names


@dataclass
class ImageFolderDataset:
    """Images with integer labels.

    image_paths: M paths; labels: (M,) int64 indices into ``class_names``; class_names: C names;
    folders: per class its folder name (None where no folder has that class); bad_rows: dropped entries.
    """

    root: Path
    image_paths: list[Path]
    labels: np.ndarray
    class_names: list[str]
    folders: list[str | None]
    bad_rows: list[BadRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.image_paths)


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).lower()




def read_image_folder(root: str | os.PathLike,
                      class_names: Sequence[str] | str | os.PathLike | None = None) -> ImageFolderDataset:
    """An ImageFolder tree ``root/<class>/<image>`` (images may sit in sub-folders of a class folder).

    Without ``class_names`` the classes are the folder names, sorted, with ``_`` read as a space. With a
    list (or a file for :func:`read_class_names`) labels follow its order and folders are matched to names
    by name (case and ``_``/space insensitive); if *no* folder matches a name and there are as many folders
    as names, the sorted folders are taken in order (ImageNet-style ``n01440764`` folders). Folders that
    match no name raise :class:`DataError`; names without a folder are classes with no images. Images
    directly in ``root`` are reported as bad rows. An empty tree raises :class:`DataError`.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such image folder")
    if class_names is not None and isinstance(class_names, (str, os.PathLike)):
        class_names = read_class_names(class_names)
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    folders = [p for p in entries if p.is_dir()]
    bad = [BadRow(str(p), None, "image outside a class folder")
           for p in entries if p.is_file() and is_image_file(p)]

    if class_names is None:
        names = [f.name.replace("_", " ") for f in folders]
        index = list(range(len(folders)))
        per_class: list[str | None] = [f.name for f in folders]
    else:
        names = list(class_names)
        if len(set(names)) != len(names):
            raise DataError(f"{root}: duplicated class names in the given list")
        lookup = {_norm(n): i for i, n in enumerate(names)}
        matched = [lookup.get(_norm(f.name)) for f in folders]
        if folders and all(m is None for m in matched) and len(folders) == len(names):
            matched = list(range(len(folders)))
        unknown = [f.name for f, m in zip(folders, matched) if m is None]
        if unknown:
            raise DataError(f"{root}: folder(s) {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} "
                            f"match no class name ({len(names)} names given)")
        index = [int(m) for m in matched]  # type: ignore[arg-type]
        per_class = [None] * len(names)
        for f, m in zip(folders, index):
            per_class[m] = f.name

    paths: list[Path] = []
    labels: list[int] = []
    for f, label in zip(folders, index):
        imgs = walk_images(f)
        paths.extend(imgs)
        labels.extend([label] * len(imgs))
    if not paths:
        raise DataError(f"{root}: no images ({'/'.join(sorted(e[1:] for e in IMAGE_EXTENSIONS))}) "
                        "in class folders")
    return ImageFolderDataset(root, paths, np.asarray(labels, dtype=np.int64), names, per_class, bad)
