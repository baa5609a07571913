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
#: Keys that configs saved by earlier versions carry and today's do not: the method's name (now
#: its class's) and DC's protocol values, which moved into the blocks that read them
#: (`synthetic.init`, `eval.augment`, `eval.epochs`). Dropped from a saved config before it is
#: checked or compared, so old checkpoints resume and old synthetic sets evaluate.
RETIRED_KEYS = frozenset(
    {"method.name", "method.init", "method.eval_augment", "method.eval_epochs"}
)


def drop_retired(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """`cfg` without the RETIRED_KEYS (a copy; nested blocks copied where a key is dropped)."""
    out = dict(cfg)
    for dotted in RETIRED_KEYS:
        section, key = dotted.split(".", 1)
        block = out.get(section)
        if isinstance(block, Mapping) and key in block:
            out[section] = {k: v for k, v in block.items() if k != key}
    return out


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
