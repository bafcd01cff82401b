"""Regenerate docs/screenshot.svg: the TUI on the shipped experiments.toml, trained on the
synthetic dataset (no download), with three runs finished and overlaid and others running.

    .venv/bin/python docs/screenshot.py        # about a minute on 2 CPU cores
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnntui.tui.app import make_app  # noqa: E402

SETTINGS = {"dataset": "synthetic", "train_size": 1024, "test_size": 256, "device": "cpu"}


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = make_app(ROOT / "experiments.toml", SETTINGS, Path(tmp) / "runs", Path(tmp), 2)
        async with app.run_test(size=(110, 32)) as pilot:
            await pilot.press("a")
            session = app.main.session
            while sum(s.status == "finished" for s in session.runs.values()) < 3:
                await asyncio.sleep(0.2)
            await pilot.press("space", "down", "space", "down", "space")
            await asyncio.sleep(1.0)
            app.clear_notifications()
            await pilot.pause(0.5)
            app.save_screenshot("screenshot.svg", str(ROOT / "docs"))
            await pilot.press("q", "y")


if __name__ == "__main__":
    asyncio.run(main())
