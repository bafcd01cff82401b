"""Image folders as datasets: `dataset = "folder:imgs"` reads `imgs/train/<class>/*` and
`imgs/test/<class>/*`.

This module owns the folder layout (which files are images, which folders are classes), the
checks a folder must pass before anything trains, decoding with Pillow into uint8 arrays of one
size and one colour mode, and the decoded cache kept beside the images. It imports neither torch
nor Pillow nor numpy at import time, so the config can check a folder and `--list` count its images
without either. Nothing it reads ever runs code: the cache is an npz read with
`allow_pickle=False`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .registry import FOLDER_PREFIX

if TYPE_CHECKING:  # numpy and Pillow are imported where images are decoded: `--help` needs neither
    import numpy as np
    import PIL.Image

SPLITS = ("train", "test")
# What counts as an image, by extension (case-insensitive); other files and hidden files
# (.DS_Store, Thumbs.db's kin) are not part of the dataset.
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
CACHE_VERSION = 1  # bump when the cached arrays' meaning changes
CACHE_PREFIX = ".cnntui-cache-"


class FolderError(ValueError):
    """A folder dataset that cannot be used, as one line naming the folder or file."""


@dataclass(frozen=True)
class Layout:
    """The images of a folder dataset: class names (sorted) and each split's (file, label)."""

    root: Path
    classes: tuple[str, ...]
    train: tuple[tuple[Path, int], ...]
    test: tuple[tuple[Path, int], ...]


@dataclass(frozen=True)
class Decoded:
    """A folder dataset decoded: uint8 images (N, C, H, W), int64 labels, and what was done."""

    classes: tuple[str, ...]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    note: str  # "" or what was converted (mixed colour modes)
    from_cache: bool


def is_folder(dataset: str) -> bool:
    """Whether a `dataset` value names an image folder (`folder:PATH`)."""
    return dataset.startswith(FOLDER_PREFIX)


def folder_path(dataset: str, base_dir: str = "") -> Path:
    """The folder a `folder:PATH` value names: a relative PATH is found from `base_dir`, the
    experiments file's folder, as a model file is (from the working directory without one)."""
    return Path(base_dir or ".").joinpath(Path(dataset[len(FOLDER_PREFIX) :]).expanduser())


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _split_classes(root: Path, split: str) -> dict[str, list[Path]]:
    """Each class folder of `root/split` and its image files, sorted."""
    top = root / split
    out: dict[str, list[Path]] = {}
    for d in _visible(top):
        if d.is_dir():
            files = _visible(d)
            out[d.name] = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
    if not out:
        raise FolderError(f"{top}: no class folders (expected {split}/<class>/<images>)")
    return out


def scan(dataset: str, base_dir: str = "") -> Layout:
    """The layout of a `folder:PATH` dataset (PATH from `base_dir`), checked; FolderError
    says what is wrong."""
    root = folder_path(dataset, base_dir)
    if not root.is_dir():
        raise FolderError(f"image folder {str(root)!r} does not exist")
    for split in SPLITS:
        if not (root / split).is_dir():
            raise FolderError(f"{root}: no {split}/ folder (expected {split}/<class>/<images>)")
    try:
        found = {split: _split_classes(root, split) for split in SPLITS}
    except OSError as e:
        raise FolderError(f"{root}: cannot read ({e.strerror or e})") from None
    train, test = found["train"], found["test"]
    for a, b in (("train", "test"), ("test", "train")):
        only = sorted(set(found[a]) - set(found[b]))
        if only:
            raise FolderError(
                f"{root}: class {only[0]!r} is in {a}/ but not in {b}/ "
                "(both splits need the same classes)"
            )
    for split in SPLITS:
        for name, files in found[split].items():
            if not files:
                raise FolderError(f"{root / split / name}: no images in class {name!r}")
    classes = tuple(sorted(train))

    def pairs(split: dict[str, list[Path]]) -> tuple[tuple[Path, int], ...]:
        return tuple((f, k) for k, name in enumerate(classes) for f in split[name])

    return Layout(root, classes, pairs(train), pairs(test))


def check_openable(layout: Layout) -> None:
    """Every image's header is one Pillow can read (cheap: no pixels are decoded); a file that
    is not is named. Skipped where the cache already holds these very files."""
    if _cached_key_matches(layout):
        return
    for path, _ in layout.train + layout.test:
        with _image(path):
            pass


def image_shape(layout: Layout, image_size: int | None) -> tuple[int, int, int]:
    """(channels, height, width) the images decode to, told from the first training image's
    header (its mode and size) without decoding it; `image_size` sets the size."""
    with _image(layout.train[0][0]) as im:
        channels = 1 if im.mode in GRAY_MODES else 3
        w, h = im.size
    return (channels, image_size, image_size) if image_size else (channels, h, w)


@contextlib.contextmanager
def _image(path: Path) -> Iterator[PIL.Image.Image]:
    """The image at `path`, open; any error reading it, inside the block too, a FolderError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            yield im
    except (OSError, UnidentifiedImageError, ValueError) as e:
        text = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
        reason = text.replace(" " + repr(str(getattr(e, "filename", ""))), "")
        raise FolderError(f"{path}: not a readable image ({reason})") from None


def counts(dataset: str, base_dir: str = "") -> tuple[int, int]:
    """Train and test images of a folder dataset; (0, 0) where it cannot be read."""
    try:
        layout = scan(dataset, base_dir)
    except FolderError:
        return 0, 0
    return len(layout.train), len(layout.test)


def class_names(dataset: str, base_dir: str = "") -> tuple[str, ...]:
    """A folder dataset's class names, sorted; () where it cannot be read."""
    try:
        return scan(dataset, base_dir).classes
    except FolderError:
        return ()


# --- decoding ------------------------------------------------------------------------------


def files_key(layout: Layout) -> str:
    """A digest of the file list, each file's size and modification time."""
    h = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    for split, items in (("train", layout.train), ("test", layout.test)):
        for path, label in items:
            st = path.stat()
            rel = path.relative_to(layout.root).as_posix()
            h.update(f"{split}\0{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _read_cache(path: Path, key: str, arrays: bool = True) -> dict[str, np.ndarray] | None:
    """The cached arrays at `path` ({} unless `arrays`) if they were made from files with
    `key`, else None."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["key"]) != key:
                return None
            return {k: npz[k] for k in npz.files} if arrays else {}
    except (OSError, ValueError, KeyError, EOFError):
        return None


def _cached_key_matches(layout: Layout) -> bool:
    try:
        key = files_key(layout)
        caches = list(layout.root.glob(CACHE_PREFIX + "*.npz"))
    except OSError:
        return False
    return any(_read_cache(path, key, arrays=False) is not None for path in caches)


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the npz atomically; a folder that is not writable keeps no cache."""
    import numpy as np

    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def _open_rgb_or_gray(
    path: Path, size: tuple[int, int] | None
) -> tuple[np.ndarray, tuple[int, int]]:
    """One image as (H, W) gray or (H, W, 3) colour uint8, resized to `size` (W, H) if given."""
    import numpy as np
    from PIL import Image

    with _image(path) as im:
        im.load()
        img = im.convert("L" if im.mode in GRAY_MODES else "RGB")
    if size is not None and img.size != size:
        img = img.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8), img.size


def _decode_split(
    items: tuple[tuple[Path, int], ...], size: tuple[int, int] | None
) -> tuple[list[np.ndarray], np.ndarray, tuple[int, int] | None]:
    import numpy as np

    images = []
    for path, _ in items:
        array, got = _open_rgb_or_gray(path, size)
        size = size or got  # the first image's size, unless image_size says otherwise
        images.append(array)
    return images, np.array([k for _, k in items], dtype=np.int64), size


def _stack(images: list[np.ndarray], colour: bool) -> np.ndarray:
    """(N, C, H, W): gray images repeated to three channels where the set is colour."""
    import numpy as np

    if colour:
        images = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in images]
        return np.stack(images).transpose(0, 3, 1, 2).copy()
    return np.stack(images)[:, None]


def _decode(layout: Layout, image_size: int | None) -> dict[str, np.ndarray]:
    import numpy as np

    size = (image_size, image_size) if image_size else None
    train, train_y, size = _decode_split(layout.train, size)
    test, test_y, _ = _decode_split(layout.test, size)
    gray = sum(a.ndim == 2 for a in train + test)
    colour = gray < len(train) + len(test)
    note = ""
    if colour and gray:
        note = f"{gray} grayscale images of {len(train) + len(test)} converted to RGB"
    return {
        "train_x": _stack(train, colour),
        "train_y": train_y,
        "test_x": _stack(test, colour),
        "test_y": test_y,
        "classes": np.array(layout.classes, dtype=str),
        "note": np.array(note),
    }


def decode(dataset: str, image_size: int | None = None, base_dir: str = "") -> Decoded:
    """A folder dataset as arrays: every image resized to `image_size` square (None: the first
    training image's size) and converted to one mode (grayscale where every image is, else
    RGB). Read from the cache beside the images when its files, sizes and modification times
    are unchanged; else decoded and cached there where the folder is writable."""
    import numpy as np

    layout = scan(dataset, base_dir)
    key = files_key(layout)
    path = layout.root / f"{CACHE_PREFIX}{image_size or 'native'}.npz"
    arrays = _read_cache(path, key)
    from_cache = arrays is not None
    if arrays is None:
        arrays = {**_decode(layout, image_size), "key": np.array(key)}
        _write_cache(path, arrays)
    return Decoded(
        tuple(str(c) for c in arrays["classes"]),
        arrays["train_x"],
        arrays["train_y"],
        arrays["test_x"],
        arrays["test_y"],
        str(arrays["note"]),
        from_cache,
    )
