"""The returns summary of ``voc-rl agent eval`` and the main job: the IQM is rliable's, the interval
is seeded and holds the mean."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import trim_mean

from voc_rl.episodes import iqm, mean_interval


@pytest.mark.parametrize("n", [1, 3, 4, 10, 30])
def test_iqm_is_the_quarter_trimmed_mean(n: int) -> None:
    r = np.random.default_rng(n).normal(300, 100, n)
    assert iqm(r) == pytest.approx(trim_mean(r, 0.25))
    assert iqm(np.r_[r, 1e9]) < 1e8 or n < 3  # an outlier is trimmed once there are 4 returns


def test_the_interval_is_seeded_and_holds_the_mean() -> None:
    r = np.random.default_rng(0).normal(300, 100, 10)
    lo, hi = mean_interval(r)
    assert lo < r.mean() < hi and (lo, hi) == mean_interval(r)
    assert mean_interval(r, seed=1) != (lo, hi)
