"""DD-Ranking's Label-Robust Score (LRS) and Augmentation-Robust Score (ARS) from accuracies.

Both scores compare a synthetic set with a random real subset of the same IPC, so that a score
rewards what the distilled images carry rather than what the labels or the augmentation of the
evaluation protocol add:

    HLR = Acc(full real data, hard labels) - Acc(synthetic, hard labels)   (lower is better)
    IOR = Acc(synthetic, method's protocol) - Acc(random subset, same protocol)
    alpha = w * IOR - (1 - w) * HLR,  LRS = N(alpha)
    beta = gamma * (syn_aug - rdm_aug) + (1 - gamma) * (syn_noaug - rdm_noaug),  ARS = N(beta)
    N(x) = (e^x - e^-1) / (e - e^-1)

N maps [-1, 1] onto [0, 1] only when its argument is a difference of FRACTIONS. DD-Ranking's
evaluator feeds it percentage points (its accuracies are percentages), so its scores leave
[0, 1] for ordinary results (any |alpha| > 1 point). distillkit takes fractions; `percent=True`
reproduces DD-Ranking's percentage-point numbers exactly, for cross-checking against it.
benchmarks/results/ddranking_reading.md records the reading of DD-Ranking's code behind this.

Pure functions of a few floats: no torch, so they can be tested exactly and applied to any
results.json after the fact (whose accuracies are percentages: divide them by 100 here).
"""

from __future__ import annotations

import math
from typing import Any

from distillkit.errors import ConfigError

#: DD-Ranking's default weight of IOR against HLR (`lrs_lambda=0.5` of `compute_metrics`).
LRS_WEIGHT = 0.5
#: DD-Ranking's default weight of the with-augmentation difference (`ars_lambda=0.5`).
ARS_GAMMA = 0.5

_INV_E = math.exp(-1.0)
_SPAN = math.e - _INV_E

#: Names of the accuracies `scores_from_accuracies` records, in its dict's order.
ACCURACY_KEYS = (
    "full_hard",
    "syn_hard",
    "syn",
    "random",
    "syn_aug",
    "rdm_aug",
    "syn_noaug",
    "rdm_noaug",
)


def _scale(percent: bool) -> float:
    return 100.0 if percent else 1.0


def _check_accuracy(name: str, value: float, percent: bool) -> float:
    """`value` as a float, or a ConfigError naming it when outside [0, 1] ([0, 100] in percent).

    The range check is what catches percentages passed as fractions: their exponent is what
    throws DD-Ranking's scores out of [0, 1].
    """
    top = _scale(percent)
    x = float(value)
    if not 0.0 <= x <= top:  # also false for NaN
        raise ConfigError(_range_message(f"accuracy {name!r}", x, 0.0, top, percent))
    return x


def _check_difference(name: str, value: float, percent: bool) -> float:
    """`value` as a float within [-1, 1] ([-100, 100] in percent): a difference of accuracies."""
    top = _scale(percent)
    x = float(value)
    if not -top <= x <= top:
        raise ConfigError(_range_message(name, x, -top, top, percent))
    return x


def _check_weight(name: str, value: float) -> float:
    """A convex weight in [0, 1]; outside it the score's bound in fraction mode is lost."""
    x = float(value)
    if not 0.0 <= x <= 1.0:
        raise ConfigError(f"{name} = {x!r} is outside [0, 1]: it weighs two differences")
    return x


def _range_message(what: str, x: float, low: float, high: float, percent: bool) -> str:
    if percent:
        return f"{what} = {x!r} is outside [{low:g}, {high:g}] (percent=True takes percentages)"
    return (
        f"{what} = {x!r} is outside [{low:g}, {high:g}]: distillkit's scores take accuracies "
        "as fractions (divide percentages by 100), or pass percent=True for DD-Ranking's "
        "percentage-point scores"
    )


def exp_normalise(x: float) -> float:
    """N(x) = (e^x - e^-1) / (e - e^-1): increasing, N(-1) = 0, N(0) = 1/(1+e), N(1) = 1.

    DD-Ranking's normalisation of alpha and beta. It lies in [0, 1] exactly when x is in
    [-1, 1], which holds for weighted differences of fractions and fails for percentage points.
    """
    return (math.exp(x) - _INV_E) / _SPAN


def hard_label_recovery(full: float, syn_hard: float, *, percent: bool = False) -> float:
    """HLR = full - syn_hard: how much of the full real data's hard-label accuracy the
    synthetic set (also trained with hard labels) fails to recover. Lower is better; it can be
    negative when the synthetic set beats the full data."""
    return _check_accuracy("full", full, percent) - _check_accuracy("syn_hard", syn_hard, percent)


def improvement_over_random(syn: float, random: float, *, percent: bool = False) -> float:
    """IOR = syn - random: the gain of the synthetic set over a random real subset of the same
    IPC, both evaluated under the method's own protocol (its labels, its augmentation), so the
    protocol's own help cancels out."""
    return _check_accuracy("syn", syn, percent) - _check_accuracy("random", random, percent)


def label_robust_score(
    hlr: float, ior: float, weight: float = LRS_WEIGHT, *, percent: bool = False
) -> float:
    """LRS = N(weight * IOR - (1 - weight) * HLR).

    `hlr` and `ior` are differences of fractions (in [-1, 1]), or with `percent` of
    percentages (DD-Ranking's units, in [-100, 100]); a percentage-point difference passed in
    fraction mode is refused, since it is what makes the score leave [0, 1].
    """
    hlr = _check_difference("hlr", hlr, percent)
    ior = _check_difference("ior", ior, percent)
    return exp_normalise(_lrs_alpha(hlr, ior, weight))


def _lrs_alpha(hlr: float, ior: float, weight: float) -> float:
    w = _check_weight("weight", weight)
    return w * ior - (1.0 - w) * hlr


def augmentation_robust_score(
    syn_aug: float,
    rdm_aug: float,
    syn_noaug: float,
    rdm_noaug: float,
    gamma: float = ARS_GAMMA,
    *,
    percent: bool = False,
) -> float:
    """ARS = N(gamma * (syn_aug - rdm_aug) + (1 - gamma) * (syn_noaug - rdm_noaug)).

    The synthetic set against a random subset of the same IPC, once with the evaluation's
    augmentation and once without, so a set is not ranked by how much augmentation helps it.
    Accuracies are fractions, or percentages with `percent` (DD-Ranking's units).
    """
    return exp_normalise(_ars_beta(syn_aug, rdm_aug, syn_noaug, rdm_noaug, gamma, percent=percent))


def _ars_beta(
    syn_aug: float,
    rdm_aug: float,
    syn_noaug: float,
    rdm_noaug: float,
    gamma: float,
    *,
    percent: bool,
) -> float:
    with_aug = _check_accuracy("syn_aug", syn_aug, percent) - _check_accuracy(
        "rdm_aug", rdm_aug, percent
    )
    without_aug = _check_accuracy("syn_noaug", syn_noaug, percent) - _check_accuracy(
        "rdm_noaug", rdm_noaug, percent
    )
    g = _check_weight("gamma", gamma)
    return g * with_aug + (1.0 - g) * without_aug


def scores_from_accuracies(
    *,
    full_hard: float,
    syn_hard: float,
    syn: float,
    random: float,
    syn_aug: float | None = None,
    rdm_aug: float | None = None,
    syn_noaug: float | None = None,
    rdm_noaug: float | None = None,
    weight: float = LRS_WEIGHT,
    gamma: float = ARS_GAMMA,
    percent: bool = False,
) -> dict[str, Any]:
    """Every ingredient and HLR, IOR, LRS (and ARS when its four accuracies are given), flat
    and JSON-ready, as results.json would carry them.

    The four augmentation accuracies come all together or not at all (then `beta` and `ars`
    are None). `units` says which scale the accuracies and differences are on. These are the
    scores of ONE evaluation run's accuracies: DD-Ranking scores each run and averages the
    scores, which differs from scoring mean accuracies (N is convex).
    """
    aug = {"syn_aug": syn_aug, "rdm_aug": rdm_aug, "syn_noaug": syn_noaug, "rdm_noaug": rdm_noaug}
    given = [k for k, v in aug.items() if v is not None]
    if given and len(given) != len(aug):
        missing = sorted(set(aug) - set(given))
        raise ConfigError(
            f"the augmentation-robust score needs all four accuracies: missing {missing}"
        )
    given_accuracies = {"full_hard": full_hard, "syn_hard": syn_hard, "syn": syn, "random": random}
    given_accuracies.update(aug)
    # Checked under their own names first, so an error names the key the caller passed.
    acc = {
        k: None if v is None else _check_accuracy(k, v, percent)
        for k, v in given_accuracies.items()
    }
    hlr = hard_label_recovery(acc["full_hard"], acc["syn_hard"], percent=percent)
    ior = improvement_over_random(acc["syn"], acc["random"], percent=percent)
    alpha = _lrs_alpha(hlr, ior, weight)
    beta = None
    if given:
        beta = _ars_beta(
            acc["syn_aug"],
            acc["rdm_aug"],
            acc["syn_noaug"],
            acc["rdm_noaug"],
            gamma,
            percent=percent,
        )
    return {
        "units": "percent" if percent else "fraction",
        **{k: acc[k] for k in ACCURACY_KEYS},
        "weight": float(weight),
        "gamma": _check_weight("gamma", gamma) if given else None,
        "hlr": hlr,
        "ior": ior,
        "alpha": alpha,
        "lrs": exp_normalise(alpha),
        "beta": beta,
        "ars": None if beta is None else exp_normalise(beta),
    }
