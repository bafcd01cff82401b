"""Datasets: CIFAR-10's real on-disk format (generated here), idx files, synthetic data."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import struct
import tarfile
import urllib.error
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from cnntui.core import data
from cnntui.core.data import DataError


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote CIFAR-10's batches: every str as a BINSTRING
    (read back as bytes), numpy under its old module name `numpy.core.multiarray`."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        raw = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str
    dispatch[type] = save_global


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def write_cifar_batches(folder: Path, per_batch: int = 20, seed: int = 0, protocol=None) -> dict:
    """Batch files exactly as CIFAR-10's python version stores them (pickled dicts, written
    by Python 2), or pickled by this Python with `protocol`, as a user's own data may be.
    Their checksums are not the official files': reading them takes UNVERIFIED_ENV."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in [*data.CIFAR10_TRAIN, *data.CIFAR10_TEST]:
        images = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        entry = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": images,
            b"filenames": [b"x.png"] * per_batch,
        }
        raw = py2_pickle(entry) if protocol is None else pickle.dumps(entry, protocol=protocol)
        (folder / name).write_bytes(raw)
        written[name] = (images, labels)
    return written


@pytest.fixture
def own_data(monkeypatch):
    """The user's opt-in to CIFAR-format files that are not the official ones."""
    monkeypatch.setenv(data.UNVERIFIED_ENV, "1")


def test_cifar10_reads_the_python_batch_format(tmp_path: Path, own_data) -> None:
    written = write_cifar_batches(tmp_path / data.CIFAR10_DIR)
    ds = data.load_cifar10(tmp_path, download=False)
    assert ds.train_x.shape == (100, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (20, 3, 32, 32)
    images, labels = written["data_batch_2"]
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, row-major.
    assert torch.equal(ds.train_x[20], torch.from_numpy(images[0].reshape(3, 32, 32)))
    assert ds.train_y[20:40].tolist() == labels
    assert ds.shape == (3, 32, 32) and ds.classes == 10


def _fake_archive(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write_cifar_batches(src / data.CIFAR10_DIR)
    archive = tmp_path / data.CIFAR10_ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / data.CIFAR10_DIR, arcname=data.CIFAR10_DIR)
    return archive


def test_cifar10_download_verifies_and_extracts(tmp_path: Path, monkeypatch, own_data) -> None:
    archive = _fake_archive(tmp_path)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(data, "CIFAR10_MD5", md5)
    calls = []

    def fake_download(url, root, filename, md5sum):
        calls.append((url, filename, md5sum))
        shutil.copy(archive, Path(root) / filename)

    import torchvision.datasets.utils as tvu

    monkeypatch.setattr(tvu, "download_url", fake_download)
    root = tmp_path / "data"
    ds = data.load_cifar10(root)
    assert calls == [(data.CIFAR10_URL, data.CIFAR10_ARCHIVE, md5)]
    assert len(ds.train_y) == 100 and len(ds.test_y) == 20


def test_cifar10_corrupt_archive_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / data.CIFAR10_ARCHIVE).write_bytes(b"not really a tarball")
    with pytest.raises(DataError, match="checksum mismatch"):
        data.load_cifar10(root)


def test_cifar10_offline_says_which_file_to_put_where(tmp_path: Path, monkeypatch) -> None:
    import torchvision.datasets.utils as tvu

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tvu, "download_url", offline)
    root = tmp_path / "data"
    with pytest.raises(DataError) as info:
        data.load_cifar10(root)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"put {data.CIFAR10_ARCHIVE}" in msg and str(root) in msg


def test_a_failed_download_is_not_retried_for_every_experiment(tmp_path, monkeypatch, own_data):
    import torchvision.datasets.utils as tvu

    tries = []

    def offline(*args, **kwargs):
        tries.append(args)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tvu, "download_url", offline)
    root = tmp_path / "data"
    errors = []
    for _ in range(3):  # a suite of three experiments on the missing dataset
        with pytest.raises(DataError) as info:
            data.load("cifar10", root)
        errors.append(str(info.value))
    assert len(tries) == 1 and len(set(errors)) == 1
    write_cifar_batches(root / data.CIFAR10_DIR)  # the user puts the files in place
    assert len(data.load("cifar10", root).train_y) == 100
    monkeypatch.setattr(data, "RETRY_SECONDS", 0.0)  # past the wait, it tries again
    for _ in range(2):
        with pytest.raises(DataError):
            data.load_cifar10(tmp_path / "elsewhere")
    assert len(tries) == 3


def test_cifar10_truncated_batch_is_a_clear_error(tmp_path: Path, own_data) -> None:
    folder = tmp_path / data.CIFAR10_DIR
    write_cifar_batches(folder)
    (folder / "data_batch_3").write_bytes(b"\x80\x02}q")
    with pytest.raises(DataError, match="data_batch_3: not a readable CIFAR-10 batch"):
        data.load_cifar10(tmp_path, download=False)


def _official(monkeypatch, folder: Path) -> None:
    """Make the files in `folder` the "official" ones, as if they were CIFAR-10's."""
    md5s = {f: hashlib.md5((folder / f).read_bytes()).hexdigest() for f in data.CIFAR10_FILE_MD5}
    monkeypatch.setattr(data, "CIFAR10_FILE_MD5", md5s)


def test_official_md5s_are_the_published_ones() -> None:
    """torchvision's CIFAR10 lists the same checksums (it is installed here)."""
    from torchvision.datasets import CIFAR10

    published = dict(CIFAR10.train_list + CIFAR10.test_list)
    assert published == data.CIFAR10_FILE_MD5


def test_files_with_the_official_checksums_are_read_without_opting_in(tmp_path, monkeypatch):
    monkeypatch.delenv(data.UNVERIFIED_ENV, raising=False)
    folder = tmp_path / data.CIFAR10_DIR
    write_cifar_batches(folder)
    _official(monkeypatch, folder)
    assert len(data.load_cifar10(tmp_path, download=False).train_y) == 100


def test_a_batch_that_is_not_the_official_file_is_refused_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv(data.UNVERIFIED_ENV, raising=False)
    folder = tmp_path / data.CIFAR10_DIR
    write_cifar_batches(folder)
    _official(monkeypatch, folder)
    (folder / "data_batch_4").write_bytes(b"\x80\x02}q\x00.")  # any other bytes
    with pytest.raises(DataError) as info:
        data.load_cifar10(tmp_path, download=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{folder / 'data_batch_4'}: not the official CIFAR-10 file (MD5 ")
    assert f"set {data.UNVERIFIED_ENV}=1" in msg


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_own_data_pickled_by_python3_reads_with_the_opt_in(tmp_path, own_data, protocol) -> None:
    written = write_cifar_batches(tmp_path / data.CIFAR10_DIR, protocol=protocol)
    ds = data.load_cifar10(tmp_path, download=False)
    images, labels = written["test_batch"]
    assert torch.equal(ds.test_x.flatten(1), torch.from_numpy(images))
    assert ds.test_y.tolist() == labels


class Payload:
    """A pickle that runs a shell command when it is read: what a hostile data folder holds."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _hostile(marker: Path) -> dict[str, bytes]:
    return {
        "whole file": pickle.dumps(Payload(marker), protocol=2),
        "inside the labels": pickle.dumps(
            {b"data": np.zeros((1, 3072), np.uint8), b"labels": [Payload(marker)]}
        ),
        "object array": pickle.dumps(
            {b"data": np.array([Payload(marker)], dtype=object), b"labels": [0]}
        ),
    }


@pytest.mark.parametrize("opt_in", [False, True], ids=["default", "unverified-data"])
def test_a_hostile_batch_never_runs_code(tmp_path: Path, monkeypatch, opt_in) -> None:
    if opt_in:
        monkeypatch.setenv(data.UNVERIFIED_ENV, "1")
    else:
        monkeypatch.delenv(data.UNVERIFIED_ENV, raising=False)
    marker = tmp_path / "ran"
    folder = tmp_path / data.CIFAR10_DIR
    write_cifar_batches(folder)
    _official(monkeypatch, folder)
    for how, raw in _hostile(marker).items():
        (folder / "data_batch_2").write_bytes(raw)
        with pytest.raises(DataError) as info:
            data.load_cifar10(tmp_path, download=False)
        msg = str(info.value)
        assert not marker.exists(), f"{how}: the payload ran"
        assert "\n" not in msg and msg.startswith(str(folder / "data_batch_2")), how
        if not opt_in:
            assert "not the official CIFAR-10 file" in msg, how
        elif how == "object array":
            assert "refused an array of Python objects" in msg
        else:
            assert "refers to 'posix.system', which a CIFAR-10 batch never holds" in msg, how


def test_a_batch_that_is_a_fifo_is_refused_not_read_forever(tmp_path, own_data) -> None:
    folder = tmp_path / data.CIFAR10_DIR
    write_cifar_batches(folder)
    (folder / "data_batch_3").unlink()
    os.mkfifo(folder / "data_batch_3")  # nothing ever writes to it
    with pytest.raises(DataError, match="data_batch_3: not a regular file"):
        data.load_cifar10(tmp_path, download=False)


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.tobytes())


def test_fashion_mnist_from_idx_files_in_data_dir(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train_x": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "train_y": rng.integers(0, 10, 30).astype(np.uint8),
        "test_x": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "test_y": rng.integers(0, 10, 10).astype(np.uint8),
    }
    for key, filename in data.FASHION_FILES.items():
        (raw / filename).write_bytes(_idx(arrays[key]))
    ds = data.load_fashion_mnist(tmp_path, download=False)
    assert ds.train_x.shape == (30, 1, 28, 28)
    assert torch.equal(ds.test_x[:, 0], torch.from_numpy(arrays["test_x"]))
    assert ds.train_y.tolist() == arrays["train_y"].tolist()


def test_idx_header_mismatch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + b"\0" * 5))
    with pytest.raises(DataError, match="header says"):
        data.read_idx(path)


@pytest.mark.skipif(not data.DEBIAN_FASHION_DIR.exists(), reason="dataset-fashion-mnist absent")
def test_fashion_mnist_falls_back_to_debian_files(tmp_path: Path) -> None:
    ds = data.load_fashion_mnist(tmp_path / "empty", download=False)
    assert ds.train_x.shape == (60_000, 1, 28, 28) and ds.test_x.shape == (10_000, 1, 28, 28)
    assert sorted(ds.train_y.unique().tolist()) == list(range(10))


def test_synthetic_is_deterministic_and_cifar_shaped() -> None:
    a = data.make_synthetic(200, 50)
    b = data.make_synthetic(200, 50)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert a.shape == (3, 32, 32) and a.classes == 10 and a.train_x.dtype == torch.uint8


def test_synthetic_classes_are_separable_beyond_chance() -> None:
    """Nearest class mean on raw pixels beats chance (10%) by far: there is signal to learn."""
    ds = data.make_synthetic(2000, 500)
    x = ds.train_x.float().flatten(1)
    means = torch.stack([x[ds.train_y == c].mean(0) for c in range(10)])
    pred = torch.cdist(ds.test_x.float().flatten(1), means).argmin(1)
    assert (pred == ds.test_y).float().mean() > 0.5


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(DataError, match="is a file, not a directory"):
        data.load("cifar10", f)


def test_subset_takes_the_first_examples() -> None:
    ds = data.make_synthetic(100, 40).subset(10, 5)
    assert len(ds.train_y) == 10 and len(ds.test_y) == 5
