"""Messages the run workers post to the screen, from their threads (post_message only).

They are for the screen alone, so they do not bubble on to the app.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from ..runs.gpus import Gpu
from ..runs.store import RunRecord


@dataclass
class RunUpdated(Message, bubble=False):
    """Run `key` ended an epoch or changed status; its RunState already holds the news.

    (Batch losses reach the RunState without a message: the redraw timer reads them.)
    """

    key: int

    def can_replace(self, message: Message) -> bool:
        """Whether this note makes `message` (an earlier one about the same run) redundant."""
        # The data sits in the RunState, so stale "something changed" notes collapse.
        return isinstance(message, RunUpdated) and message.key == self.key


@dataclass
class RunsFound(Message, bubble=False):
    """The follower thread found runs in the store that nobody here follows yet."""

    records: list[RunRecord]


@dataclass
class GpusRead(Message, bubble=False):
    """The GPU inventory, read again (cnntui.runs.gpus.Gpu records; [] on a machine without)."""

    gpus: list[Gpu]
