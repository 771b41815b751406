"""Progress bars for the long loops (extract frames, train steps, convert frames).

A bar when stderr is a terminal, nothing when it is not (DVC, Prefect, CI, a log file): the
stages' own summary lines already say what happened, and a bar redrawn into a log is noise.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def on_terminal() -> bool:
    """Whether a person is watching: stderr is a TTY."""
    return sys.stderr.isatty()


def progress(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
    """`items`, with a bar on a terminal and unchanged otherwise."""
    if not on_terminal():
        yield from items
        return
    yield from tqdm(items, total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)


def counter(total: int | None, initial: int = 0, desc: str = "", unit: str = "it", unit_scale: bool = False) -> tqdm:
    """A bar to `update()` by hand (a loop that is not a plain iteration); disabled off a terminal.
    `total` None: a count without an end (no time left); `unit_scale`: 1.2M rather than 1200000."""
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale, dynamic_ncols=True,
                leave=False, disable=not on_terminal())
