"""Where a run's time goes: model inference (generation and scoring), training, or
everything else.

Code that generates or trains runs under ``charge(kind)``; the time is added to that
kind's running total. Nested charges bill the innermost kind only (the revisions an SFT
round generates count as generation, not training), so the totals never overlap and
the rest of a phase's wall time is the loop's own overhead.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

KINDS = ("generate", "train")

_totals: defaultdict[str, float] = defaultdict(float)
_local = threading.local()


@contextmanager
def charge(kind: str) -> Iterator[None]:
    """Bill the time inside the block to ``kind`` (and not to an enclosing charge)."""
    stack: list[list] = _local.__dict__.setdefault("stack", [])
    now = time.perf_counter()
    if stack:  # the enclosing kind stops accruing while this one runs
        outer = stack[-1]
        _totals[outer[0]] += now - outer[1]
    stack.append([kind, now])
    try:
        yield
    finally:
        now = time.perf_counter()
        inner = stack.pop()
        _totals[inner[0]] += now - inner[1]
        if stack:
            stack[-1][1] = now


def charged(kind: str) -> Callable[[F], F]:
    """Decorator: every call of the function is billed to ``kind``."""

    def wrap(fn: F) -> F:
        @wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with charge(kind):
                return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


def totals() -> dict[str, float]:
    """Seconds billed so far to each kind, this process."""
    return {k: _totals[k] for k in KINDS}


def split(before: dict[str, float], seconds: float) -> dict[str, float]:
    """A phase of ``seconds`` wall time, split into generation, training and the rest,
    from the totals before it began (``before``) and now."""
    now = totals()
    spent = {k: round(now[k] - before.get(k, 0.0), 3) for k in KINDS}
    return {"seconds": round(seconds, 3), **spent, "other": round(seconds - sum(spent.values()), 3)}
