"""The examples shipped in examples/ work as their README section says, run as a user runs
them: copied somewhere else, images made by their script, then `cnntui --run all --export`."""

from __future__ import annotations

import csv
import importlib.util
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cnntui.runs.store import RunStore
from tests.helpers import cnntui

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CLASSES = ["bars", "circles", "crosses"]
WIDTHS = {"vgg.model_args=width-8": 8, "vgg.model_args=width-16": 16}


def _copy(name: str, to: Path) -> Path:
    """The example as its files are committed: no images, runs or exports it made in place."""
    made_here = shutil.ignore_patterns("imgs", "runs", "exports", "__pycache__")
    return Path(shutil.copytree(EXAMPLES / name, to, ignore=made_here))


def _parameters(models_py: Path, width: int) -> int:
    """sum(p.numel()) of the example's SmallVGG as cnntui builds it for 1 channel, 3 classes."""
    spec = importlib.util.spec_from_file_location("own_model_example", models_py)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.SmallVGG(in_channels=1, num_classes=3, width=width)
    return sum(p.numel() for p in net.parameters())


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))


@pytest.mark.slow
@pytest.mark.process
def test_the_own_model_example_learns_its_three_classes_and_exports_them(tmp_path) -> None:
    study = _copy("own-model", tmp_path / "own-model")
    made = subprocess.run(
        [sys.executable, "make_images.py"], cwd=study, capture_output=True, text=True, timeout=120
    )
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in (study / "imgs" / "test").iterdir()) == CLASSES
    config = str(study / "experiments.toml")
    done = cnntui("--config", config, "--run", "all", "--export", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    store = RunStore(tmp_path / "runs")
    for name, width in WIDTHS.items():
        runs = store.runs(name)
        assert sorted(r.seed for r in runs) == [0, 1]
        for run in (r.summary for r in runs):
            assert run.status == "finished" and run.final_test_acc is not None
            assert run.final_test_acc > 0.9, (name, run.seed, run.final_test_acc)
            assert run.params == _parameters(study / "models.py", width)
            assert run.class_names == tuple(CLASSES)
    exports = tmp_path / "exports" / "own-model"
    rows = {r["name"]: r for r in _csv(exports / "results.csv")}
    for name, width in WIDTHS.items():
        assert int(rows[name]["params"]) == _parameters(study / "models.py", width)
        assert rows[name]["model_args"] == f"width={width}"
    header = _csv(exports / "per_class.csv")[0]
    assert [k for k in header if k in CLASSES] == CLASSES
    lines = (exports / "per_class.md").read_text().splitlines()
    assert [x.split(" | ")[0] for x in lines if x.startswith(("| bars", "| c"))] == [
        f"| {c}" for c in CLASSES
    ]
    for name in [*WIDTHS, "lenet"]:
        assert (tmp_path / "exports" / name / "confusion.png").stat().st_size > 10_000
