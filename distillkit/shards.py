"""The one on-disk store of trained networks: a directory of numbered, metadata-checked shards.

IID's pre-trained pool (`pool.py`) and MTT's expert trajectories (`experts.py`) are both kept
this way, so their format, resume and refusal rules live here once. A shard
`<prefix>_00000.pt` is one atomically written dict: a format tag, the metadata of the setting
it was trained in, the training recipe, the ids of what it holds and a payload (state_dicts or
trajectories). Shards are read memory-mapped; a store is grown by training the ids it lacks
into new shards with the next free numbers, so a store grown in several runs holds what one
run would have made.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from distillkit.io import save_torch

T = TypeVar("T")
#: A loaded shard: the dict `ShardKind.write` saved.
Shard = dict[str, Any]


def same(key: str, saved: Any, expected: Any) -> bool:
    """Metadata equality; normalisation statistics only up to float rounding, since they are
    recomputed from the data and may differ in the last bits across machines."""
    if key != "normalisation":
        return saved == expected
    try:
        pairs = [p for k in ("mean", "std") for p in zip(saved[k], expected[k], strict=True)]
    except (KeyError, TypeError, ValueError):  # missing, not sequences, or other lengths
        return False
    return all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) for a, b in pairs)


def mismatch(
    saved: Mapping[str, Any], expected: Mapping[str, Any], keys: Iterable[str]
) -> str | None:
    """The first of `keys` whose saved value differs from the expected one, else None."""
    return next((key for key in keys if not same(key, saved.get(key), expected[key])), None)


@dataclass(frozen=True)
class ShardKind:
    """One kind of store: files `<prefix>_00000.pt`, ... tagged `distillkit.<prefix>/1`, listing
    their ids under `ids_key`; refusals call a shard "<noun> shard" and raise `error`.
    `malformed(shard)` says why a shard's payload disagrees with its ids (None when it agrees).
    """

    prefix: str
    noun: str
    ids_key: str
    error: type[ValueError]
    malformed: Callable[[Shard], str | None]

    @property
    def format(self) -> str:
        return f"distillkit.{self.prefix}/1"

    @property
    def pattern(self) -> str:
        return f"{self.prefix}_*.pt"

    def path(self, directory: str | Path, index: int) -> Path:
        return Path(directory) / f"{self.prefix}_{index:05d}.pt"

    def number(self, path: Path) -> int:
        """The shard number in `path`'s name; -1 for a file that is not one of ours."""
        match = re.fullmatch(rf"{re.escape(self.prefix)}_(\d{{5}})\.pt", path.name)
        return int(match.group(1)) if match else -1

    def paths(self, directory: str | Path) -> list[Path]:
        """The shard files under `directory`, in number order (none for a missing directory)."""
        return sorted(p for p in Path(directory).glob(self.pattern) if self.number(p) >= 0)

    def write(
        self,
        directory: str | Path,
        index: int,
        ids: Iterable[int],
        meta: Mapping[str, Any],
        training: Mapping[str, Any] | None,
        payload: Mapping[str, Any],
    ) -> Path:
        """Shard `index`, written atomically: a killed run never leaves half a shard behind."""
        state = {
            "format": self.format,
            "meta": dict(meta),
            "training": dict(training or {}),
            self.ids_key: [int(i) for i in ids],
            **payload,
        }
        return save_torch(state, self.path(directory, index))

    def load(self, path: Path, hint: str = "") -> Shard:
        """One shard, memory-mapped; any unreadable, foreign or malformed file gets one clear
        message naming it (`hint` ends the message for an unreadable one)."""
        try:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as exc:  # truncated, foreign or corrupt: one clear message
            raise self.error(
                f"{path}: not a readable {self.noun} shard (truncated or foreign file?): "
                f"{exc}{hint}"
            ) from None
        if not isinstance(state, dict) or state.get("format") != self.format:
            raise self.error(
                f"{path}: not a distillkit {self.noun} shard (missing format {self.format!r})"
            )
        why = self.malformed(state)
        if why is not None:
            raise self.error(f"{path}: {self.noun} shard is malformed ({why})")
        return state

    def open(
        self,
        directory: str | Path,
        check: Callable[[Path, Shard, Shard | None], None],
        hint: str = "",
    ) -> list[tuple[Path, Shard]]:
        """Every shard under `directory`, loaded in order; `check(path, shard, first)` refuses
        one of another setting (`first` is the first shard, None for the first itself).
        Empty when there are none: the caller says how to build the store."""
        shards: list[tuple[Path, Shard]] = []
        for path in self.paths(directory):
            state = self.load(path, hint)
            check(path, state, shards[0][1] if shards else None)
            shards.append((path, state))
        return shards

    def fill(
        self,
        directory: str | Path,
        ids: Iterable[int],
        per_shard: int,
        held: Callable[[Path], Iterable[int]],
        train_one: Callable[[int], T],
        write: Callable[[int, list[int], list[T]], Path],
    ) -> list[Path]:
        """Train every id of `ids` the store lacks, `per_shard` to a new shard; the paths written.

        `held(directory)` is asked only when shards exist: it opens them (refusing a store of
        another setting or recipe) and returns their ids. `write(index, ids, trained)` writes one
        shard; new shards take the numbers after the highest one there.
        """
        directory, existing = Path(directory), self.paths(directory)
        done = set(held(directory)) if existing else set()
        todo = [i for i in ids if i not in done]
        index = 1 + max((self.number(p) for p in existing), default=-1)
        written = []
        for start in range(0, len(todo), per_shard):
            chunk = todo[start : start + per_shard]
            written.append(write(index, chunk, [train_one(i) for i in chunk]))
            index += 1
        return written
