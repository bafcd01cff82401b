"""The headless core never loads textual; `cnntui --help` does not even load torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEADLESS = [
    "cnntui.core.config",
    "cnntui.core.data",
    "cnntui.core.models",
    "cnntui.core.engine",
    "cnntui.runs.store",
    "cnntui.core.history",
    "cnntui.core.events",
    "cnntui.runs.executors",
    "cnntui.report.export",
    "cnntui.cli",
    "cnntui.runs.ray_executor",
]


def loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


@pytest.mark.process
@pytest.mark.parametrize("module", HEADLESS)
def test_headless_module_does_not_import_textual(module: str) -> None:
    mods = loaded_after(f"import {module}")
    assert "textual" not in mods and "plotext" not in mods


@pytest.mark.process
def test_help_does_not_import_torch() -> None:
    mods = loaded_after(
        "import sys; sys.argv = ['cnntui', '--help']\n"
        "from cnntui.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    assert "cnntui.cli" in mods
    assert "torch" not in mods and "textual" not in mods and "matplotlib" not in mods


@pytest.mark.process
def test_list_does_not_import_torch() -> None:
    mods = loaded_after("from cnntui.cli import main\nmain(['--list'])")
    assert "torch" not in mods


@pytest.mark.process
def test_ray_scheduler_imports_neither_ray_nor_torch_until_it_runs() -> None:
    """The lifecycle and the Ray scheduler module load without Ray: they import it when a run
    goes to a cluster, so a machine without the ray extra uses cnntui as before."""
    mods = loaded_after("import cnntui.runs.ray_executor, cnntui.runs.lifecycle")
    assert "ray" not in mods and "torch" not in mods
