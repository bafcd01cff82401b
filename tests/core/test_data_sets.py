"""Torchvision's classic sets by name (MNIST, KMNIST, CIFAR-100, SVHN), each read from files in
its real on-disk format that these tests make, and datasets shipped as arrays."""

from __future__ import annotations

import gzip
import shutil
import struct
import tarfile
import urllib.error
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from cnntui.core import config, data
from cnntui.core.data import DataError
from tests.core.test_data import py2_pickle


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.tobytes())


def write_idx_set(folder: Path, train: int = 30, test: int = 10) -> dict[str, np.ndarray]:
    """The four gzipped idx files of MNIST and KMNIST (the format of Debian's Fashion-MNIST)."""
    rng = np.random.default_rng(1)
    arrays = {
        "train_x": rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
        "train_y": rng.integers(0, 10, train).astype(np.uint8),
        "test_x": rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
        "test_y": rng.integers(0, 10, test).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, filename in data.FASHION_FILES.items():
        (folder / filename).write_bytes(_idx(arrays[key]))
    return arrays


@pytest.mark.parametrize(("name", "sub"), [("mnist", "MNIST/raw"), ("kmnist", "KMNIST/raw")])
def test_the_mnist_family_reads_idx_files_where_torchvision_keeps_them(tmp_path, name, sub):
    arrays = write_idx_set(tmp_path / sub)
    ds = data.load(name, tmp_path, download=False)
    assert ds.shape == (1, 28, 28) and ds.classes == 10 and ds.train_x.dtype == torch.uint8
    assert torch.equal(ds.test_x[:, 0], torch.from_numpy(arrays["test_x"]))
    assert ds.train_y.tolist() == arrays["train_y"].tolist()
    assert config.images_used(name, None, None) == (60_000, 10_000)


def test_class_names_of_the_new_sets() -> None:
    assert config.class_names("mnist", 10)[3] == "3"
    assert config.class_names("kmnist", 10)[:3] == ("o", "ki", "su")
    assert config.class_names("svhn", 10)[0] == "0"
    names = config.class_names("cifar100", 100)
    assert len(set(names)) == 100 and names[0] == "apple" and names[-1] == "worm"


def test_mnist_downloads_each_file_checksummed_trying_the_next_mirror(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_idx_set(src)
    calls = []

    def fake_download(url, root, filename, md5):
        calls.append((url, md5))
        if "ossci" in url:
            raise urllib.error.URLError("first mirror down")
        shutil.copy(src / filename, Path(root) / filename)

    import torchvision.datasets.utils as tvu

    monkeypatch.setattr(tvu, "download_url", fake_download)
    ds = data.load_idx_set("mnist", tmp_path / "data")
    assert len(ds.train_y) == 30
    spec = data.IDX_SETS["mnist"]
    assert (spec.mirrors[1] + "train-images-idx3-ubyte.gz", spec.md5["train_x"]) in calls
    assert len(calls) == 8  # each of four files: the first mirror, then the second


def test_the_published_checksums_are_torchvisions() -> None:
    from torchvision.datasets import CIFAR100, KMNIST, MNIST, SVHN

    for name, cls in (("mnist", MNIST), ("kmnist", KMNIST)):
        spec = data.IDX_SETS[name]
        listed = dict(cls.resources)
        assert {data.FASHION_FILES[k]: v for k, v in spec.md5.items()} == listed
        assert spec.mirrors[0] == cls.mirrors[0]
    assert dict(CIFAR100.train_list + CIFAR100.test_list) == data.CIFAR100_FILE_MD5
    assert (CIFAR100.url, CIFAR100.tgz_md5) == (data.CIFAR100_URL, data.CIFAR100_MD5)
    for split, (filename, md5) in data.SVHN_FILES.items():
        assert SVHN.split_list[split] == [data.SVHN_URL + filename, filename, md5]


@pytest.mark.parametrize(
    ("name", "title", "put"),
    [
        ("mnist", "MNIST", "train-images-idx3-ubyte.gz"),
        ("kmnist", "KMNIST", "train-images-idx3-ubyte.gz"),
        ("cifar100", "CIFAR-100", "cifar-100-python.tar.gz"),
        ("svhn", "SVHN", "train_32x32.mat"),
    ],
)
def test_offline_is_one_line_naming_the_file_to_put_where(tmp_path, monkeypatch, name, title, put):
    import torchvision.datasets.utils as tvu

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tvu, "download_url", offline)
    with pytest.raises(DataError) as info:
        data.load(name, tmp_path / "data")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{title} is not in ")
    assert f"could not be downloaded (<urlopen error no network>); put {put} from http" in msg


# --- CIFAR-100 --------------------------------------------------------------------------


def write_cifar100(folder: Path, train: int = 40, test: int = 10) -> dict[str, tuple]:
    """CIFAR-100's python files: pickled dicts with fine and coarse labels, as Python 2 wrote."""
    rng = np.random.default_rng(2)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, n in (("train", train), ("test", test)):
        images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n).tolist()
        entry = {
            b"filenames": [b"x.png"] * n,
            b"batch_label": b"training batch 1 of 1",
            b"fine_labels": fine,
            b"coarse_labels": [f // 5 for f in fine],
            b"data": images,
        }
        (folder / name).write_bytes(py2_pickle(entry))
        written[name] = (images, fine)
    return written


def test_cifar100_reads_its_pickles_with_the_restricted_reader(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(data.UNVERIFIED_ENV, "1")
    written = write_cifar100(tmp_path / data.CIFAR100_DIR)
    ds = data.load("cifar100", tmp_path, download=False)
    assert ds.shape == (3, 32, 32) and ds.classes == 100
    images, fine = written["test"]
    assert torch.equal(ds.test_x.flatten(1), torch.from_numpy(images))
    assert ds.test_y.tolist() == fine  # the fine labels, not the coarse ones


def test_cifar100_refuses_files_that_are_not_the_official_ones(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(data.UNVERIFIED_ENV, raising=False)
    folder = tmp_path / data.CIFAR100_DIR
    write_cifar100(folder)
    with pytest.raises(DataError, match=r"train: not the official CIFAR-100 file \(MD5 "):
        data.load_cifar100(tmp_path, download=False)


def test_a_hostile_cifar100_pickle_never_runs_code(tmp_path, monkeypatch) -> None:
    import os
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    monkeypatch.setenv(data.UNVERIFIED_ENV, "1")
    folder = tmp_path / data.CIFAR100_DIR
    write_cifar100(folder)
    (folder / "train").write_bytes(pickle.dumps({b"data": Payload(), b"fine_labels": [0]}))
    with pytest.raises(DataError, match="not a readable CIFAR-100 batch file"):
        data.load_cifar100(tmp_path, download=False)
    assert not (tmp_path / "ran").exists()


def test_cifar100_download_verifies_and_extracts(tmp_path, monkeypatch) -> None:
    import hashlib

    src = tmp_path / "src"
    write_cifar100(src / data.CIFAR100_DIR)
    archive = tmp_path / data.CIFAR100_ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / data.CIFAR100_DIR, arcname=data.CIFAR100_DIR)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(data, "CIFAR100_MD5", md5)
    monkeypatch.setenv(data.UNVERIFIED_ENV, "1")
    import torchvision.datasets.utils as tvu

    monkeypatch.setattr(
        tvu, "download_url", lambda url, root, f, m: shutil.copy(archive, Path(root) / f)
    )
    assert len(data.load_cifar100(tmp_path / "data").train_y) == 40


# --- SVHN: MATLAB 5 files -----------------------------------------------------------------

MI_INT8, MI_UINT8, MI_INT32, MI_UINT32, MI_MATRIX, MI_COMPRESSED = 1, 2, 5, 6, 14, 15
MX_DOUBLE, MX_UINT8 = 6, 9


def _element(kind: int, payload: bytes) -> bytes:
    if len(payload) <= 4 and kind != MI_MATRIX:  # small data element, as MATLAB writes names
        return struct.pack("<HH", kind, len(payload)) + payload.ljust(4, b"\0")
    return struct.pack("<II", kind, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def _matrix(name: str, array: np.ndarray, mx_class: int, stored: np.ndarray) -> bytes:
    """A compressed numeric matrix: MATLAB stores a double array of small whole numbers as
    uint8 data (`stored`), as SVHN's y is."""
    kind = MI_UINT8 if stored.dtype == np.uint8 else MI_INT32
    body = (
        _element(MI_UINT32, struct.pack("<II", mx_class, 0))
        + _element(MI_INT32, struct.pack(f"<{array.ndim}i", *array.shape))
        + _element(MI_INT8, name.encode())
        + _element(kind, stored.tobytes(order="F"))
    )
    inner = struct.pack("<II", MI_MATRIX, len(body)) + body
    packed = zlib.compress(inner)
    return struct.pack("<II", MI_COMPRESSED, len(packed)) + packed


def write_svhn_mat(path: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A .mat file as SVHN's: X uint8 (32, 32, 3, N), y double (N, 1) with 10 for the digit 0."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
    header = b"MATLAB 5.0 MAT-file, Platform: GLNXA64".ljust(116, b" ")
    header += b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    raw = header + _matrix("X", x, MX_UINT8, x) + _matrix("y", y, MX_DOUBLE, y)
    path.write_bytes(raw)
    return x, y


def test_svhn_reads_matlab_files_without_scipy(tmp_path) -> None:
    x, y = write_svhn_mat(tmp_path / "train_32x32.mat", 20, 0)
    write_svhn_mat(tmp_path / "test_32x32.mat", 8, 1)
    ds = data.load("svhn", tmp_path, download=False)
    assert ds.shape == (3, 32, 32) and len(ds.train_y) == 20 and len(ds.test_y) == 8
    # X[h, w, c, n] is image n's channel c at row h, column w.
    assert torch.equal(ds.train_x[5, 2], torch.from_numpy(x[:, :, 2, 5].copy()))
    labels = y[:, 0].astype(int)
    assert ds.train_y.tolist() == [0 if v == 10 else v for v in labels]
    assert 10 not in ds.train_y.tolist() and 0 in ds.train_y.tolist()


def test_a_file_that_is_not_a_mat_file_is_one_clear_line(tmp_path) -> None:
    (tmp_path / "train_32x32.mat").write_bytes(b"<html>not found</html>")
    write_svhn_mat(tmp_path / "test_32x32.mat", 8, 1)
    with pytest.raises(DataError, match=r"train_32x32\.mat: not a MATLAB 5 \.mat file"):
        data.load_svhn(tmp_path, download=False)


# --- shipping a dataset as arrays ---------------------------------------------------------


def test_a_dataset_travels_as_arrays_to_a_process_without_its_files(tmp_path) -> None:
    from tests.core.test_folder_data import make_folder

    root = make_folder(tmp_path / "imgs")
    name = f"folder:{root}"
    shipped = data.arrays(name, tmp_path, image_size=14)
    assert shipped["train_x"].shape == (36, 1, 14, 14)
    shutil.rmtree(root)  # the node has no images
    data.install(name, 14, shipped)
    ds = data.load(name, tmp_path / "elsewhere", image_size=14)
    assert ds.class_names == ("bar", "circle", "cross") and ds.classes == 3
    assert torch.equal(ds.train_x, torch.from_numpy(shipped["train_x"]))
