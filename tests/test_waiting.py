"""The waiting helpers themselves: a wait for a line must read the process it was given."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from tests.waiting import line, rest


@pytest.mark.process
def test_each_new_process_gets_its_own_output_reader() -> None:
    """A process created where a finished one's object was freed reads its own output (keyed
    by id(), it got the old process's spent reader and waited for a line that never came)."""
    for i in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-c", f"print('line {i}')"], stdout=subprocess.PIPE, text=True
        )
        assert line(proc, f"line {i}", timeout=60)[-1] == f"line {i}\n"
        assert rest(proc, timeout=60) == ""
        del proc
        gc.collect()
