"""The pool of pre-trained, frozen feature extractors that IID's class centralisation samples from.

A pool is a directory of shard files `pool_00000.pt`, ... each holding the state_dicts of a few
networks trained on the real training set (published: 1000 instance-norm ResNet-18s x 40 epochs,
SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256, no augmentation) and the metadata of the
setting they were trained in (dataset, channels, image size, classes, normalisation, ZCA, model).
Opening a pool checks every shard against the run's dataset, so features of another dataset,
resolution or whitening are refused with an error that names the file and the command that
builds the right pool. The store itself (naming, atomic writes, resume) is `shards.py`'s.
Shards are opened once, memory-mapped; one resident network takes the weights of the member
sampled each iteration, so even the published 1000-member pool never has to fit in memory at
once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distillkit.data.real import setting_facts
from distillkit.data.registry import REGISTRY
from distillkit.errors import ConfigError, InputError
from distillkit.evaluation.protocol import EvalSettings, train_network
from distillkit.networks import NetworkFactory
from distillkit.shards import Shard, ShardKind, mismatch

#: Metadata that must match between a pool and the dataset of the run that uses it.
CHECKED_KEYS = ("dataset", "channels", "image_size", "num_classes", "zca", "normalisation")


class PoolError(InputError):
    """A pool that cannot serve this run (unreadable, foreign or mismatched)."""


class PoolNotFoundError(PoolError, FileNotFoundError):
    """No pool where the run looks for one."""


class UnpublishedPoolWarning(UserWarning):
    """A run samples from a pool that is not the published one (its numbers are not the paper's)."""


def _malformed(state: Shard) -> str | None:
    if len(state.get("states", ())) != len(state.get("member_ids", ())):
        return "state_dicts and ids do not agree"
    return None


#: pool_00000.pt, ... tagged "distillkit.pool/1", each holding the state_dicts of a few members.
SHARDS = ShardKind("pool", "pool", "member_ids", PoolError, _malformed)


#: The published pool (IID, DM+ours/pre_model.py: --model ResNet18, --num_premodels 1000,
#: --pre_epochs 40; the DC repo's ResNet18 has width 64). A paper-scale table refuses any other.
PUBLISHED_POOL: dict[str, Any] = {"size": 1000, "epochs": 40, "model": "ResNet18", "width": 64}


@dataclass(frozen=True)
class PoolSettings:
    """The published recipe (IID pre_model.py: SGD 0.01, momentum 0.9, wd 5e-4, 40 epochs)."""

    epochs: int = 40
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256


# -- metadata -----------------------------------------------------------------------------------
def pool_meta(info: Any, factory: NetworkFactory) -> dict[str, Any]:
    """Dataset facts plus the network the pool holds (name, options and module tree)."""
    net = factory(torch.Generator().manual_seed(0))
    options = {k: v for k, v in dict(factory.options).items() if v is not None}
    return {
        **setting_facts(info),
        "model": {"name": str(factory.name), **options},
        "width": first_width(net),
        "architecture": repr(net),
    }


def first_width(net: nn.Module) -> int | None:
    """Channels of the first convolution: the network's width (64 for the published ResNet-18)."""
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    return None if conv is None else int(conv.out_channels)


def published_pool_command(info: Any, directory: str | Path) -> str:
    """The command that builds the published pool (PUBLISHED_POOL) for `info` at `directory`."""
    return pretrain_command(info, directory, published=True)


def pretrain_command(info: Any, directory: str | Path, published: bool = True) -> str:
    """The `distillkit-pretrain` command line that builds a pool for this dataset at `directory`
    (the published size and epochs, spelled out so that nobody mistakes it for a quick one)."""
    parts = ["distillkit-pretrain", f"dataset={info.name}"]
    if _dataset_has_option(str(info.name), "image_size"):
        parts.append(f"dataset.image_size={int(info.image_size[0])}")
    if getattr(info, "zca", False):
        parts.append("dataset.zca=true")
    parts.append(f"pool.dir={directory}")
    if published:
        parts += [f"pool.size={PUBLISHED_POOL['size']}", f"pool.epochs={PUBLISHED_POOL['epochs']}"]
    return " ".join(parts)


def alternative_dir(directory: str | Path, info: Any) -> Path:
    """Where to build a pool for `info` when `directory` holds one for another setting."""
    directory = Path(directory)
    suffix = f"_{info.name}_{int(info.image_size[0])}px" + (
        "_zca" if getattr(info, "zca", False) else ""
    )
    return directory.with_name(directory.name + suffix)


def _dataset_has_option(name: str, option: str) -> bool:
    """Whether `dataset.<option>=` is an override `name` accepts (else the command omits it)."""
    spec = REGISTRY.get(name)
    return spec is not None and option in spec.options


def check_meta(path: Path, saved: Mapping[str, Any], info: Any, command: str) -> None:
    """Refuse a shard made for another dataset; the message names the file, the difference and
    the command that builds a matching pool."""
    expected = setting_facts(info)
    key = mismatch(saved, expected, CHECKED_KEYS)
    if key is not None:
        raise PoolError(
            f"{path}: this pool was trained for {key}={saved.get(key)!r}, but the run uses "
            f"{key}={expected[key]!r}; build a pool for this dataset with `{command}` and "
            "point regularizer.cc.pool at it"
        )


# -- training -----------------------------------------------------------------------------------
def train_member(
    factory: NetworkFactory, data: Any, settings: PoolSettings, generator: torch.Generator
) -> nn.Module:
    """One fresh network trained on the real training set (the evaluation protocol's loop,
    without augmentation or lr decay)."""
    recipe = EvalSettings(
        models=(factory.name,),
        num_models=1,
        epochs=settings.epochs,
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        batch_size=settings.batch_size,
        lr_decay_at=1.0,  # decay epoch == epochs: never
        dsa=False,
    )
    return train_network(factory, data.train_images, data.train_labels, recipe, None, generator)


def write_shard(
    directory: str | Path,
    index: int,
    states: list[Mapping[str, Tensor]],
    meta: Mapping[str, Any],
    member_ids: list[int],
    training: Mapping[str, Any] | None = None,
    accuracies: list[float] | None = None,
) -> Path:
    """One shard file, written atomically: the members' CPU state_dicts plus the metadata."""
    if len(states) != len(member_ids):
        raise ValueError(f"{len(states)} state_dicts for {len(member_ids)} member ids")
    payload = {
        "test_accuracy": [float(a) for a in accuracies or []],
        "states": [{k: v.detach().cpu().clone() for k, v in s.items()} for s in states],
    }
    return SHARDS.write(directory, index, member_ids, meta, training, payload)


def check_pool_size(size: int, members_per_shard: int) -> None:
    """ConfigError unless both counts are >= 1 (checked before any data is loaded)."""
    if size < 1 or members_per_shard < 1:
        raise ConfigError(
            f"pool.size and members_per_shard must be >= 1, got {size}, {members_per_shard}"
        )


def train_pool(
    directory: str | Path,
    data: Any,
    factory: NetworkFactory,
    size: int,
    settings: PoolSettings,
    members_per_shard: int,
    generator_for: Callable[[int], torch.Generator],
    on_member: Callable[[int, nn.Module], float | None] | None = None,
    training_note: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Train members 0..size-1 into `directory`, `members_per_shard` per shard file.

    Resumable: members already there (same dataset, same architecture, same epochs) are kept and
    new shards take the next free numbers; member i draws everything from `generator_for(i)`,
    so a pool grown in several runs holds the same networks as one made at once.
    `on_member(i, net)` may return the member's test accuracy, stored with it.
    """
    directory = Path(directory)
    check_pool_size(size, members_per_shard)
    meta = pool_meta(data.info, factory)
    training = {
        "size": size,
        "epochs": settings.epochs,
        "lr": settings.lr,
        "momentum": settings.momentum,
        "weight_decay": settings.weight_decay,
        "batch_size": settings.batch_size,
        "augmentation": None,
        **dict(training_note or {}),
    }

    def train_one(i: int) -> tuple[dict[str, Tensor], float]:
        net = train_member(factory, data, settings, generator_for(i))
        acc = on_member(i, net) if on_member is not None else None
        return net.state_dict(), float("nan") if acc is None else float(acc)

    def write(index: int, ids: list[int], members: list[tuple[dict[str, Tensor], float]]) -> Path:
        states, accuracies = [m[0] for m in members], [m[1] for m in members]
        return write_shard(directory, index, states, meta, ids, training, accuracies)

    def held(where: Path) -> list[int]:
        return _growable(PretrainedPool.open(where, data.info), meta, settings.epochs)

    return SHARDS.fill(directory, range(size), members_per_shard, held, train_one, write)


def _growable(pool: PretrainedPool, meta: Mapping[str, Any], epochs: int) -> list[int]:
    """The pool's member ids, once it is known to hold networks of this recipe."""
    if pool.meta["architecture"] != meta["architecture"]:
        raise PoolError(
            f"{pool.directory}: holds {pool.meta['model']!r} networks, asked for "
            f"{meta['model']!r}; use another pool.dir"
        )
    if pool.training.get("epochs") != epochs:
        raise PoolError(
            f"{pool.directory}: holds members trained {pool.training.get('epochs')} epochs, "
            f"asked for {epochs}; use another pool.dir"
        )
    return pool.member_ids


# -- reading ------------------------------------------------------------------------------------
class PretrainedPool:
    """The members of one pool directory: opened once, checked, memory-mapped.

    `network(i)` returns one resident frozen network holding member i's weights (reloaded only
    when another member is asked for).
    """

    def __init__(self, directory: Path, shards: list[tuple[Path, Shard]]) -> None:
        self.directory = directory
        self.paths = [path for path, _ in shards]
        self.states = [s for _, state in shards for s in state["states"]]
        self.member_ids = [i for _, state in shards for i in state["member_ids"]]
        self.meta: dict[str, Any] = shards[0][1]["meta"]
        self.training: dict[str, Any] = shards[0][1].get("training", {})
        self.test_accuracy = [a for _, state in shards for a in state.get("test_accuracy", [])]
        self._net: nn.Module | None = None
        self._net_device: str | None = None
        self._loaded = -1

    @classmethod
    def open(cls, directory: str | Path, info: Any) -> PretrainedPool:
        """Every shard under `directory`, each checked against the run's dataset `info`."""
        directory = Path(directory)
        command = pretrain_command(info, directory)
        other = pretrain_command(info, alternative_dir(directory, info))

        def check(path: Path, state: Shard, first: Shard | None) -> None:
            check_meta(path, state["meta"], info, other)
            if first is not None and state["meta"].get("architecture") != first["meta"].get(
                "architecture"
            ):
                raise PoolError(
                    f"{path}: holds {state['meta'].get('model')!r}, other shards "
                    f"{first['meta'].get('model')!r}; keep one architecture per pool"
                )

        shards = SHARDS.open(directory, check, hint=f"; rebuild it with `{command}`")
        if not shards:
            raise PoolNotFoundError(
                f"{directory}: no pre-trained pool ({SHARDS.pattern}) found; build it with "
                f"`{command}` (or point regularizer.cc.pool at an existing pool)"
            )
        return cls(directory, shards)

    def __len__(self) -> int:
        return len(self.states)

    def facts(self) -> dict[str, Any]:
        """(size, epochs, model, width): what decides whether this is the published pool."""
        return {
            "size": len(self),
            "epochs": self.training.get("epochs"),
            "model": self.meta.get("model", {}).get("name"),
            "width": self.meta.get("width"),
        }

    def describe(self) -> dict[str, Any]:
        """What results.json records about the pool: where, its facts, whether it is published."""
        facts = self.facts()
        return {"dir": str(self.directory), **facts, "published": not published_shortfall(facts)}

    def factory(self, device: torch.device | str = "cpu") -> NetworkFactory:
        """Builds networks of the pool's architecture for its dataset shape."""
        meta = self.meta
        options = {k: v for k, v in meta["model"].items() if k != "name"}
        return NetworkFactory(
            meta["model"]["name"],
            meta["channels"],
            meta["num_classes"],
            tuple(meta["image_size"]),
            options,
            device,
        )

    def network(self, index: int, device: torch.device | str = "cpu") -> nn.Module:
        """The resident frozen network (eval mode) with member `index`'s weights."""
        if self._net is None or self._net_device != str(device):
            self._net = self.factory(device).frozen(torch.Generator().manual_seed(0)).eval()
            self._net_device, self._loaded = str(device), -1
        if index != self._loaded:
            self._net.load_state_dict(self.states[index])
            self._loaded = index
        return self._net

    def sample(
        self, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> tuple[int, nn.Module]:
        """A member drawn uniformly from `generator`: (index, frozen network)."""
        index = int(torch.randint(len(self), (1,), generator=generator))
        return index, self.network(index, device)


def published_shortfall(facts: Mapping[str, Any]) -> str | None:
    """How a pool (size, epochs, model, width) differs from PUBLISHED_POOL; None when it is it.

    A pool larger than the published one is fine (the run samples from it uniformly)."""
    gaps = []
    if int(facts.get("size") or 0) < PUBLISHED_POOL["size"]:
        gaps.append(f"{facts.get('size')} members (published {PUBLISHED_POOL['size']})")
    for key in ("epochs", "model", "width"):
        if facts.get(key) != PUBLISHED_POOL[key]:
            gaps.append(f"{key} {facts.get(key)} (published {PUBLISHED_POOL[key]})")
    return ", ".join(gaps) or None


def pool_facts(directory: str | Path) -> dict[str, Any] | None:
    """(size, epochs, model, width) of the pool under `directory` without loading any weights
    into networks (shards are memory-mapped); None when there is no pool there."""
    shards = SHARDS.open(Path(directory), lambda path, state, first: None)
    if not shards:
        return None
    meta, training = shards[0][1]["meta"], shards[0][1].get("training", {})
    return {
        "size": sum(len(state["member_ids"]) for _, state in shards),
        "epochs": training.get("epochs"),
        "model": meta.get("model", {}).get("name"),
        "width": meta.get("width"),
    }
