"""Readers for image files on disk: class folders, OpenOOD image lists, Tiny ImageNet val.

All three build a list of ``(path, label)`` up front, check that every file exists (one
``stat`` per file, well under a second for 50,000 files on a local disk) and decode images
only in ``__getitem__``. ``identity()`` hashes relative paths, labels, sizes and mtimes (see
:func:`unseen.data.base.hash_file_list`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from .base import IMAGE_EXTENSIONS, ImageDataset, hash_file_list, load_image

_INT = re.compile(r"[+-]?\d+")


def _check_exist(paths: list[Path], what: str) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise FileNotFoundError(
            f"{what}: {len(missing)} of {len(paths)} listed image files do not exist, e.g. {shown}"
        )


class _FileListDataset(ImageDataset):
    """Dataset over an explicit list of ``(path, label)`` pairs below ``root``."""

    def __init__(
        self,
        root: Path,
        samples: list[tuple[Path, int]],
        transform: Callable[[Image.Image], Any] | None,
    ) -> None:
        super().__init__(transform)
        self.root = root
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.samples]

    def _load(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        return load_image(path), label

    def identity(self) -> str:
        return hash_file_list(type(self).__name__, self.root, self.samples)


class ImageFolder(_FileListDataset):
    """One sub-folder per class below ``root``; class indices follow the sorted folder names.

    Images are the files (searched recursively, symlinks followed) whose extension is one of
    jpg/jpeg/png/bmp/webp in any letter case, sorted by path within each class. Other files are
    ignored. A class folder without images raises ``FileNotFoundError``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"ImageFolder: {root} is not a directory")
        classes = sorted(
            e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")
        )
        if not classes:
            raise FileNotFoundError(f"ImageFolder: no class sub-folders in {root}")
        samples: list[tuple[Path, int]] = []
        for index, cls in enumerate(classes):
            files = sorted(_find_images(root / cls))
            if not files:
                raise FileNotFoundError(
                    f"ImageFolder: class folder {root / cls} holds no image files "
                    f"(extensions {', '.join(IMAGE_EXTENSIONS)})"
                )
            samples.extend((p, index) for p in files)
        super().__init__(root, samples, transform)
        self.classes = classes
        self.name = root.name


def _find_images(folder: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, _, filenames in os.walk(folder, followlinks=True):
        found.extend(
            Path(dirpath, f) for f in filenames if f.lower().endswith(IMAGE_EXTENSIONS)
        )
    return found


def parse_image_list(
    list_file: Path, allow_unlabeled: bool = False
) -> list[tuple[str, int]]:
    """Parse an OpenOOD image list: one ``relative/path label`` per line.

    Line ends may be LF or CRLF; blank lines are skipped. The label is the last
    whitespace-separated field, so paths may contain spaces. A line whose last field is not an
    integer is a path without label: an error unless ``allow_unlabeled``, else label -1
    (OpenOOD's ``fractals_fvis.txt`` has only such lines). A path whose last space-separated
    part is itself an integer cannot be told apart from a labelled line.
    """
    entries = []
    with open(list_file, encoding="utf-8", newline=None) as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) == 2 and _INT.fullmatch(parts[1]):
                entries.append((parts[0], int(parts[1])))
            elif allow_unlabeled:
                entries.append((line, -1))
            else:
                raise ValueError(
                    f"{list_file}:{lineno}: expected '<path> <integer label>', got {line!r}; "
                    "pass allow_unlabeled=True to read label-less lines as label -1"
                )
    if not entries:
        raise ValueError(f"{list_file}: the image list is empty")
    return entries


class ImageList(_FileListDataset):
    """Images named in an OpenOOD-format list file, resolved against ``root``.

    See :func:`parse_image_list` for the format. Every referenced file is checked for existence
    when the dataset is built; missing ones raise ``FileNotFoundError`` naming them.
    """

    def __init__(
        self,
        list_file: str | os.PathLike[str],
        root: str | os.PathLike[str],
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        allow_unlabeled: bool = False,
    ) -> None:
        list_file, root = Path(list_file), Path(root)
        entries = parse_image_list(list_file, allow_unlabeled)
        samples = [(root / rel, label) for rel, label in entries]
        _check_exist([p for p, _ in samples], f"ImageList {list_file}")
        super().__init__(root, samples, transform)
        self.list_file = list_file
        self.name = list_file.stem


class TinyImageNetVal(_FileListDataset):
    """Tiny ImageNet-200 validation set (10,000 images, 50 per class).

    ``root`` holds ``wnids.txt`` (class order: label = line index) and ``val/`` with
    ``val_annotations.txt`` (tab-separated ``file wnid x0 y0 x1 y1``) and ``images/``. Items
    follow the annotation file's order. Images are returned as decoded: 168 of the official
    files are grayscale (mode ``"L"``); a transform with ``ToRGB`` converts them.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        root = Path(root)
        wnids_file = root / "wnids.txt"
        ann_file = root / "val" / "val_annotations.txt"
        for f in (wnids_file, ann_file):
            if not f.is_file():
                raise FileNotFoundError(f"TinyImageNetVal: missing {f} (expected layout: "
                                        "root/wnids.txt, root/val/val_annotations.txt)")
        wnids = wnids_file.read_text(encoding="utf-8").split()
        index = {w: i for i, w in enumerate(wnids)}
        if len(index) != len(wnids):
            raise ValueError(f"{wnids_file}: repeated wnids")
        samples = []
        with open(ann_file, encoding="utf-8") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                fields = raw.rstrip("\r\n").split("\t")
                if len(fields) < 2 or fields[1] not in index:
                    raise ValueError(
                        f"{ann_file}:{lineno}: expected 'file<TAB>wnid<TAB>...' with a wnid "
                        f"from wnids.txt, got {raw.rstrip()!r}"
                    )
                samples.append((root / "val" / "images" / fields[0], index[fields[1]]))
        _check_exist([p for p, _ in samples], f"TinyImageNetVal {root}")
        super().__init__(root, samples, transform)
        self.classes = wnids
        self.name = "tin_val"
