"""A run queued for a Ray cluster carries its user model's folder and its image folder's decoded
arrays (cnntui.runs.carry), so a node needs neither and the experiments folder may move away
once the run is queued."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from cnntui.core import data, user_model
from cnntui.core.config import Experiment
from cnntui.runs import carry, lifecycle
from cnntui.runs import store as st
from cnntui.runs.store import RunStore
from tests.core.test_folder_data import make_folder
from tests.helpers import tiny_experiment
from tests.runs.test_ray import NEEDS_RAY, Drain, cluster  # noqa: F401  (cluster: a fixture)

MODELS = """\
import torch
from torch import nn

from blocks import block
from parts.head import head


class Net(nn.Module):
    def __init__(self, in_channels=3, num_classes=10, width=4):
        super().__init__()
        self.body = nn.Sequential(block(in_channels, width), nn.AdaptiveAvgPool2d(1))
        self.head = head(width, num_classes)

    def forward(self, x):
        return self.head(torch.flatten(self.body(x), 1))
"""
BLOCKS = "from torch import nn\n\ndef block(cin, cout):\n    return nn.Conv2d(cin, cout, 3)\n"
HEAD = "from torch import nn\n\ndef head(cin, n):\n    return nn.Linear(cin, n)\n"
CLASS_NAMES = ("bar", "circle", "cross")


def experiments_folder(root: Path) -> Path:
    """A user's folder: models.py importing a sibling module and a package, and an image
    folder of three classes; plus a virtual environment the model does not import."""
    root.mkdir()
    (root / "models.py").write_text(MODELS)
    (root / "blocks.py").write_text(BLOCKS)
    (root / "parts").mkdir()
    (root / "parts" / "__init__.py").write_text("")
    (root / "parts" / "head.py").write_text(HEAD)
    (root / "venv" / "lib").mkdir(parents=True)
    (root / "venv" / "lib" / "site.py").write_text("raise SystemExit('not carried')\n")
    make_folder(root / "imgs", size=12)
    return root


def own_experiment(root: Path, **overrides) -> Experiment:
    return tiny_experiment(
        name="own",
        model="models.py:Net",
        model_args=(("width", 6),),
        dataset="folder:imgs",
        base_dir=str(root),
        train_size=None,
        test_size=None,
        batch_size=6,
        epochs=1,
        **overrides,
    )


def expected_params(exp: Experiment) -> int:
    spec = user_model.parse_spec(exp.model)
    model = user_model.build(spec, exp.model_args, exp.base_dir, (1, 12, 12), 3)
    return sum(p.numel() for p in model.parameters())


def test_python_files_are_the_folder_and_its_packages(tmp_path: Path) -> None:
    root = experiments_folder(tmp_path / "exps")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "__init__.py").write_text("")
    names = [str(p) for p in carry.python_files(root)]
    assert names == ["blocks.py", "models.py", "parts/__init__.py", "parts/head.py"]


def test_a_queued_cluster_run_carries_what_trains_it_after_the_folder_moved(
    tmp_path: Path,
) -> None:
    """Queued for a cluster, a run's directory holds carried.npz; with the experiments folder
    moved away, what it carries builds the same model (sibling imports and all) and gives the
    same images and class names."""
    root = experiments_folder(tmp_path / "exps")
    exp = own_experiment(root, cluster="127.0.0.1:6379")
    params = expected_params(exp)
    before = data.load(exp.dataset, exp.data_dir, image_size=None, base_dir=exp.base_dir)
    store = RunStore(tmp_path / "runs")
    [record] = lifecycle.submit(store, [exp])
    [local] = lifecycle.submit(store, [dataclasses.replace(exp, cluster="", name="here")])
    assert not (local.path / st.CARRIED_FILE).exists()  # a local run carries nothing
    root.rename(tmp_path / "moved")

    carried = st.read_carried(record.path)
    node_exp, aliases = carry.unpack(carried, record.experiment(), tmp_path / "node")
    assert aliases == {str(tmp_path / "node" / "model"): str(root)}
    spec = user_model.parse_spec(node_exp.model)
    model = user_model.build(spec, node_exp.model_args, node_exp.base_dir, (1, 12, 12), 3)
    assert sum(p.numel() for p in model.parameters()) == params
    assert not (tmp_path / "node" / "model" / "venv").exists()
    ds = data.load(node_exp.dataset, node_exp.data_dir, image_size=None, base_dir=str(root))
    assert ds.class_names == CLASS_NAMES
    np.testing.assert_array_equal(ds.train_x.numpy(), before.train_x.numpy())
    np.testing.assert_array_equal(ds.test_y.numpy(), before.test_y.numpy())


def test_a_run_too_large_to_carry_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = experiments_folder(tmp_path / "exps")
    monkeypatch.setattr(st, "MAX_CARRIED_BYTES", 1000)
    store = RunStore(tmp_path / "runs")
    with pytest.raises(st.StoreError) as err:
        lifecycle.submit(store, [own_experiment(root, cluster="127.0.0.1:6379")])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("cannot queue own for the Ray cluster: its model's folder and")
    assert "more than the 1 KiB a run carries to a node" in message
    assert store.runs() == []  # nothing queued


def test_a_carried_file_that_holds_objects_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    np.savez(run_dir / st.CARRIED_FILE, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(st.RunFileError, match=r"carried.npz: unreadable \(.*allow_pickle"):
        st.read_carried(run_dir)


@pytest.mark.ray
@pytest.mark.slow
@NEEDS_RAY
def test_own_model_and_images_train_on_ray_after_the_folder_moved(
    cluster: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Queued with no scheduler running, then the experiments folder renamed away: the Ray
    scheduler started afterwards trains the run to the end on a node, with the user's model
    (its sibling imports too) and the folder's images and class names."""
    root = experiments_folder(tmp_path / "exps")
    exp = own_experiment(root, cluster=cluster)
    params = expected_params(exp)
    store = RunStore(tmp_path / "runs")
    [record] = lifecycle.submit(store, [exp])
    root.rename(tmp_path / "moved")
    Drain(store).join()
    done = RunStore.read(record.path)
    assert done.status == "finished", done.summary
    assert done.summary.params == params
    assert done.summary.class_names == CLASS_NAMES
    assert done.summary.model == "models.py:Net"  # the run's record is the user's
    assert done.experiment().model == "models.py:Net"
    assert done.history().epochs_done == 1
