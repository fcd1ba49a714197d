"""Errors a user can cause: the CLI prints them as one line, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad config, unreadable source or malformed input: the message says what to fix."""


USER_ERROR_MARKER = "mlcycle-user-error: "
"""Prefix a component prints before a UserError so the runner can show it as one line."""


class reported:  # noqa: N801 - used as ``with reported():`` in component bodies
    """Print a ``UserError`` as one marked line before it propagates, for the runner to show."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, UserError):
            print(f"{USER_ERROR_MARKER}{exc}", flush=True)
        return False
