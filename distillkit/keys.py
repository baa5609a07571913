"""Unknown configuration keys: one line naming the key and the nearest valid one.

At the bottom of the house so every block's reader (settings classes, DSA, runtime, datasets,
models) refuses a key it does not read the same way, before any data is loaded.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from distillkit.errors import ConfigError

#: Keys every component's block may carry besides its fields (Hydra's instantiate target).
PASSTHROUGH_KEYS = frozenset({"_target_"})


def unknown_key(section: str, key: str, allowed: Iterable[str]) -> ConfigError:
    """The one-line error for a key `section.key` that nothing reads, with the nearest valid
    key when one is close (difflib), else the valid ones."""
    valid = sorted(str(k) for k in allowed if k not in PASSTHROUGH_KEYS)
    near = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]}?" if near else f"valid: {', '.join(valid) or 'none'}"
    path = f"{section}.{key}" if section else str(key)
    return ConfigError(f"{path}: unknown key ({hint})")


def check_keys(cfg: Mapping[str, Any] | None, section: str, allowed: Iterable[str]) -> None:
    """Refuse the first key of `cfg` (sorted) that is not in `allowed` (nor `_target_`)."""
    allowed = set(allowed) | PASSTHROUGH_KEYS
    for key in sorted(str(k) for k in (cfg or {})):
        if key not in allowed:
            raise unknown_key(section, key, allowed)
