"""Errors a user can fix, defined at the bottom of the house so every layer can raise them."""

from __future__ import annotations


class ConfigError(ValueError):
    """An impossible or inconsistent configuration (reported as one line, no traceback)."""
