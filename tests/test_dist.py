"""analysis.dist against scipy.stats: the same numbers, without scipy.stats' import time."""

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from loraplace.analysis import dist

DFS = [1, 2, 4, 9, 29.5]
XS = [-7.0, -2.1, -0.3, 0.0, 0.4, 1.96, 3.3, 12.0]


@pytest.mark.parametrize("df", DFS)
def test_t_functions_match_scipy_stats(df):
    for q in [1e-6, 0.025, 0.5, 0.8, 0.975, 0.999]:
        assert dist.t_ppf(q, df) == pytest.approx(stats.t.ppf(q, df), rel=1e-12, abs=1e-12)
    for x in XS:
        assert dist.t_cdf(x, df) == pytest.approx(stats.t.cdf(x, df), rel=1e-12, abs=1e-300)
        assert dist.t_sf(x, df) == pytest.approx(stats.t.sf(x, df), rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("df", DFS)
@pytest.mark.parametrize("nc", [-3.0, 0.0, 0.7, 2.5, 6.0])
def test_noncentral_t_matches_scipy_stats(df, nc):
    for x in XS:
        assert dist.nct_cdf(x, df, nc) == pytest.approx(
            stats.nct.cdf(x, df, nc), rel=1e-9, abs=1e-15, nan_ok=True
        )
        assert dist.nct_sf(x, df, nc) == pytest.approx(stats.nct.sf(x, df, nc), rel=1e-9, abs=1e-15)


def test_normal_and_chi2_match_scipy_stats():
    for q in [1e-9, 0.05, 0.5, 0.8, 0.975]:
        assert dist.norm_ppf(q) == pytest.approx(stats.norm.ppf(q), rel=1e-14)
    for df in [0, 1, 3, 12]:
        for x in [-1.0, 0.0, 0.5, 3.0, 20.0, 80.0, math.inf]:
            want = stats.chi2.sf(x, df)
            assert dist.chi2_sf(x, df) == pytest.approx(want, rel=1e-12, nan_ok=True)


def test_ttest_rel_matches_scipy_stats():
    rng = np.random.default_rng(0)
    for n in [2, 3, 3, 4, 5, 5, 7, 20]:
        a, b = rng.normal(size=n), rng.normal(0.3, 1.0, size=n)
        t, p = dist.ttest_rel(a, b)
        ref = stats.ttest_rel(a, b)
        assert (t, p) == (ref.statistic, ref.pvalue)  # bit for bit: old reports stay identical
    # Constant non-zero differences: (inf, 0) as in scipy; no difference at all: NaNs.
    assert dist.ttest_rel([1.0, 2.0], [0.0, 1.0]) == (math.inf, 0.0)
    assert dist.ttest_rel([0.0, 1.0], [1.0, 2.0]) == (-math.inf, 0.0)
    assert all(math.isnan(v) for v in dist.ttest_rel([1.0, 2.0], [1.0, 2.0]))
    assert all(math.isnan(v) for v in dist.ttest_rel([1.0], [0.0]))  # one pair


def test_the_report_path_does_not_import_scipy_stats():
    code = (
        "import sys, loraplace.report.build, loraplace.analysis.power, "
        "loraplace.analysis.agreement, loraplace.analysis.probe_check; "
        "print(sorted(m for m in sys.modules if m.startswith('scipy.stats')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
