"""One way a component reads its configuration: a frozen dataclass that checks its own values.

A method or add-on declares `Settings = SomeSettings`; `SomeSettings.from_config(cfg, "method")`
keeps the keys that name a field, converts each to the field's type and checks its range, so a
bad value is one line naming its dotted path (`method.lr_img must be > 0, got -1`) before any
data is loaded. A key that names no field is refused the same way, with the nearest valid key
(`method.batch_reall: unknown key (did you mean batch_real?)`): a misspelt override, `++`
addition or tuned-file key never runs silently.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any, Self

from distillkit.errors import ConfigError
from distillkit.keys import check_keys


def component_class(target: Any, base: type, unknown: str) -> type:
    """The class a config's `_target_` names, which must subclass `base`; `unknown` starts
    every error line (e.g. "unknown method 'dm'")."""
    if not target:
        raise ConfigError(f"{unknown}: its config names no class (_target_)")
    from hydra.utils import get_class  # hydra loads only where configs name classes

    try:
        cls = get_class(str(target))
    except Exception as exc:  # hydra wraps import errors in its own types
        detail = " ".join(str(exc).split())[:160]
        raise ConfigError(f"{unknown}: cannot import {target} ({detail})") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{unknown}: {target} is not a {base.__module__}.{base.__qualname__}")
    return cls


def ranged(default: Any, *, minimum: float | None = None, above: float | None = None) -> Any:
    """A field whose value must be >= `minimum` or > `above` (checked by `from_config`)."""
    return dataclasses.field(default=default, metadata={"minimum": minimum, "above": above})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base of every component's settings; subclasses add fields and may override `check`."""

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, section: str = "") -> Self:
        """The settings named in `cfg` (others take their defaults), typed and range-checked;
        a key that names no field is a ConfigError."""
        cfg = cfg or {}
        check_keys(cfg, section, cls.keys())
        hints = typing.get_type_hints(cls)
        values = {}
        for field in dataclasses.fields(cls):
            if field.name not in cfg:
                continue
            path = f"{section}.{field.name}" if section else field.name
            value = _convert(cfg[field.name], hints[field.name], path)
            _check_range(value, field.metadata, path)
            values[field.name] = value
        settings = cls(**values)
        settings.check()  # raises ConfigError; anything else is a bug and keeps its traceback
        return settings

    @classmethod
    def keys(cls) -> frozenset[str]:
        """The keys this block may set: its fields."""
        return frozenset(f.name for f in dataclasses.fields(cls))

    def check(self) -> None:
        """Checks across fields (single-field ranges are declared with `ranged`)."""


def _convert(value: Any, hint: Any, path: str) -> Any:
    """`value` as the field's type: int accepts YAML's 1.0, bool only true/false, None where
    the field allows it."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, _UnionType) else ()
    if options:
        if value is None and type(None) in options:
            return None
        hint = next(o for o in options if o is not type(None))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if hint is int:
        ok = not isinstance(value, bool) and isinstance(value, int | float) and value == int(value)
        if not ok:
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return int(value)
    if hint is float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path} must be a number, got {value!r}") from None
        if isinstance(value, bool) or math.isnan(number):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        return number
    if hint is str:
        return str(value)
    return value


def _check_range(value: Any, metadata: Mapping[str, Any], path: str) -> None:
    if value is None or not isinstance(value, int | float):
        return
    minimum, above = metadata.get("minimum"), metadata.get("above")
    if minimum is not None and not value >= minimum:
        raise ConfigError(f"{path} must be >= {minimum:g}, got {value}")
    if above is not None and not value > above:
        raise ConfigError(f"{path} must be > {above:g}, got {value}")


_UnionType = type(int | None)
