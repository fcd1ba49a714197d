"""Errors a user can cause: the CLI prints them as one line, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """Bad config, unreadable source or malformed input: the message says what to fix."""


USER_ERROR_MARKER = "mlcycle-user-error: "
"""Prefix a component prints before a UserError so the runner can show it as one line."""


@contextmanager
def reported() -> Iterator[None]:
    """Print a ``UserError`` as one marked line before it propagates, for the runner to show."""
    try:
        yield
    except UserError as exc:
        print(f"{USER_ERROR_MARKER}{exc}", flush=True)
        raise
