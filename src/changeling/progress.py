"""Progress bars for long loops; every caller can switch them off (``--quiet``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def bar(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
) -> tqdm:
    """A tqdm bar writing to stderr; ``enabled=False`` gives a silent one with the same interface."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, leave=False)


def iterate(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
            enabled: bool = True) -> Iterator[T]:
    """Yield from ``iterable`` while showing a bar."""
    with bar(iterable, total=total, desc=desc, unit=unit, enabled=enabled) as b:
        yield from b
