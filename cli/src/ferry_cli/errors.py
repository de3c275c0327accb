"""The one error type the CLI prints (``error: <message>``, exit code 1) instead of a traceback."""

from __future__ import annotations


class CliError(Exception):
    """Something the user can fix; the message says what and how."""
