import math

import numpy as np
import pandas as pd

from nextloc.data.staypoints import _coverage


def tracked_halves(weeks, empty=()):
    """Every day of every week tracked 00:00-12:00 (a share of 0.5), except the ``empty`` weeks."""
    days = [d for d in range(7 * weeks) if d // 7 not in empty]
    start = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(days, unit="D")  # 2024-01-01 is a Monday
    return pd.DataFrame({"user_id": 1, "started_at": start, "finished_at": start + pd.Timedelta(hours=12)})


class TestCoverage:
    def test_sliding_windows_average_the_weekly_tracked_share(self):
        """12 weeks at 0.5 with weeks 6 and 7 untracked: each 10-week window holds 8 tracked weeks -> 0.4."""
        result = _coverage(tracked_halves(12, empty=(6, 7)), window_weeks=10)
        assert np.isclose(result["min_coverage"], 0.4) and np.isclose(result["mean_coverage"], 0.4)

    def test_a_gap_lowers_the_minimum_more_than_the_mean(self):
        """20 weeks at 0.5 with weeks 10-13 untracked: one 4-week window lies in the gap (0), the mean below 0.5."""
        result = _coverage(tracked_halves(20, empty=(10, 11, 12, 13)), window_weeks=4)
        assert np.isclose(result["min_coverage"], 0.0)
        assert 0.0 < result["mean_coverage"] < 0.5

    def test_a_span_shorter_than_one_window_has_no_coverage(self):
        result = _coverage(tracked_halves(5), window_weeks=10)
        assert math.isnan(result["min_coverage"]) and math.isnan(result["mean_coverage"])
