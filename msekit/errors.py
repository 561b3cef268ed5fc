"""The one exception type msekit raises for problems a user can fix."""

from __future__ import annotations


class MsekitError(Exception):
    """A user-facing error: bad input, a missing file or model, a mismatch between artifacts.

    The message is one line that says what went wrong, where, and what to do about it.
    The CLI prints it to stderr without a traceback and exits with status 1.
    """


class MediaError(MsekitError):
    """A video or audio file cannot be decoded (corrupt, truncated, empty, unsupported)."""


class StoreError(MsekitError):
    """A feature store is missing, malformed, or was made with other settings."""
