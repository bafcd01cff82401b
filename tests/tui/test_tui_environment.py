"""The results view's detail line says what the highlighted run ran with."""

from __future__ import annotations

import json

from textual.widgets import Static

from tests.tui.test_tui_80x24 import QUICK, SIZE, shipped_app, stored_run
from tests.waiting import until


async def test_a_results_row_shows_the_versions_device_and_host_its_run_recorded(tmp_path):
    stored_run(tmp_path / "runs", "high-lr", "20260101-000000-aaaaaa", 0.473, **QUICK)
    (summary,) = (tmp_path / "runs" / "high-lr").glob("*/summary.json")
    raw = json.loads(summary.read_text("utf-8"))
    raw |= {"torch_version": "9.9.9", "device_name": "Test GPU (8 GiB)", "host": "node-7"}
    summary.write_text(json.dumps(raw), "utf-8")
    app = shipped_app(tmp_path, QUICK)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("v")
        detail = app.main.query_one("#detail", Static)
        await until(pilot, lambda: "node-7" in str(detail.render()), what="the run's host")
        said = " ".join(str(detail.render()).split())
        assert "torch 9.9.9" in said and "hardware Test GPU (8 GiB)" in said, said
