"""Image folders as datasets: `dataset = "folder:imgs"` with imgs/train/<class>/ and
imgs/test/<class>/, checked before anything runs, decoded once and cached beside the images."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnntui.core import config, data, folder
from cnntui.core.config import ConfigError
from cnntui.core.data import DataError
from cnntui.core.events import EpochEnd, Finished
from tests.helpers import cnntui, tiny_experiment

CLASSES = ("circle", "bar", "cross")  # written unsorted: the dataset sorts them


def _pattern(k: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """An easy class pattern under noise: a bright left half, top half, or diagonal."""
    img = rng.integers(0, 60, (size, size)).astype(np.uint8)
    half = size // 2
    if k == 0:
        img[:, :half] += 150
    elif k == 1:
        img[:half, :] += 150
    else:
        np.fill_diagonal(img, 250)
        np.fill_diagonal(np.fliplr(img), 250)
    return img


def make_folder(
    root: Path, size: int = 28, colour: bool = False, per_class: tuple[int, int] = (12, 4)
) -> Path:
    """An image folder of three classes, PNGs of `size` pixels, grayscale or RGB."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "test"), per_class, strict=True):
        for k, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                gray = _pattern(k, size, rng)
                array = np.stack([gray, gray // 2, 255 - gray], axis=2) if colour else gray
                Image.fromarray(array).save(d / f"{i:03d}.png")
    return root


def spec(root: Path) -> str:
    return f"folder:{root}"


def test_a_folder_reads_as_sorted_classes_of_uint8_images(tmp_path) -> None:
    root = make_folder(tmp_path / "imgs")
    ds = data.load(spec(root), tmp_path / "data")
    assert ds.shape == (1, 28, 28) and ds.classes == 3
    assert ds.class_names == ("bar", "circle", "cross")
    assert len(ds.train_y) == 36 and len(ds.test_y) == 12
    assert ds.train_y.tolist() == [0] * 12 + [1] * 12 + [2] * 12
    first = np.asarray(Image.open(root / "train" / "bar" / "000.png"))
    assert np.array_equal(ds.train_x[0, 0].numpy(), first)


def test_colour_images_keep_three_channels(tmp_path) -> None:
    ds = data.load(spec(make_folder(tmp_path / "imgs", 32, colour=True)), tmp_path)
    assert ds.shape == (3, 32, 32)


def test_image_size_resizes_every_image(tmp_path) -> None:
    root = make_folder(tmp_path / "imgs", 28)
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(root / "test" / "bar" / "big.png")
    ds = data.load(spec(root), tmp_path, image_size=16)
    assert ds.shape == (1, 16, 16) and ds.test_x.shape[0] == 13
    native = data.load(spec(root), tmp_path)  # the first image's size, the odd one resized
    assert native.shape == (1, 28, 28)


def test_mixed_modes_become_rgb_with_a_note(tmp_path, capsys) -> None:
    root = make_folder(tmp_path / "imgs", 28)
    rgb = np.zeros((28, 28, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(root / "train" / "cross" / "red.png")
    ds = data.load(spec(root), tmp_path)
    assert ds.shape == (3, 28, 28)
    assert "48 grayscale images of 49 converted to RGB" in capsys.readouterr().err
    red = ds.train_x[ds.train_y == 2][-1]  # the last of "cross": red.png sorts after 0xx.png
    assert red[0].eq(200).all() and red[1].eq(0).all()


def test_the_second_load_decodes_no_image(tmp_path, monkeypatch) -> None:
    root = make_folder(tmp_path / "imgs")
    first = folder.decode(spec(root))
    assert not first.from_cache
    caches = list(root.glob(".cnntui-cache-*.npz"))
    assert len(caches) == 1
    np.load(caches[0], allow_pickle=False)  # plain arrays: nothing pickled

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(Image, "open", no_decoding)
    second = folder.decode(spec(root))
    assert second.from_cache and second.classes == first.classes
    assert np.array_equal(second.train_x, first.train_x)
    config.check_value("dataset", spec(root))
    config.check_new("dataset", spec(root))  # the headers were checked when it was cached


def test_a_changed_image_is_decoded_again(tmp_path) -> None:
    root = make_folder(tmp_path / "imgs")
    folder.decode(spec(root))
    path = root / "train" / "bar" / "000.png"
    Image.fromarray(np.full((28, 28), 7, np.uint8)).save(path)
    os.utime(path, ns=(1, 1))
    again = folder.decode(spec(root))
    assert not again.from_cache and int(again.train_x[0, 0, 0, 0]) == 7


def test_a_folder_that_takes_no_file_loads_without_a_cache(tmp_path, monkeypatch) -> None:
    root = make_folder(tmp_path / "imgs")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(folder.tempfile, "mkstemp", read_only)
    assert len(folder.decode(spec(root)).train_y) == 36
    assert not list(root.glob(".cnntui-cache-*"))


def test_class_names_and_counts_reach_config(tmp_path) -> None:
    root = make_folder(tmp_path / "imgs")
    assert config.class_names(spec(root), 3) == ("bar", "circle", "cross")
    assert config.images_used(spec(root), None, None) == (36, 12)
    assert config.images_used(spec(root), 10, None) == (10, 12)


def _toml(dataset: str) -> str:
    return f'[defaults]\nepochs = 1\ndataset = "{dataset}"\n\n[[experiment]]\nname = "a"\n'


def _refused(dataset: str) -> str:
    with pytest.raises(ConfigError) as info:
        config.parse(_toml(dataset), "exp.toml")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("exp.toml:3:1: "), msg
    return msg


def test_bad_folders_are_refused_at_the_dataset_line(tmp_path) -> None:
    root = make_folder(tmp_path / "imgs")
    assert "does not exist" in _refused(spec(tmp_path / "nowhere"))
    (root / "test" / "circle" / "000.png").rename(root / "test" / "stray.png")
    for f in (root / "test" / "circle").iterdir():
        f.unlink()
    assert "no images in class 'circle'" in _refused(spec(root))
    (root / "test" / "circle").rmdir()
    assert "class 'circle' is in train/ but not in test/" in _refused(spec(root))
    (root / "train" / "circle").rename(root / "train" / ".hidden")
    (root / "test" / "extra").mkdir()
    Image.new("L", (28, 28)).save(root / "test" / "extra" / "x.png")
    assert "class 'extra' is in test/ but not in train/" in _refused(spec(root))


def test_missing_splits_and_classes_are_refused(tmp_path) -> None:
    root = tmp_path / "imgs"
    (root / "train").mkdir(parents=True)
    assert "no test/ folder" in _refused(spec(root))
    (root / "test").mkdir()
    assert "no class folders" in _refused(spec(root))


def test_an_unreadable_image_is_named(tmp_path) -> None:
    root = make_folder(tmp_path / "imgs")
    bad = root / "train" / "cross" / "005.png"
    bad.write_bytes(b"not a png at all")
    msg = _refused(spec(root))
    assert f"{bad}: not a readable image" in msg
    with pytest.raises(DataError, match=r"005\.png: not a readable image"):
        data.load_folder(spec(root))


def test_a_truncated_image_is_named_when_decoded(tmp_path) -> None:
    root = make_folder(tmp_path / "imgs")
    bad = root / "test" / "bar" / "001.png"
    buf = io.BytesIO()
    Image.fromarray(np.arange(784, dtype=np.uint16).reshape(28, 28).astype(np.uint8)).save(
        buf, "PNG"
    )
    bad.write_bytes(buf.getvalue()[:-40])  # the header is fine, the pixels are cut short
    with pytest.raises(DataError) as info:
        data.load_folder(spec(root))
    assert str(info.value).startswith(f"{bad}: not a readable image")


def test_a_bare_folder_prefix_and_unknown_names_are_refused() -> None:
    assert "folder:PATH names a folder" in _refused("folder:")
    msg = _refused("mnsit")
    assert "did you mean 'mnist'" in msg and "folder:PATH" in msg


def test_image_size_is_a_checked_setting() -> None:
    text = "[defaults]\nimage_size = 0\n\n[[experiment]]\nname = 'a'\n"
    with pytest.raises(ConfigError, match=r"exp.toml:2:1: 'image_size' = 0 is out of range"):
        config.parse(text, "exp.toml")
    assert config.parse(text.replace("0", "24"), "exp.toml").experiments[0].image_size == 24


@pytest.mark.slow
@pytest.mark.parametrize(("size", "colour"), [(28, False), (32, True)], ids=["gray28", "rgb32"])
def test_a_folder_trains_a_lenet_end_to_end(tmp_path, size, colour) -> None:
    from cnntui.core.engine import train

    root = make_folder(tmp_path / "imgs", size, colour, per_class=(40, 10))
    exp = tiny_experiment(
        dataset=spec(root), train_size=None, test_size=None, epochs=4, batch_size=8, lr=0.02
    )
    events = list(train(exp))
    assert isinstance(events[-1], Finished), events[-1]
    last = [e for e in events if isinstance(e, EpochEnd)][-1]
    assert last.test_acc > 0.9  # three easy classes


@pytest.mark.slow
@pytest.mark.process
def test_list_counts_a_folders_images_and_a_bad_folder_exits_2(tmp_path) -> None:
    make_folder(tmp_path / "imgs")
    (tmp_path / "experiments.toml").write_text(_toml("folder:imgs"))
    listed = cnntui("--list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "36 train / 12 test images" in listed.stdout
    (tmp_path / "experiments.toml").write_text(_toml("folder:missing"))
    refused = cnntui("--list", cwd=tmp_path)
    assert refused.returncode == 2
    missing = tmp_path.resolve() / "missing"  # found from the experiments file's folder
    assert refused.stderr.strip().endswith(
        f"experiments.toml:3:1: image folder '{missing}' does not exist"
    ), refused.stderr


@pytest.mark.process
def test_the_config_checks_folders_without_importing_numpy_or_pillow() -> None:
    import subprocess
    import sys

    code = (
        "import sys, cnntui.core.config as c; "
        "print(sorted(m for m in ('numpy', 'PIL', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
@pytest.mark.process
def test_a_folders_class_names_reach_the_exported_tables(tmp_path) -> None:
    make_folder(tmp_path / "imgs")
    toml = _toml("folder:imgs").replace("epochs = 1", "epochs = 1\nbatch_size = 8\ndevice = 'cpu'")
    (tmp_path / "experiments.toml").write_text(toml)
    done = cnntui("--run", "a", "--export", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    header = (tmp_path / "exports" / "ungrouped" / "per_class.csv").read_text().splitlines()[0]
    assert header.split(",")[4:7] == ["bar", "circle", "cross"], header
    assert list((tmp_path / "imgs").glob(".cnntui-cache-native.npz"))


def _study_beside(root: Path, model: str = "lenet") -> Path:
    """experiments.toml in `root`'s parent, naming the folder by its relative path."""
    path = root.parent / "experiments.toml"
    toml = _toml(f"folder:{root.name}").replace("dataset", f'model = "{model}"\ndataset', 1)
    path.write_text(toml.replace("epochs = 1", "epochs = 1\nbatch_size = 8\ndevice = 'cpu'"))
    return path


def test_a_folders_path_is_found_from_the_experiments_files_folder(tmp_path, monkeypatch) -> None:
    root = make_folder(tmp_path / "study" / "imgs")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    exp = config.load(_study_beside(root)).experiments[0]
    assert exp.base_dir == str(root.parent)
    assert config.images_used(exp.dataset, None, None, exp.base_dir) == (36, 12)
    assert data.load(exp.dataset, "data", base_dir=exp.base_dir).classes == 3


SEVEN = """\
from torch import nn


def seven():
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(7))
"""


def test_the_build_check_runs_a_batch_of_the_folders_own_shape(tmp_path) -> None:
    root = make_folder(tmp_path / "imgs", size=20)
    (tmp_path / "nets.py").write_text(SEVEN)
    path = _study_beside(root, "nets.py:seven")
    file = config.load(path)
    with pytest.raises(ConfigError) as err:
        config.check_models(file.experiments, file, data.experiment_shape)
    assert str(err.value) == (
        f"{path}:5:1: experiment 'a': nets.py:seven gives (2, 7) for a batch of shape "
        "(2, 1, 20, 20) (folder:imgs); it must give (2, 3): one column per class"
    )


@pytest.mark.slow
@pytest.mark.process
def test_a_run_keeps_its_folders_class_names_after_the_folder_is_gone(tmp_path) -> None:
    root = make_folder(tmp_path / "imgs")
    path = _study_beside(root)
    done = cnntui("--run", "a", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    root.rename(tmp_path / "moved")  # the file follows it; the run read it where it was
    path.write_text(path.read_text().replace("folder:imgs", "folder:moved"))
    exported = cnntui("--export", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    header = (tmp_path / "exports" / "ungrouped" / "per_class.csv").read_text().splitlines()[0]
    assert header.split(",")[4:7] == ["bar", "circle", "cross"], header
