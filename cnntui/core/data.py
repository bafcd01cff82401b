"""Datasets as whole uint8 tensors: CIFAR-10 and -100, the MNIST family, SVHN, image folders
and a synthetic stand-in.

Every dataset is decoded once into `(N, C, H, W)` uint8 tensors and labels; training batches
them by indexing, never by a per-sample transform. Decoded datasets are cached per process, so
a suite of experiments on one dataset reads it from disk once. Each set is read in its own
on-disk format by readers here (idx, CIFAR's pickles through a restricted unpickler, SVHN's
MATLAB files); torchvision only downloads, with its progress bar and checksum.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import pickle
import sys
import tarfile
import threading
import time
import urllib.error
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import folder
from .config import CLASS_NAMES, Experiment, class_names  # noqa: F401  (what each label means)
from .config import SHAPES as SHAPES  # each named set's image shape and classes
from .registry import DATASETS

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR10_TEST = ["test_batch"]
# The MD5 of each batch file in the official archive (as torchvision lists them). A file
# that differs is refused unless the user says it is their own data (UNVERIFIED_ENV).
CIFAR10_FILE_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
UNVERIFIED_ENV = "CNNTUI_UNVERIFIED_DATA"

FASHION_FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

SYNTHETIC_TRAIN, SYNTHETIC_TEST = 50_000, 10_000
# Digits read differently mirrored (a 2 is no longer a 2): `augment` never flips these unless
# `flip = "on"` says so. Every other set, image folders included, flips unless `flip = "off"`.
NO_FLIP = frozenset({"mnist", "kmnist", "svhn"})
# The mean and std each `normalize` mode other than "dataset" takes, for every channel.
FIXED_NORMALIZE = {"half": (0.5, 0.5), "none": (0.0, 1.0)}


def flips(dataset: str, flip: str) -> bool:
    """Whether `augment` mirrors the images of `dataset` under the `flip` setting."""
    if flip == "auto":
        return dataset not in NO_FLIP
    return flip == "on"


def normalisation(ds: TensorDataset, mode: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel mean and std a run divides `ds`'s pixels (0..1) by, under `normalize`
    mode `mode`: the training set's own (dataset), 0.5 and 0.5 (half), or 0 and 1 (none)."""
    if mode == "dataset":
        return ds.mean, ds.std
    mean, std = FIXED_NORMALIZE[mode]
    channels = ds.shape[0]
    return (mean,) * channels, (std,) * channels


def validation_split(
    labels: torch.Tensor, val_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, validation) that hold `val_size` of `labels` out, stratified by class:
    each class gives its share of the split (largest remainders round it to `val_size`),
    drawn at random within the class from `seed` alone. Both in ascending order, disjoint,
    together every index. ValueError when `val_size` would leave nothing to train on."""
    n = len(labels)
    if not 0 <= val_size < n:
        raise ValueError(f"val_size {val_size} leaves no training images (there are {n})")
    if val_size == 0:
        return torch.arange(n), torch.arange(0)
    y = labels.cpu().long()
    classes = int(y.max()) + 1
    counts = torch.bincount(y, minlength=classes).tolist()
    exact = [val_size * c / n for c in counts]
    quota = [math.floor(q) for q in exact]
    by_remainder = sorted(range(classes), key=lambda k: (quota[k] - exact[k], k))
    for k in by_remainder[: val_size - sum(quota)]:
        quota[k] += 1
    g = torch.Generator().manual_seed(seed)
    held = torch.zeros(n, dtype=torch.bool)
    for k in range(classes):
        members = torch.nonzero(y == k).flatten()
        held[members[torch.randperm(len(members), generator=g)[: quota[k]]]] = True
    return torch.nonzero(~held).flatten(), torch.nonzero(held).flatten()


class DataError(RuntimeError):
    """A dataset that cannot be found, fetched or read; the message says what to do."""


TRY_SYNTHETIC = "to try cnntui without it: --set dataset=synthetic"


@dataclass(frozen=True)
class TensorDataset:
    """A whole dataset in memory: uint8 images (N, C, H, W), int64 labels, and its stats."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...]  # per channel, on the 0..1 scale
    std: tuple[float, ...]
    classes: int
    class_names: tuple[str, ...] = ()  # where the data name them (an image folder's folders)

    @property
    def shape(self) -> tuple[int, int, int]:
        """One image's (channels, height, width), which the model is built for."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, train_size: int | None, test_size: int | None) -> TensorDataset:
        """The first `train_size` / `test_size` examples (None = all)."""
        return replace(
            self,
            train_x=self.train_x[:train_size],
            train_y=self.train_y[:train_size],
            test_x=self.test_x[:test_size],
            test_y=self.test_y[:test_size],
        )


def _stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images on the 0..1 scale."""
    xf = x[:10_000].float().div_(255)
    return tuple(xf.mean(dim=(0, 2, 3)).tolist()), tuple(xf.std(dim=(0, 2, 3)).tolist())


def _dataset(
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    classes: int,
    names: tuple[str, ...] = (),
) -> TensorDataset:
    """A TensorDataset of (N, C, H, W) uint8 arrays, its stats from the training images."""

    def tensor(a: np.ndarray, dtype: type) -> torch.Tensor:  # copied only where read-only
        return torch.from_numpy(np.require(a, dtype, ["C", "W"]))

    tx = tensor(train_x, np.uint8)
    mean, std = _stats(tx)
    return TensorDataset(
        name,
        tx,
        tensor(train_y, np.int64),
        tensor(test_x, np.uint8),
        tensor(test_y, np.int64),
        mean,
        std,
        classes,
        names,
    )


# --- CIFAR-10 ------------------------------------------------------------------------


def _latin1_bytes(text: object, encoding: object = "utf-8") -> bytes:
    """What Python 3 writes for bytes in a protocol-2 pickle: `_codecs.encode(str, 'latin1')`."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("refused _codecs.encode other than of text to latin-1")
    return text.encode("latin1")


def _plain_dtype(spec: object, align: object = False, copy: object = False) -> np.dtype[Any]:
    """numpy.dtype, refusing object dtypes: an array of numbers holds no Python objects.
    (`copy`, which a pickled dtype passes too, makes no difference to the dtype.)"""
    if not isinstance(spec, str | bytes | np.dtype) or not isinstance(align, int):
        raise pickle.UnpicklingError(f"refused a dtype made of {spec!r}")
    dtype = np.dtype(spec.decode("latin1") if isinstance(spec, bytes) else spec, bool(align))
    if dtype.hasobject:
        raise pickle.UnpicklingError("refused an array of Python objects")
    return dtype


def _shape(value: object) -> tuple[int, ...]:
    """An array shape from a pickle: a tuple of whole numbers, else refused."""
    if not isinstance(value, tuple) or not all(isinstance(n, int) for n in value):
        raise pickle.UnpicklingError(f"refused an array of shape {value!r}")
    return value


def _array(subtype: object, shape: object, dtype: object) -> np.ndarray[Any, np.dtype[Any]]:
    """numpy's `_reconstruct`, for plain ndarrays only."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refused to build a {subtype!r}")
    return np.ndarray.__new__(np.ndarray, _shape(shape), _plain_dtype(dtype))


def _from_buffer(
    buf: object, dtype: object, shape: object, order: object
) -> np.ndarray[Any, np.dtype[Any]]:
    """numpy's `_frombuffer` (protocol 5 pickles of arrays), for plain dtypes only."""
    if not isinstance(buf, bytes | bytearray) or order not in ("C", "F"):
        raise pickle.UnpicklingError("refused an array buffer other than in-band bytes")
    array: np.ndarray[Any, np.dtype[Any]] = np.frombuffer(buf, dtype=_plain_dtype(dtype))
    return array.reshape(_shape(shape), order="F" if order == "F" else "C")


# The only names a CIFAR-10 batch's pickle may refer to, each to a function that builds
# plain arrays or bytes.
_BATCH_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _array,
    ("numpy._core.multiarray", "_reconstruct"): _array,
    ("numpy.core.numeric", "_frombuffer"): _from_buffer,
    ("numpy._core.numeric", "_frombuffer"): _from_buffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _plain_dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch and nothing else.

    A batch is a dict of bytes keys to bytes, lists of ints and bytes, and one uint8 numpy
    array. Pickle can name any importable callable and call it, so `find_class` answers
    only the names an array needs (numpy's array reconstruction, under its old and new
    module names) and the latin-1 encoder Python 3's protocol 2 writes bytes with, each
    mapped to a function here that builds plain arrays and bytes only. Anything else (such
    as os.system) is refused before it is looked up, so it never runs.
    """

    def find_class(self, module: str, name: str) -> object:
        try:
            return _BATCH_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"it refers to {module + '.' + name!r}, which a CIFAR-10 batch never holds "
                "(refused; nothing was run)"
            ) from None

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("refused a persistent reference")


def unverified_data_allowed() -> bool:
    """True when the user set UNVERIFIED_ENV: read CIFAR-format files of their own."""
    return os.environ.get(UNVERIFIED_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _verify(path: Path, official: str, title: str = "CIFAR-10") -> None:
    try:
        digest = _md5(path)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if digest != official:
        raise DataError(
            f"{path}: not the official {title} file (MD5 {digest}, expected {official}); "
            f"delete the folder to extract it again, or, if it is your own data in {title}'s "
            f"format, set {UNVERIFIED_ENV}=1 to read it (as data only)"
        )


def _read_cifar_batch(
    path: Path, official_md5: str | None = None, title: str = "CIFAR-10"
) -> tuple[np.ndarray, np.ndarray]:
    """One python-format CIFAR batch file: a pickled dict of b'data' and b'labels' (CIFAR-10)
    or b'fine_labels' (CIFAR-100).

    With `official_md5`, the file must have that checksum unless the user allowed
    unverified data; either way it is read by `_BatchUnpickler`, which runs no code.
    """
    if path.exists() and not path.is_file():  # a FIFO or a device would be read forever
        raise DataError(f"{path}: not a regular file")
    if official_md5 is not None and not unverified_data_allowed():
        _verify(path, official_md5, title)
    try:
        with path.open("rb") as f:
            entry = _BatchUnpickler(f, encoding="bytes").load()
        if not isinstance(entry, dict):
            raise TypeError(f"holds a {type(entry).__name__}, not a dict")
        data = np.asarray(entry[b"data"], dtype=np.uint8)
        labels = np.asarray(entry.get(b"labels", entry.get(b"fine_labels")), dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, TypeError, EOFError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: not a readable {title} batch file ({reason})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(f"{path}: expected N x 3072 bytes of image data, got {data.shape}")
    return data.reshape(-1, 3, 32, 32), labels


RETRY_SECONDS = 60.0  # a download that failed this recently is not tried again
_failed_downloads: dict[str, tuple[float, str]] = {}


def _download(title: str, root: Path, get: Callable[[], object], where: Path, fix: str) -> None:
    """Download `title` into `root` by calling `get`; a failure is a DataError saying it is not
    in `where` and could not be downloaded, and what to do instead (`fix`).

    Offline, a download fails only after its timeouts; a suite of experiments on the missing
    dataset would wait that long for each one. So a failure is remembered for RETRY_SECONDS
    and the same error given at once (files put in place meanwhile are found before this).
    """
    key = f"{title} {root} {fix}"
    failed = _failed_downloads.get(key)
    if failed is not None and time.monotonic() - failed[0] < RETRY_SECONDS:
        raise DataError(failed[1])
    print(f"Downloading {title} into {root} ...", file=sys.stderr)
    try:
        get()
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        message = f"{title} is not in {where} and could not be downloaded ({e}); {fix}"
        _failed_downloads[key] = (time.monotonic(), message)
        raise DataError(message) from None
    _failed_downloads.pop(key, None)


def _md5(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def _fetch_file(title: str, url: str, root: Path, filename: str, md5: str) -> None:
    """Download `url` into `root/filename` (torchvision's progress bar and MD5 check); offline,
    a DataError that says which file to put where."""
    from torchvision.datasets.utils import download_url

    fix = f"put {filename} from {url} into {root}"
    _download(title, root, partial(download_url, url, str(root), filename, md5), root, fix)


def _download_archive(root: Path, title: str, url: str, archive_name: str, md5: str) -> None:
    """Download (unless present), verify and extract a tar.gz archive into `root`."""
    archive = root / archive_name
    if not archive.exists():
        _fetch_file(title, url, root, archive_name, md5)
    if _md5(archive) != md5:
        raise DataError(
            f"{archive}: checksum mismatch (corrupt or partial download); delete it and retry"
        )
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(root, filter="data")


def load_cifar10(root: Path, download: bool = True) -> TensorDataset:
    """CIFAR-10 from `root` (downloaded there first if missing and `download`), checksummed."""
    folder = root / CIFAR10_DIR
    needed = CIFAR10_TRAIN + CIFAR10_TEST
    if not all((folder / f).exists() for f in needed):
        if not download:
            raise DataError(f"CIFAR-10 not found: expected {folder}/{{{','.join(needed)}}}")
        root.mkdir(parents=True, exist_ok=True)
        _download_archive(root, "CIFAR-10", CIFAR10_URL, CIFAR10_ARCHIVE, CIFAR10_MD5)
    train = [_read_cifar_batch(folder / f, CIFAR10_FILE_MD5[f]) for f in CIFAR10_TRAIN]
    test = _read_cifar_batch(folder / CIFAR10_TEST[0], CIFAR10_FILE_MD5[CIFAR10_TEST[0]])
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    return _dataset("cifar10", train_x, train_y, *test, 10)


# --- CIFAR-100 -------------------------------------------------------------------------

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_ARCHIVE = "cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
CIFAR100_DIR = "cifar-100-python"
# The MD5 of each pickle in the official archive (as torchvision lists them).
CIFAR100_FILE_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
}


def load_cifar100(root: Path, download: bool = True) -> TensorDataset:
    """CIFAR-100 (its 100 fine labels) from `root`, downloaded there first if missing and
    `download`; its pickles are checksummed and read by the same restricted unpickler as
    CIFAR-10's, never by torchvision's."""
    where = root / CIFAR100_DIR
    if not all((where / f).exists() for f in CIFAR100_FILE_MD5):
        if not download:
            raise DataError(f"CIFAR-100 not found: expected {where}/{{train,test}}")
        root.mkdir(parents=True, exist_ok=True)
        _download_archive(root, "CIFAR-100", CIFAR100_URL, CIFAR100_ARCHIVE, CIFAR100_MD5)
    train_x, train_y = _read_cifar_batch(where / "train", CIFAR100_FILE_MD5["train"], "CIFAR-100")
    test_x, test_y = _read_cifar_batch(where / "test", CIFAR100_FILE_MD5["test"], "CIFAR-100")
    return _dataset("cifar100", train_x, train_y, test_x, test_y, 100)


# --- Fashion-MNIST -------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST family's format), gzipped or not, as a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte idx file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {body.size} bytes")
    return body.reshape(dims)


def _fashion_dir(root: Path, download: bool) -> Path:
    candidates = [root / "FashionMNIST" / "raw", root]
    for where in candidates:
        if all((where / f).exists() for f in FASHION_FILES.values()):
            return where
    if all((DEBIAN_FASHION_DIR / f).exists() for f in FASHION_FILES.values()):
        return DEBIAN_FASHION_DIR
    if not download:
        raise DataError(f"Fashion-MNIST not found in {candidates[0]}")
    from torchvision.datasets import FashionMNIST

    fix = (
        f"install Debian's dataset-fashion-mnist or put {', '.join(FASHION_FILES.values())} "
        f"into {candidates[0]}"
    )
    get = partial(FashionMNIST, str(root), download=True)
    _download("Fashion-MNIST", root, get, candidates[0], fix)
    return candidates[0]


def load_fashion_mnist(root: Path, download: bool = True) -> TensorDataset:
    """Fashion-MNIST from `root`, Debian's package, or a download into `root`."""
    return _idx_dataset("fashion-mnist", _fashion_dir(root, download))


def _idx_dataset(name: str, where: Path) -> TensorDataset:
    """The MNIST family's four idx files (FASHION_FILES) in `where`: 10 classes, one channel."""
    arrays = {k: read_idx(where / f) for k, f in FASHION_FILES.items()}
    train_x, test_x = arrays["train_x"][:, None], arrays["test_x"][:, None]
    return _dataset(name, train_x, arrays["train_y"], test_x, arrays["test_y"], 10)


# --- MNIST and KMNIST: idx files, as Fashion-MNIST ----------------------------------------


@dataclass(frozen=True)
class IdxSet:
    """One of the MNIST family: its name, torchvision's folder, mirrors and files' MD5s."""

    title: str
    folder: str  # under data_dir, as torchvision keeps it: MNIST/raw
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # FASHION_FILES' key -> MD5 of that file


IDX_SETS = {
    "mnist": IdxSet(
        "MNIST",
        "MNIST/raw",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "train_x": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train_y": "d53e105ee54ea40749a09fcbcd1e9432",
            "test_x": "9fb629c4189551a2d022fa330f9573f3",
            "test_y": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "kmnist": IdxSet(
        "KMNIST",
        "KMNIST/raw",
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        {
            "train_x": "bdb82020997e1d708af4cf47b453dcf7",
            "train_y": "e144d726b3acfaa3e44228e80efcd344",
            "test_x": "5c965bf0a639b31b8f53240b1b52f4d7",
            "test_y": "7320c461ea6c1c855c0b718fb2a4b134",
        },
    ),
}


def _fetch_idx(spec: IdxSet, where: Path) -> None:
    """Each missing file of `spec` from its first mirror that answers, checksummed."""
    where.mkdir(parents=True, exist_ok=True)
    for key, filename in FASHION_FILES.items():
        if (where / filename).exists():
            continue
        for i, mirror in enumerate(spec.mirrors):
            try:
                _fetch_file(spec.title, mirror + filename, where, filename, spec.md5[key])
                break
            except DataError:
                if i == len(spec.mirrors) - 1:
                    raise


def load_idx_set(name: str, root: Path, download: bool = True) -> TensorDataset:
    """MNIST or KMNIST (`name`) from `root/<MNIST|KMNIST>/raw`, downloaded there if missing."""
    spec = IDX_SETS[name]
    where = root / spec.folder
    if not all((where / f).exists() for f in FASHION_FILES.values()):
        if not download:
            raise DataError(f"{spec.title} not found in {where}")
        _fetch_idx(spec, where)
    return _idx_dataset(name, where)


# --- SVHN: MATLAB 5 files -------------------------------------------------------------------

SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
SVHN_FILES = {  # split -> (file, MD5), as torchvision lists them
    "train": ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test": ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
}
# MATLAB 5 data types: tag number -> numpy dtype (without byte order).
_MAT_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8"}
_MAT_MATRIX, _MAT_COMPRESSED = 14, 15


def _mat_elements(raw: bytes, order: str) -> list[tuple[int, bytes]]:
    """The (type, payload) data elements of a MATLAB 5 byte stream, in order."""
    out, pos = [], 0
    while pos + 8 <= len(raw):
        kind, size = np.frombuffer(raw, f"{order}u4", 2, pos).tolist()
        if kind >> 16:  # a small element: size and type share the first word, data the second
            out.append((kind & 0xFFFF, raw[pos + 4 : pos + 4 + (kind >> 16)]))
            pos += 8
            continue
        out.append((kind, raw[pos + 8 : pos + 8 + size]))
        pos += 8 + (size if kind == _MAT_COMPRESSED else (size + 7) // 8 * 8)
    return out


def _mat_matrix(payload: bytes, order: str) -> tuple[str, np.ndarray]:
    """A numeric miMATRIX element: its name and its array (column-major, as MATLAB keeps it)."""
    parts = _mat_elements(payload, order)
    if len(parts) < 4 or parts[3][0] not in _MAT_TYPES:
        raise ValueError("a matrix that is not a plain numeric array")
    dims = np.frombuffer(parts[1][1], f"{order}i4").tolist()
    name = parts[2][1].decode("ascii", "replace")
    values = np.frombuffer(parts[3][1], f"{order}{_MAT_TYPES[parts[3][0]]}")
    return name, values.reshape(dims, order="F")


def read_mat(path: Path) -> dict[str, np.ndarray]:
    """The numeric arrays of a MATLAB 5 .mat file (as SVHN's are), by name. Reads data only:
    cells, structs and objects are skipped, never interpreted."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(raw) < 128 or raw[126:128] not in (b"IM", b"MI"):
        raise DataError(f"{path}: not a MATLAB 5 .mat file")
    order = "<" if raw[126:128] == b"IM" else ">"
    out = {}
    try:
        for kind, payload in _mat_elements(raw[128:], order):
            if kind == _MAT_COMPRESSED:
                kind, payload = _mat_elements(zlib.decompress(payload), order)[0]
            if kind == _MAT_MATRIX:
                name, array = _mat_matrix(payload, order)
                out[name] = array
    except (zlib.error, ValueError, IndexError) as e:
        raise DataError(f"{path}: not a readable .mat file ({e})") from None
    return out


def _svhn_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SVHN's X (32, 32, 3, N) as (N, 3, 32, 32), and y with its label 10 as the digit 0."""
    arrays = read_mat(path)
    x, y = arrays.get("X"), arrays.get("y")
    if x is None or y is None or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: expected X of 32 x 32 x 3 x N images and y, as SVHN's files")
    labels = y.reshape(-1).astype(np.int64)
    if len(labels) != x.shape[3]:
        raise DataError(f"{path}: {x.shape[3]} images but {len(labels)} labels")
    return x.transpose(3, 2, 0, 1), np.where(labels == 10, 0, labels)


def load_svhn(root: Path, download: bool = True) -> TensorDataset:
    """SVHN's cropped digits (train and test, not extra) from `root`, downloaded if missing."""
    splits = {}
    for split, (filename, md5) in SVHN_FILES.items():
        if not (root / filename).exists():
            if not download:
                raise DataError(f"SVHN not found: expected {root / filename}")
            root.mkdir(parents=True, exist_ok=True)
            _fetch_file("SVHN", SVHN_URL + filename, root, filename, md5)
        splits[split] = _svhn_split(root / filename)
    return _dataset("svhn", *splits["train"], *splits["test"], 10)


# --- Image folders ----------------------------------------------------------------------------


def load_folder(dataset: str, image_size: int | None = None, base_dir: str = "") -> TensorDataset:
    """An image folder (`folder:PATH`, see cnntui/core/folder.py) as tensors, its classes named
    by its folders."""
    try:
        d = folder.decode(dataset, image_size, base_dir)
    except folder.FolderError as e:
        raise DataError(str(e)) from None
    if d.note:
        print(f"{dataset}: {d.note}", file=sys.stderr)
    return _dataset(dataset, d.train_x, d.train_y, d.test_x, d.test_y, len(d.classes), d.classes)


# --- Synthetic -----------------------------------------------------------------------


def make_synthetic(
    train: int = SYNTHETIC_TRAIN,
    test: int = SYNTHETIC_TEST,
    shape: tuple[int, int, int] = (3, 32, 32),
    classes: int = 10,
    seed: int = 1234,
) -> TensorDataset:
    """Deterministic, learnable images: a smooth per-class pattern under heavy pixel noise.

    The class patterns are random but low-frequency (upsampled 4x4 noise), so a CNN separates
    them well above chance within an epoch while single pixels stay uninformative.
    """
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    coarse = torch.randn(classes, c, 4, 4, generator=g)
    patterns = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")
    patterns = patterns / patterns.std()

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (n,), generator=g)
        noise = torch.randn(n, c, h, w, generator=g)
        x = 0.12 * patterns[y] + noise
        return (x * 40 + 128).clamp_(0, 255).to(torch.uint8), y

    train_x, train_y = split(train)
    test_x, test_y = split(test)
    mean, std = _stats(train_x)
    return TensorDataset("synthetic", train_x, train_y, test_x, test_y, mean, std, classes)


# --- Entry point ---------------------------------------------------------------------


# Each named set's loader, as `load` calls it: (root, download, (train, test) sizes).
DATASETS.register("cifar10")(lambda root, download, _: load_cifar10(root, download))
DATASETS.register("fashion-mnist")(lambda root, download, _: load_fashion_mnist(root, download))
DATASETS.register("synthetic")(lambda root, download, sizes: make_synthetic(*sizes))
DATASETS.register("mnist")(lambda root, download, _: load_idx_set("mnist", root, download))
DATASETS.register("kmnist")(lambda root, download, _: load_idx_set("kmnist", root, download))
DATASETS.register("cifar100")(lambda root, download, _: load_cifar100(root, download))
DATASETS.register("svhn")(lambda root, download, _: load_svhn(root, download))


_cache: dict[tuple[str, str], TensorDataset] = {}  # (dataset, where) -> tensors
_cache_lock = threading.Lock()
# Datasets handed to this process as arrays (a Ray node without the files): `_installed_key`
# -> tensors, found before any file is looked for.
_installed: dict[tuple[str, int | None, str], TensorDataset] = {}


def _installed_key(name: str, image_size: int | None, base_dir: str) -> tuple[str, int | None, str]:
    """What names an installed dataset: an image folder also by its size and where its
    relative path starts, a named set by its name alone."""
    if folder.is_folder(name):
        return name, image_size, base_dir
    return name, None, ""


def _cache_key(
    name: str, root: Path, sizes: tuple[int, int], image_size: int | None, base_dir: str
) -> tuple[str, str]:
    if name == "synthetic":
        return name, f"{sizes[0]}x{sizes[1]}"
    if folder.is_folder(name):  # the folder as it is now: a changed image is read again
        try:
            layout = folder.scan(name, base_dir)
        except folder.FolderError as e:
            raise DataError(str(e)) from None
        return name, f"{layout.root.resolve()} {image_size} {folder.files_key(layout)}"
    # files verified against the official checksums are not those read unverified
    return name, f"{root.resolve()} unverified={unverified_data_allowed()}"


def load(
    name: str,
    data_dir: str | Path,
    download: bool = True,
    train_size: int | None = None,
    test_size: int | None = None,
    image_size: int | None = None,
    base_dir: str = "",
) -> TensorDataset:
    """Load (and cache) a dataset by name (or `folder:PATH`, PATH from `base_dir`, its images
    resized to `image_size`); raises DataError with a fix-it message.

    Real datasets come back whole (the caller takes `subset`); the synthetic one is generated
    at the requested size, since making 50,000 images for a 500-image smoke run is waste.
    """
    installed = _installed.get(_installed_key(name, image_size, base_dir))
    if installed is not None:
        return installed
    root = Path(data_dir).expanduser()
    if root.exists() and not root.is_dir():
        raise DataError(f"data_dir {str(root)!r} is a file, not a directory")
    if folder.is_folder(name):

        def loader(root: Path, download: bool, sizes: tuple[int, int]) -> TensorDataset:
            return load_folder(name, image_size, base_dir)

    else:
        try:
            loader = DATASETS.get(name)
        except ValueError as e:
            raise DataError(str(e)) from None
    sizes = (train_size or SYNTHETIC_TRAIN, test_size or SYNTHETIC_TEST)
    key = _cache_key(name, root, sizes, image_size, base_dir)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = loader(root, download, sizes)
        return _cache[key]


def shape(
    name: str, data_dir: str | Path, image_size: int | None = None, base_dir: str = ""
) -> tuple[tuple[int, int, int], int]:
    """A dataset's image shape and number of classes: a named set's without reading it, an
    image folder's from its images (decoded once, then cached); DataError where they cannot
    be had."""
    if name in SHAPES:
        return SHAPES[name]
    ds = load(name, data_dir, image_size=image_size, base_dir=base_dir)
    return ds.shape, ds.classes


def experiment_shape(exp: Experiment) -> tuple[tuple[int, int, int], int] | None:
    """`shape` of an experiment's dataset; None where it cannot be had (said when it loads)."""
    try:
        return shape(exp.dataset, exp.data_dir, exp.image_size, exp.base_dir)
    except DataError:
        return None


def arrays(
    name: str, data_dir: str | Path, image_size: int | None = None, base_dir: str = ""
) -> dict[str, np.ndarray]:
    """A dataset decoded, as plain numpy arrays (images, labels, mean, std, class names): what
    a machine without its files needs, shipped and given to `install` there."""
    ds = load(name, data_dir, image_size=image_size, base_dir=base_dir)
    return {
        **{k: getattr(ds, k).numpy() for k in ("train_x", "train_y", "test_x", "test_y")},
        "mean": np.array(ds.mean),
        "std": np.array(ds.std),
        "classes": np.array(ds.classes),
        "class_names": np.array(ds.class_names, dtype=str),
    }


def install(
    name: str, image_size: int | None, data: dict[str, np.ndarray], base_dir: str = ""
) -> None:
    """Make `data` (from `arrays`) the dataset `name` in this process: `load` returns it
    without looking for files (`image_size` and `base_dir` matter for image folders only)."""
    ds = TensorDataset(
        name,
        torch.from_numpy(data["train_x"]),
        torch.from_numpy(data["train_y"]),
        torch.from_numpy(data["test_x"]),
        torch.from_numpy(data["test_y"]),
        tuple(float(v) for v in data["mean"]),
        tuple(float(v) for v in data["std"]),
        int(data["classes"]),
        tuple(str(c) for c in data["class_names"]),
    )
    _installed[_installed_key(name, image_size, base_dir)] = ds
