"""The keys of `pipeline.stream_state`, as one value type with its parser.

A stream's own row is keyed by the stream (`<instance>.<stream>`): its watermark, or a full
scan's checkpoint. Work that keeps progress beside it has a key of its own after a `#`:
`#backfill` (a backfill), `#backfill@<since>..<until>` (one slice of a sliced backfill, which
also names that slice's advisory lock and queue lock), `#backfill-plan` (the windows a sliced
backfill cut, kept so that the same command resumes the same slices), `#rederive` (a rederive),
`#indexes` (secondary indexes a first load put off, rebuilt by the next run). `pipeline reset`
forgets every key of a stream but `#indexes` (forgetting those would leave a table without its
indexes for good).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Part = Literal["", "backfill", "backfill-plan", "rederive", "indexes"]
PARTS: tuple[Part, ...] = ("", "backfill", "backfill-plan", "rederive", "indexes")

# The stream's own key and everything kept beside it (`$1` the stream's key).
OF_STREAM = "(stream = $1 OR starts_with(stream, $1 || '#'))"


@dataclass(frozen=True)
class StateKey:
    stream: str
    part: Part = ""
    window: str = ""  # a backfill slice's `<since>..<until>`

    def __post_init__(self) -> None:
        if self.window and self.part != "backfill":
            raise ValueError("only a backfill slice has a window")

    def __str__(self) -> str:
        if not self.part:
            return self.stream
        text = f"{self.stream}#{self.part}"
        return f"{text}@{self.window}" if self.window else text

    @classmethod
    def parse(cls, text: str) -> StateKey:
        stream, _, rest = text.partition("#")
        part, _, window = rest.partition("@")
        if part not in PARTS or (window and part != "backfill") or (rest and not part):
            raise ValueError(f"{text!r} is not a stream state key")
        return cls(stream, part, window)  # type: ignore[arg-type]

    @property
    def progress(self) -> bool:
        """Whether `reset` forgets it: all but the deferred indexes."""
        return self.part != "indexes"


def backfill(stream: str, window: str = "") -> StateKey:
    return StateKey(stream, "backfill", window)


def rederive(stream: str) -> StateKey:
    return StateKey(stream, "rederive")


def indexes(stream: str) -> StateKey:
    return StateKey(stream, "indexes")


def backfill_plan(stream: str) -> StateKey:
    return StateKey(stream, "backfill-plan")


__all__ = ["OF_STREAM", "StateKey", "backfill", "backfill_plan", "indexes", "rederive"]
