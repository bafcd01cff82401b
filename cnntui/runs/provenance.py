"""The git state of an experiments file's folder, recorded with each run it creates: the
commit HEAD names and whether the tree had uncommitted changes.

Asked with the `git` program, with a short timeout each, and never failing: no git, a folder
outside any repository, a repository git refuses (another user's), a repository without a
commit, or a git that takes too long all record nothing (or no dirty flag). The repository's
fsmonitor hook, the one program `git status` would start on the repository's own say, is
turned off; git writes nothing (no index refresh under the training runs' feet).
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

GIT_SECONDS = 3.0  # each git command's limit: `status` of a large tree can take a second


def git_state(folder: str) -> dict[str, Any]:
    """The run summary's `git_commit` and `git_dirty` for experiments file folder `folder`
    ({} for no folder, or one that is not in a git repository git can read). Asked afresh for
    each run (5-15 ms here): a file saved a moment ago makes the next run's tree dirty."""
    if not folder:
        return {}
    head = _git(folder, "rev-parse", "--verify", "--quiet", "HEAD")
    if not head:
        return {}
    state: dict[str, Any] = {"git_commit": head.strip()}
    changes = _git(folder, "status", "--porcelain", "--untracked-files=normal")
    if changes is not None:
        state["git_dirty"] = bool(changes.strip())
    return state


def _git(folder: str, *args: str) -> str | None:
    """What `git -C folder ARGS` prints, or None where it fails, is missing or is too slow."""
    command = ["git", "--no-optional-locks", "-c", "core.fsmonitor=false", "-C", folder, *args]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=GIT_SECONDS,
            stdin=subprocess.DEVNULL,
            env=env,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return None
    return done.stdout if done.returncode == 0 else None
