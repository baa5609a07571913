"""DD-Ranking's LRS and ARS (distillkit.metrics.scores) against hand-computed values.

Constants used in the comments: e = 2.718281828, e^-1 = 0.367879441, e - e^-1 = 2.350402387.
"""

from __future__ import annotations

import itertools
import math

import pytest

from distillkit.errors import ConfigError
from distillkit.metrics.scores import (
    ACCURACY_KEYS,
    ARS_GAMMA,
    LRS_WEIGHT,
    augmentation_robust_score,
    exp_normalise,
    hard_label_recovery,
    improvement_over_random,
    label_robust_score,
    scores_from_accuracies,
)

TOL = 1e-9


def test_defaults_are_ddrankings():
    # lrs_lambda=0.5 and ars_lambda=0.5 in DD-Ranking's compute_metrics.
    assert LRS_WEIGHT == 0.5
    assert ARS_GAMMA == 0.5


def test_normalisation_fixed_points():
    # N(-1) = (e^-1 - e^-1)/(e - e^-1) = 0; N(1) = (e - e^-1)/(e - e^-1) = 1;
    # N(0) = (1 - e^-1)/(e - e^-1) = (e - 1)/(e^2 - 1) = 1/(1 + e) = 0.268941421.
    assert exp_normalise(-1.0) == pytest.approx(0.0, abs=TOL)
    assert exp_normalise(1.0) == pytest.approx(1.0, abs=TOL)
    assert exp_normalise(0.0) == pytest.approx(1 / (1 + math.e), abs=TOL)
    assert exp_normalise(0.0) == pytest.approx(0.268941421, abs=1e-9)
    # N(0.1) = (1.105170918 - 0.367879441)/2.350402387 = 0.737291477/2.350402387 = 0.313687342
    assert exp_normalise(0.1) == pytest.approx(0.313687342, abs=1e-9)


def test_hlr_and_ior_are_signed_differences():
    # HLR = full - syn_hard = 0.60 - 0.45 = 0.15; IOR = syn - random = 0.50 - 0.30 = 0.20.
    assert hard_label_recovery(0.60, 0.45) == pytest.approx(0.15, abs=TOL)
    assert improvement_over_random(0.50, 0.30) == pytest.approx(0.20, abs=TOL)
    # Either can be negative: syn_hard above full, random above syn.
    assert hard_label_recovery(0.40, 0.45) == pytest.approx(-0.05, abs=TOL)
    assert improvement_over_random(0.30, 0.50) == pytest.approx(-0.20, abs=TOL)


def test_lrs_hand_computed_default_weight():
    # alpha = 0.5*0.2 - 0.5*0.1 = 0.05;
    # LRS = (e^0.05 - e^-1)/(e - e^-1) = (1.051271096 - 0.367879441)/2.350402387
    #     = 0.683391655/2.350402387 = 0.290755174
    assert label_robust_score(0.1, 0.2) == pytest.approx(0.290755174, abs=1e-9)


def test_lrs_hand_computed_other_weight():
    # w = 0.25: alpha = 0.25*0.2 - 0.75*0.1 = 0.05 - 0.075 = -0.025;
    # LRS = (e^-0.025 - e^-1)/(e - e^-1) = (0.975309912 - 0.367879441)/2.350402387
    #     = 0.607430471/2.350402387 = 0.258436800
    # (Swapping the weights would give alpha = 0.75*0.2 - 0.25*0.1 = 0.125, LRS = 0.325590638)
    assert label_robust_score(0.1, 0.2, weight=0.25) == pytest.approx(0.258436800, abs=1e-9)


def test_lrs_weight_extremes_keep_one_term():
    # w = 1: alpha = IOR = 0.2 -> N(0.2); w = 0: alpha = -HLR = -0.1 -> N(-0.1).
    # N(-0.1) = (0.904837418 - 0.367879441)/2.350402387 = 0.536957977/2.350402387 = 0.228453...
    assert label_robust_score(0.1, 0.2, weight=1.0) == pytest.approx(exp_normalise(0.2))
    assert label_robust_score(0.1, 0.2, weight=0.0) == pytest.approx(0.228453, abs=1e-6)


def test_ars_hand_computed():
    # beta = 0.5*(0.60 - 0.50) + 0.5*(0.40 - 0.35) = 0.05 + 0.025 = 0.075;
    # ARS = (e^0.075 - e^-1)/(e - e^-1) = (1.077884151 - 0.367879441)/2.350402387
    #     = 0.710004710/2.350402387 = 0.302077939
    assert augmentation_robust_score(0.60, 0.50, 0.40, 0.35) == pytest.approx(0.302077939, abs=1e-9)
    # gamma = 0.8: beta = 0.8*0.10 + 0.2*0.05 = 0.09;
    # ARS = (1.094174284 - 0.367879441)/2.350402387 = 0.726294843/2.350402387 = 0.309008724
    assert augmentation_robust_score(0.60, 0.50, 0.40, 0.35, gamma=0.8) == pytest.approx(
        0.309008724, abs=1e-9
    )


def test_lrs_bounds_reached_at_the_extremes_of_fractions():
    # full=1, syn_hard=0 -> HLR = 1; syn=0, random=1 -> IOR = -1; alpha = -0.5 - 0.5 = -1 -> 0.
    worst = scores_from_accuracies(full_hard=1.0, syn_hard=0.0, syn=0.0, random=1.0)
    assert worst["alpha"] == pytest.approx(-1.0)
    assert worst["lrs"] == pytest.approx(0.0, abs=TOL)
    # full=0, syn_hard=1 -> HLR = -1; syn=1, random=0 -> IOR = 1; alpha = 0.5 + 0.5 = 1 -> 1.
    best = scores_from_accuracies(full_hard=0.0, syn_hard=1.0, syn=1.0, random=0.0)
    assert best["lrs"] == pytest.approx(1.0, abs=TOL)
    # ARS: beta = -1 and +1 at the corners.
    assert augmentation_robust_score(0.0, 1.0, 0.0, 1.0) == pytest.approx(0.0, abs=TOL)
    assert augmentation_robust_score(1.0, 0.0, 1.0, 0.0) == pytest.approx(1.0, abs=TOL)


def test_fraction_scores_stay_in_unit_interval_over_a_grid():
    grid = [0.0, 0.1, 0.35, 0.5, 0.8, 1.0]
    for full, syn_hard, syn, rdm in itertools.product(grid, repeat=4):
        for w in (0.0, 0.3, 0.5, 1.0):
            s = scores_from_accuracies(
                full_hard=full, syn_hard=syn_hard, syn=syn, random=rdm, weight=w
            )
            assert -TOL <= s["lrs"] <= 1 + TOL
    for a, b, c, d in itertools.product(grid, repeat=4):
        assert -TOL <= augmentation_robust_score(a, b, c, d, gamma=0.3) <= 1 + TOL


def test_ddranking_percent_mode_leaves_unit_interval_for_a_plausible_case():
    # DD-Ranking's cached ImageNet-1K ResNet-18-BN full-data accuracy is 56.5 (percent).
    # syn_hard = 20, syn (soft labels) = 45, random (soft labels) = 40, all in percent:
    # HLR = 36.5, IOR = 5, alpha = 0.5*5 - 0.5*36.5 = -15.75;
    # LRS = (e^-15.75 - e^-1)/(e - e^-1) = (1.445e-7 - 0.367879441)/2.350402387 = -0.156517581
    s = scores_from_accuracies(full_hard=56.5, syn_hard=20.0, syn=45.0, random=40.0, percent=True)
    assert s["units"] == "percent"
    assert s["hlr"] == pytest.approx(36.5) and s["ior"] == pytest.approx(5.0)
    assert s["alpha"] == pytest.approx(-15.75)
    assert s["lrs"] == pytest.approx(-0.156517581, abs=1e-9)
    assert s["lrs"] < 0
    # The same accuracies as fractions: HLR = 0.365, IOR = 0.05, alpha = -0.1575;
    # LRS = (e^-0.1575 - e^-1)/(e - e^-1) = (0.854276814 - 0.367879441)/2.350402387 = 0.206942171
    f = scores_from_accuracies(full_hard=0.565, syn_hard=0.20, syn=0.45, random=0.40)
    assert f["lrs"] == pytest.approx(0.206942171, abs=1e-9)
    # And above 1: HLR = 1 point, IOR = 10 points -> alpha = 4.5;
    # LRS = (e^4.5 - e^-1)/(e - e^-1) = (90.017131301 - 0.367879441)/2.350402387 = 38.142086795
    assert label_robust_score(1.0, 10.0, percent=True) == pytest.approx(38.142086795, abs=1e-8)
    # ARS in percent: beta = 0.5*(48 - 45) + 0.5*(30 - 28) = 2.5 -> (12.182493961 - 0.367879441)
    # / 2.350402387 = 5.026635... > 1
    assert augmentation_robust_score(48.0, 45.0, 30.0, 28.0, percent=True) == pytest.approx(
        (math.exp(2.5) - math.exp(-1)) / (math.e - math.exp(-1))
    )
    assert augmentation_robust_score(48.0, 45.0, 30.0, 28.0, percent=True) > 1


def test_percent_mode_is_the_fraction_formula_with_alpha_times_100():
    acc = {"full_hard": 0.565, "syn_hard": 0.31, "syn": 0.47, "random": 0.42}
    aug = {"syn_aug": 0.47, "rdm_aug": 0.42, "syn_noaug": 0.33, "rdm_noaug": 0.30}
    frac = scores_from_accuracies(**acc, **aug, weight=0.3, gamma=0.7)
    pct = scores_from_accuracies(
        **{k: 100 * v for k, v in {**acc, **aug}.items()}, weight=0.3, gamma=0.7, percent=True
    )
    for key in ("hlr", "ior", "alpha", "beta"):
        assert pct[key] == pytest.approx(100 * frac[key], abs=1e-9), key
    assert pct["lrs"] == pytest.approx(exp_normalise(100 * frac["alpha"]), abs=1e-9)
    assert pct["ars"] == pytest.approx(exp_normalise(100 * frac["beta"]), abs=1e-9)
    # Both are N of their own alpha: the units are the only difference.
    assert frac["lrs"] == pytest.approx(exp_normalise(frac["alpha"]), abs=TOL)
    assert frac["lrs"] != pytest.approx(pct["lrs"])


def test_lrs_monotone_in_each_accuracy():
    base = {"full_hard": 0.6, "syn_hard": 0.4, "syn": 0.5, "random": 0.3}
    lrs = scores_from_accuracies(**base)["lrs"]

    def bumped(key, by):
        return scores_from_accuracies(**{**base, key: base[key] + by})["lrs"]

    assert bumped("syn_hard", 0.05) > lrs  # better hard-label recovery: HLR falls
    assert bumped("full_hard", 0.05) < lrs  # the same set recovers less of a stronger full set
    assert bumped("syn", 0.05) > lrs  # larger improvement over random
    assert bumped("random", 0.05) < lrs  # a stronger random baseline
    # exp_normalise is strictly increasing.
    xs = [-1.0, -0.5, -0.01, 0.0, 0.01, 0.5, 1.0]
    assert all(exp_normalise(a) < exp_normalise(b) for a, b in itertools.pairwise(xs))


def test_ars_monotone_in_each_accuracy():
    base = (0.6, 0.5, 0.4, 0.35)
    ars = augmentation_robust_score(*base)
    for i, sign in enumerate((+1, -1, +1, -1)):  # syn_* raise it, rdm_* lower it
        moved = list(base)
        moved[i] += 0.05
        assert (augmentation_robust_score(*moved) - ars) * sign > 0, i


def test_scores_from_accuracies_carries_every_ingredient():
    s = scores_from_accuracies(
        full_hard=0.6,
        syn_hard=0.5,
        syn=0.55,
        random=0.35,
        syn_aug=0.60,
        rdm_aug=0.50,
        syn_noaug=0.40,
        rdm_noaug=0.35,
    )
    assert set(ACCURACY_KEYS) <= set(s)
    assert {"units", "weight", "gamma", "hlr", "ior", "alpha", "lrs", "beta", "ars"} <= set(s)
    assert s["units"] == "fraction" and s["weight"] == 0.5 and s["gamma"] == 0.5
    # HLR = 0.6 - 0.5 = 0.1, IOR = 0.55 - 0.35 = 0.2, alpha = 0.05 -> LRS = 0.290755174
    assert s["hlr"] == pytest.approx(0.1) and s["ior"] == pytest.approx(0.2)
    assert s["alpha"] == pytest.approx(0.05)
    assert s["lrs"] == pytest.approx(0.290755174, abs=1e-9)
    # beta = 0.075 -> ARS = 0.302077939 (test_ars_hand_computed)
    assert s["beta"] == pytest.approx(0.075) and s["ars"] == pytest.approx(0.302077939, abs=1e-9)
    assert s["syn_noaug"] == 0.40


def test_scores_without_augmentation_accuracies_leave_ars_out():
    s = scores_from_accuracies(full_hard=0.6, syn_hard=0.5, syn=0.55, random=0.35)
    assert s["ars"] is None and s["beta"] is None and s["gamma"] is None
    assert s["syn_aug"] is None
    assert s["lrs"] == pytest.approx(0.290755174, abs=1e-9)


def test_partial_augmentation_accuracies_refused():
    with pytest.raises(ConfigError, match=r"all four accuracies: missing \['rdm_noaug'\]"):
        scores_from_accuracies(
            full_hard=0.6,
            syn_hard=0.5,
            syn=0.5,
            random=0.4,
            syn_aug=0.5,
            rdm_aug=0.4,
            syn_noaug=0.4,
        )


@pytest.mark.parametrize("bad", [56.5, 1.0001, -0.01, float("nan"), float("inf")])
def test_fraction_mode_refuses_accuracies_outside_unit_interval(bad):
    with pytest.raises(ConfigError, match=r"outside \[0, 1\].*as fractions.*percent=True"):
        hard_label_recovery(bad, 0.5)
    with pytest.raises(ConfigError, match="accuracy 'random'"):
        improvement_over_random(0.5, bad)
    with pytest.raises(ConfigError, match="accuracy 'rdm_noaug'"):
        augmentation_robust_score(0.5, 0.5, 0.5, bad)
    with pytest.raises(ConfigError, match="accuracy 'full_hard'"):
        scores_from_accuracies(full_hard=bad, syn_hard=0.5, syn=0.5, random=0.5)


def test_fraction_mode_refuses_percentage_point_differences():
    # HLR = 36.5 points passed as a fraction: exactly the unit mix-up the scores must not hide.
    with pytest.raises(ConfigError, match=r"hlr = 36.5 is outside \[-1, 1\]"):
        label_robust_score(36.5, 5.0)
    assert label_robust_score(36.5, 5.0, percent=True) == pytest.approx(-0.156517581, abs=1e-9)


def test_percent_mode_range_and_weights_checked():
    assert hard_label_recovery(56.5, 20.0, percent=True) == pytest.approx(36.5)
    with pytest.raises(ConfigError, match=r"outside \[0, 100\] \(percent=True"):
        hard_label_recovery(101.0, 20.0, percent=True)
    with pytest.raises(ConfigError, match=r"weight = 1.5 is outside \[0, 1\]"):
        label_robust_score(0.1, 0.2, weight=1.5)
    with pytest.raises(ConfigError, match=r"gamma = -0.1 is outside \[0, 1\]"):
        augmentation_robust_score(0.6, 0.5, 0.4, 0.3, gamma=-0.1)
