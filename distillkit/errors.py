"""Errors a user can fix, defined at the bottom of the house so every layer can raise them.

The commands report a `UserError` as one line (`distillkit: error: ...`, exit status 2); any
other exception is a bug and keeps its traceback (exit status 1). Raise a `UserError` only for
what the user can change: an option, an argument, a file or a dataset they point a run at. An
internal invariant stays a plain `ValueError` (or an assertion), so a broken one is seen as a bug.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix: reported as one line, exit 2 (never a traceback)."""


class ConfigError(UserError, ValueError):
    """An impossible or inconsistent configuration: an option's value, a combination of options
    or a command-line argument (a `ValueError` too, for callers that catch those)."""


class InputError(UserError, ValueError):
    """A file or dataset given to a run that cannot serve it: unreadable, malformed, incomplete,
    written by another configuration, or of a shape that does not fit the run (a checkpoint, a
    synthetic set, a saved ZCA state, dataset files, a pool of networks)."""
