"""DD-Ranking's fair scores of a synthetic set (`eval.scores=true`, `distillkit-eval --scores`).

After the run's usual evaluation, the ingredient accuracies of `distillkit.metrics.scores`
(its ACCURACY_KEYS) are measured under distillkit's protocol:

- `syn`: the synthetic set under the run's own protocol: the usual evaluation, reused as is;
- `random`: a random real subset of the same IPC (drawn from its own stream `scores/random`, so
  it is the same subset for every method of a seed) under that protocol, with the same lr;
- `syn_hard`: the synthetic set with hard labels (the run's evaluation again when it already
  uses hard labels);
- `syn_aug` / `rdm_aug` and `syn_noaug` / `rdm_noaug`: both sets with the run's augmentation
  (per-sample DSA or DC's, and CutMix) and with none of it; the run's own protocol is one of the
  two, so it is reused. A protocol without augmentation gets the run's `dsa` block's DSA as the
  "with" side (`fallback_augment`);
- `full_hard`: one network trained on the whole real training split (hard labels, the
  evaluation's optimiser and augmentation, one lr decay, `eval.scores_full_epochs` epochs, no
  CutMix, its own seed), cached on disk as a named JSON file and read back, never retrained
  silently (`eval.scores_recompute=true` replaces it).

Every evaluation here starts from a fresh generator with the seed of the run's final
evaluation stream: model i of the random subset has the initial weights of model i of the
synthetic set (and, for sets of the same size, the same data order and augmentation draws).
Accuracies are final-epoch test accuracies, as everywhere in distillkit.

`eval.scores_lr_grid` chooses the random subset's lr per protocol by its accuracy on the
`dataset.validation` split (the validation split in the place of the test split), never on test;
the synthetic side keeps the run's evaluation lr. DD-Ranking selects on test (see
benchmarks/results/ddranking_reading.md).

The random subset has `ipc` real images per class, the set's storage budget: with IDM's mosaic
factor the synthetic set trains on factor**2 decoded images per stored one, so the two sides
differ in size (and their models share only the initial weights). A method evaluated in turn
(FTD with `ema_eval=reference`) keeps its own `syn`; the other ingredients use fresh models. The
random side's model seeds follow the run's final evaluation stream (`eval/<iterations>`), so
runs with another number of iterations score the same subset with other models.

Scores follow DD-Ranking's aggregation: one score per evaluation model from that model's
accuracies (the full-data accuracy shared by all), then mean and population std. Accuracies and
scores are fractions (N(x) of differences of fractions, in [0, 1]); `percent` beside them holds
DD-Ranking's percentage-point values of the same accuracies, for comparison only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import statistics
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distillkit.data.real import setting_facts
from distillkit.distributed import World
from distillkit.errors import ConfigError, InputError
from distillkit.evaluation.protocol import EvalSettings, evaluate_set
from distillkit.metrics.scores import ACCURACY_KEYS, scores_from_accuracies
from distillkit.seeding import fresh_stream

#: The random subset's stream (of the run seed): the same subset for every method of a seed.
RANDOM_STREAM = "scores/random"
#: Models trained to choose an lr on the validation split draw from this stream (fresh per lr).
VALIDATION_STREAM = "scores/validation"
#: The full-data model's stream, of this fixed seed: one model per dataset, model and protocol,
#: whatever the run's seed.
FULL_DATA_SEED = 0
FULL_DATA_STREAM = "scores/full_data"
#: `format` of a full-data cache file.
CACHE_FORMAT = "distillkit-full-data/1"
#: Dataset keys that do not change the data (where it lives, a saved set's ZCA state).
_NOT_DATA = frozenset({"root", "download", "zca_state"})

#: The protocols an ingredient is measured under: (labels, augmentation), where augmentation is
#: "run" (the evaluation's own), "fallback" (the run's DSA, for a protocol without any) or "none".
_RUN, _FALLBACK, _NONE = "run", "fallback", "none"
#: Ingredient -> (which set, protocol name).
INGREDIENTS: dict[str, tuple[str, str]] = {
    "syn": ("synthetic", "run"),
    "random": ("random", "run"),
    "syn_hard": ("synthetic", "hard"),
    "syn_aug": ("synthetic", "aug"),
    "rdm_aug": ("random", "aug"),
    "syn_noaug": ("synthetic", "noaug"),
    "rdm_noaug": ("random", "noaug"),
}


# -- settings and setup -----------------------------------------------------------------------
def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/distillkit/full_data, else ~/.cache/distillkit/full_data."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "distillkit" / "full_data"


def cache_dir(settings: EvalSettings) -> Path:
    """`eval.scores_cache`, or the default directory."""
    if settings.scores_cache is None:
        return default_cache_dir()
    return Path(settings.scores_cache).expanduser()


def check_setup(settings: EvalSettings, data: Any) -> None:
    """What needs the data to check: an lr grid needs a validation split to choose on."""
    if settings.scores and settings.scores_lr_grid and getattr(data, "validation", None) is None:
        raise ConfigError(
            "eval.scores_lr_grid chooses the lr on the validation split, and dataset.validation "
            "is 0: set dataset.validation (images per class held out), never select on test"
        )


def augmentation_active(augment: Any, settings: EvalSettings) -> bool:
    """Whether the protocol augments its training batches (per-sample or CutMix)."""
    per_sample = augment is not None and bool(getattr(augment, "enabled", True))
    return per_sample or settings.cutmix_p > 0


def protocols(
    settings: EvalSettings, augment: Any, fallback_augment: Any
) -> dict[str, tuple[str, str] | None]:
    """Each protocol name as (labels, augmentation kind); None when it cannot be built (no
    augmentation to add to a protocol that has none)."""
    own = _RUN if augmentation_active(augment, settings) else _NONE
    fallback_ok = fallback_augment is not None and bool(getattr(fallback_augment, "enabled", True))
    aug = (settings.labels, _RUN) if own == _RUN else (settings.labels, _FALLBACK)
    return {
        "run": (settings.labels, own),
        "hard": ("hard", own),
        "aug": aug if own == _RUN or fallback_ok else None,
        "noaug": (settings.labels, _NONE),
    }


def _variant(
    settings: EvalSettings, augment: Any, fallback_augment: Any, spec: tuple[str, str]
) -> tuple[EvalSettings, Any]:
    """The settings and augmentation of protocol `spec`."""
    labels, kind = spec
    if kind == _RUN:
        return dataclasses.replace(settings, labels=labels, scores=False), augment
    variant = dataclasses.replace(settings, labels=labels, cutmix_p=0.0, scores=False)
    return variant, (fallback_augment if kind == _FALLBACK else None)


def describe_augment(augment: Any) -> str:
    """A stable one-line description of an evaluation augmentation (for records and keys)."""
    if augment is None:
        return "none"
    if type(augment).__repr__ is not object.__repr__:
        return repr(augment)
    options = ", ".join(f"{k}={v!r}" for k, v in sorted(vars(augment).items()))
    return f"{type(augment).__name__}({options})"


# -- the scores -------------------------------------------------------------------------------
def compute_scores(
    images: Tensor,
    labels: Tensor,
    data: Any,
    factory: Any,
    settings: EvalSettings,
    augment: Any,
    seed: int,
    *,
    ipc: int,
    syn_accuracy: Mapping[str, Mapping[str, Any]],
    eval_stream: str,
    lr: float | None = None,
    dataset_cfg: Mapping[str, Any] | None = None,
    fallback_augment: Any = None,
    progress: bool = False,
    world: World | None = None,
) -> dict[str, Any]:
    """The `scores` block of results.json for the synthetic set (images, labels).

    `syn_accuracy`: the run's evaluation of it ({arch: {mean, std, runs, n}}, percent), drawn
    from stream `eval_stream` of `seed`; `lr`: its evaluation lr (None: `settings.lr`); `ipc`:
    images per class of the random subset; `dataset_cfg`: the run's `dataset` block (names the
    full-data cache file); `fallback_augment`: the "with augmentation" side when the protocol has
    none (the run's DSA); `world`: the ranks the models are spread over (rank 0 writes the
    cache)."""
    check_setup(settings, data)
    missing = [m for m in settings.models if m not in syn_accuracy]
    if missing:
        raise ValueError(f"the run's evaluation has no accuracy for {missing}")
    random_draw = fresh_stream(seed, RANDOM_STREAM)
    random_images, random_labels = data.sample_per_class(int(ipc), random_draw)
    sets = {
        "synthetic": (images.detach(), labels.detach()),
        "random": (random_images, random_labels),
    }
    specs = protocols(settings, augment, fallback_augment)
    run_spec = specs["run"]
    measured: dict[tuple[str, tuple[str, str]], dict[str, Any]] = {
        ("synthetic", run_spec): {
            "accuracy": syn_accuracy,
            "lr": settings.lr if lr is None else float(lr),
            "source": "the run's evaluation",
        }
    }
    selections: dict[str, Any] = {}
    ingredients: dict[str, Any] = {}
    for key, (which, name) in INGREDIENTS.items():
        spec = specs[name]
        if spec is None:
            ingredients[key] = None
            continue
        if (which, spec) not in measured:
            variant, variant_augment = _variant(settings, augment, fallback_augment, spec)
            chosen, selection = lr, None
            if which == "random" and settings.scores_lr_grid:
                selection = choose_lr(
                    *sets[which], data, factory, variant, variant_augment, seed,
                    progress=progress, world=world,
                )  # fmt: skip
                chosen = selection["chosen"]
                selections[_spec_name(spec)] = selection
            accuracy = evaluate_set(
                *sets[which],
                data,
                factory,
                variant,
                variant_augment,
                fresh_stream(seed, eval_stream),
                lr=chosen,
                progress=progress,
                desc=f"scores: {which} ({_spec_name(spec)})",
                world=world,
            )
            measured[(which, spec)] = {
                "accuracy": accuracy,
                "lr": variant.lr if chosen is None else float(chosen),
                "source": "trained here",
            }
        entry = measured[(which, spec)]
        ingredients[key] = {
            "set": which,
            "labels": spec[0],
            "augmentation": _augmentation_label(spec[1], augment, fallback_augment, settings),
            "lr": entry["lr"],
            "source": entry["source"],
            "reuses": next(
                (k for k, v in ingredients.items() if v and v["_id"] == (which, spec)), None
            ),
            "_id": (which, spec),
        }
    full = {
        arch: full_data_accuracy(
            factory,
            arch,
            data,
            settings,
            augment,
            dataset_cfg or {},
            progress=progress,
            world=world,
        )  # fmt: skip
        for arch in settings.models
    }
    models = {
        arch: _model_scores(arch, ingredients, measured, full[arch], settings)
        for arch in settings.models
    }
    for entry in ingredients.values():
        if entry is not None:
            entry.pop("_id")
    ingredients["full_hard"] = {
        "set": "full real training split",
        "labels": "hard",
        "augmentation": describe_augment(augment),
        "lr": settings.lr,
        "source": "cache or trained once: see models.<arch>.full_data",
    }
    first = settings.models[0]
    head = models[first]
    return {
        "units": "fraction",
        "aggregation": "one score per evaluation model from that model's accuracies (the "
        "full-data accuracy shared), then mean and population std (DD-Ranking's)",
        "weight": settings.scores_weight,
        "gamma": settings.scores_gamma,
        "random_subset": {
            "stream": RANDOM_STREAM,
            "seed": int(seed),
            "images_per_class": int(ipc),
            "images": int(random_images.shape[0]),
        },
        "model_seeds": f"stream {eval_stream!r} of seed {seed} (the run's final evaluation)",
        "ingredients": ingredients,
        "lr_selection": None
        if not settings.scores_lr_grid
        else {
            "split": "validation",
            "grid": list(settings.scores_lr_grid),
            "applies_to": "the random subset (the synthetic set keeps the run's evaluation lr)",
            "by_protocol": selections,
        },
        "models": models,
        "headline": {
            "model": first,
            **{k: head[k] for k in ("hlr", "ior", "lrs", "lrs_std", "ars", "ars_std")},
            "lrs_percent": head["percent"]["lrs"],
            "ars_percent": head["percent"]["ars"],
        },
    }


def _spec_name(spec: tuple[str, str]) -> str:
    return f"labels={spec[0]}, augmentation={spec[1]}"


def _augmentation_label(kind: str, augment: Any, fallback: Any, settings: EvalSettings) -> str:
    if kind == _NONE:
        return "none"
    chosen = augment if kind == _RUN else fallback
    text = describe_augment(chosen)
    if kind == _RUN and settings.cutmix_p > 0:
        text += f" + CutMix(p={settings.cutmix_p}, beta={settings.cutmix_beta})"
    return text if kind == _RUN else f"{text} (the run's dsa block: its protocol has none)"


def _model_scores(
    arch: str,
    ingredients: Mapping[str, Any],
    measured: Mapping[tuple[str, tuple[str, str]], Mapping[str, Any]],
    full: Mapping[str, Any],
    settings: EvalSettings,
) -> dict[str, Any]:
    """Per-model ingredient accuracies (fractions), per-run scores and their mean and std."""
    runs: dict[str, list[float] | None] = {}
    for key in ACCURACY_KEYS:
        if key == "full_hard":
            continue
        entry = ingredients.get(key)
        if entry is None:
            runs[key] = None
            continue
        runs[key] = [a / 100.0 for a in measured[entry["_id"]]["accuracy"][arch]["runs"]]
    n = len(runs["syn"] or [])
    lengths = {k: len(v) for k, v in runs.items() if v is not None}
    if set(lengths.values()) != {n}:
        raise ValueError(f"{arch}: ingredients with different numbers of runs: {lengths}")
    full_fraction = full["accuracy"] / 100.0
    runs = {"full_hard": [full_fraction] * n, **runs}
    per_run: dict[str, list[dict[str, Any]]] = {"fraction": [], "percent": []}
    # ARS needs all four augmentation accuracies: without a "with" side it is left out.
    ars_keys = ("syn_aug", "rdm_aug", "syn_noaug", "rdm_noaug")
    scored = {
        k: None if k in ars_keys and any(runs[a] is None for a in ars_keys) else v
        for k, v in runs.items()
    }
    for i in range(n):
        values = {k: None if v is None else v[i] for k, v in scored.items()}
        for units, scale in (("fraction", 1.0), ("percent", 100.0)):
            given = {k: None if v is None else v * scale for k, v in values.items()}
            per_run[units].append(
                scores_from_accuracies(
                    **given,
                    weight=settings.scores_weight,
                    gamma=settings.scores_gamma,
                    percent=units == "percent",
                )
            )
    return {
        "accuracies": {k: None if v is None else statistics.fmean(v) for k, v in runs.items()},
        "runs": runs,
        **_aggregate(per_run["fraction"]),
        "lrs_runs": [r["lrs"] for r in per_run["fraction"]],
        "ars_runs": [r["ars"] for r in per_run["fraction"]],
        "percent": _aggregate(per_run["percent"]),
        "full_data": dict(full),
    }


def _aggregate(per_run: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean (and for LRS and ARS population std) of the per-run scores."""
    out: dict[str, Any] = {}
    for key in ("hlr", "ior", "alpha", "lrs", "beta", "ars"):
        values = [r[key] for r in per_run]
        if any(v is None for v in values):
            out[key] = None
            if key in ("lrs", "ars"):
                out[f"{key}_std"] = None
            continue
        out[key] = statistics.fmean(values)
        if key in ("lrs", "ars"):
            out[f"{key}_std"] = statistics.pstdev(values) if len(values) > 1 else 0.0
    return out


# -- lr selection (validation only) -----------------------------------------------------------
def choose_lr(
    images: Tensor,
    labels: Tensor,
    data: Any,
    factory: Any,
    settings: EvalSettings,
    augment: Any,
    seed: int,
    *,
    progress: bool = False,
    world: World | None = None,
) -> dict[str, Any]:
    """The lr of `settings.scores_lr_grid` whose models score best on the VALIDATION split.

    Every lr trains the same models (a fresh generator of stream `scores/validation`), tested
    on `data.validation_view()`, whose test split is the validation split; the real test split
    is never handed to these evaluations. The score of an lr is its mean validation accuracy
    over the evaluation architectures; ties go to the earlier lr in the grid."""
    if getattr(data, "validation", None) is None:
        raise ConfigError("eval.scores_lr_grid needs dataset.validation > 0")
    validation = data.validation_view()
    tried: list[dict[str, float]] = []
    for lr in settings.scores_lr_grid:
        accuracy = evaluate_set(
            images,
            labels,
            validation,
            factory,
            settings,
            augment,
            fresh_stream(seed, VALIDATION_STREAM),
            lr=lr,
            progress=progress,
            desc=f"scores: lr {lr:g} on validation",
            world=world,
        )
        tried.append(
            {"lr": lr, "validation": statistics.fmean(r["mean"] for r in accuracy.values())}
        )
    best = max(tried, key=lambda t: t["validation"])  # the first of equals
    return {"split": "validation", "tried": tried, "chosen": best["lr"]}


# -- the full real data -----------------------------------------------------------------------
def full_data_recipe(settings: EvalSettings, arch: str) -> EvalSettings:
    """One model of `arch`, hard labels, the evaluation's optimiser and batch size,
    `scores_full_epochs` epochs with one lr x `lr_gamma` at `lr_decay_at`, no CutMix."""
    return dataclasses.replace(
        settings,
        models=(arch,),
        num_models=1,
        epochs=settings.scores_full_epochs,
        extra_epoch=False,
        lr_milestones=(),
        cutmix_p=0.0,
        at=(),
        stacked=False,
        labels="hard",
        scores=False,
    )


def full_data_key(
    factory: Any,
    arch: str,
    data: Any,
    settings: EvalSettings,
    augment: Any,
    dataset_cfg: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything the full-data accuracy depends on, JSON-normalised (the cache file's name is
    its hash): the data, the network and the protocol."""
    net = factory.for_architecture(arch)
    recipe = full_data_recipe(settings, arch)
    key = {
        "format": CACHE_FORMAT,
        "dataset": {
            **setting_facts(data.info),
            "options": {k: v for k, v in sorted(dict(dataset_cfg).items()) if k not in _NOT_DATA},
            "train_images": int(data.train_images.shape[0]),
            "test_images": int(data.test_images.shape[0]),
        },
        "model": {
            "name": net.name,
            "options": dict(sorted(dict(net.options).items())),
            "channels": int(net.channels),
            "num_classes": int(net.num_classes),
            "image_size": [int(s) for s in net.image_size],
        },
        "protocol": {
            "labels": "hard",
            "epochs": recipe.epochs,
            "lr": recipe.lr,
            "lr_decay": {"at": recipe.lr_decay_at, "gamma": recipe.lr_gamma},
            "momentum": recipe.momentum,
            "weight_decay": recipe.weight_decay,
            "batch_size": recipe.batch_size,
            "augmentation": describe_augment(augment),
            "accuracy": "final epoch, test split",
            "seed": {"seed": FULL_DATA_SEED, "stream": FULL_DATA_STREAM},
        },
    }
    return json.loads(json.dumps(key, default=str))


def cache_path(directory: Path, key: Mapping[str, Any]) -> Path:
    """<dataset>_<model>_e<epochs>_<hash of the key>.json under `directory`."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    parts = (key["dataset"]["dataset"], key["model"]["name"], f"e{key['protocol']['epochs']}")
    stem = "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", str(p)) for p in parts)
    return directory / f"{stem}_{digest}.json"


def full_data_accuracy(
    factory: Any,
    arch: str,
    data: Any,
    settings: EvalSettings,
    augment: Any,
    dataset_cfg: Mapping[str, Any],
    *,
    progress: bool = False,
    world: World | None = None,
) -> dict[str, Any]:
    """The full-data accuracy of `arch` (percent) with where it came from: read from its cache
    file when that exists (unless `scores_recompute`), else trained once and written there (by
    rank 0 of a `world` of several)."""
    key = full_data_key(factory, arch, data, settings, augment, dataset_cfg)
    path = cache_path(cache_dir(settings), key)
    world = world or World.single()
    stored = None
    if world.is_main and path.exists() and not settings.scores_recompute:
        stored = read_cache(path, key)
    # Rank 0's file decides for every rank (another node may not see it yet), so all of them
    # train the model together or none does.
    stored = world.broadcast_object(stored)
    if stored is not None:
        return {
            "accuracy": float(stored["accuracy"]),
            "source": "cache",
            "path": str(path),
            "made": stored.get("made"),
        }
    replaced = path.exists()
    started = time.perf_counter()
    accuracy = train_full_data(
        factory, arch, data, settings, augment, progress=progress, world=world
    )
    made = {
        "seconds": round(time.perf_counter() - started, 3),
        "device": str(data.device),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
    from distillkit.io import save_json

    if world.is_main:
        save_json(
            {
                "what": "accuracy of one network trained on the whole real training split, for "
                "distillkit's fair scores (distillkit/metrics/fair_scores.py)",
                "format": CACHE_FORMAT,
                "accuracy": accuracy,
                "recipe": key,
                "made": made,
            },
            path,
        )
    source = (
        "trained (eval.scores_recompute: the cache file was replaced)" if replaced else "trained"
    )
    return {"accuracy": accuracy, "source": source, "path": str(path), "made": made}


def read_cache(path: Path, key: Mapping[str, Any]) -> dict[str, Any]:
    """A cache file, checked to hold an accuracy made by exactly `key`'s recipe."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(
            f"{path}: unreadable full-data cache file ({error}); remove it or set "
            "eval.scores_recompute=true"
        ) from None
    accuracy = stored.get("accuracy") if isinstance(stored, dict) else None
    if isinstance(accuracy, bool) or not isinstance(accuracy, int | float):
        raise InputError(f"{path}: a full-data cache file without an accuracy; remove it")
    if not 0 <= accuracy <= 100:
        raise InputError(f"{path}: full-data accuracy {accuracy!r} is not a percentage; remove it")
    if stored.get("recipe") != key:
        raise InputError(
            f"{path}: a full-data cache file of another recipe (its 'recipe' differs); remove it "
            "or set eval.scores_recompute=true"
        )
    return stored


def train_full_data(
    factory: Any,
    arch: str,
    data: Any,
    settings: EvalSettings,
    augment: Any,
    *,
    progress: bool = False,
    world: World | None = None,
) -> float:
    """One network of `arch` trained on the whole real training split (`full_data_recipe`),
    from its own generator; its final test accuracy in percent."""
    recipe = full_data_recipe(settings, arch)
    result = evaluate_set(
        data.train_images,
        data.train_labels,
        data,
        factory,
        recipe,
        augment,
        fresh_stream(FULL_DATA_SEED, FULL_DATA_STREAM),
        progress=progress,
        desc=f"scores: full data ({arch})",
        world=world,
    )
    return float(result[arch]["runs"][0])


def _versions() -> dict[str, str]:
    import distillkit

    return {"distillkit": distillkit.__version__, "torch": torch.__version__}


# -- what the run logs ------------------------------------------------------------------------
def scalars(scores: Mapping[str, Any]) -> dict[str, float]:
    """scores/<arch>/<score> and scores/<arch>/acc/<ingredient> (fractions), and the headline
    model's scores/lrs, scores/ars, scores/hlr, scores/ior: the run's logger and W&B summary."""
    out: dict[str, float] = {}
    for arch, m in scores["models"].items():
        for key in ("hlr", "ior", "lrs", "lrs_std", "ars", "ars_std"):
            if m[key] is not None:
                out[f"scores/{arch}/{key}"] = float(m[key])
        for key in ("lrs", "ars"):
            if m["percent"][key] is not None:
                out[f"scores/{arch}/{key}_percent"] = float(m["percent"][key])
        for key, value in m["accuracies"].items():
            if value is not None:
                out[f"scores/{arch}/acc/{key}"] = float(value)
    for key in ("hlr", "ior", "lrs", "ars"):
        value = scores["headline"][key]
        if value is not None:
            out[f"scores/{key}"] = float(value)
    return out
