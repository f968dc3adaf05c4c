"""The two ways the leaderboard compares a run with random weights."""
import pytest

from eval.driver import leaderboard


def test_gap_closed_weighs_tasks_by_distance_to_perfect():
    # The same +0.1 step: large %↑RAND where random is weak, large gap closed where random is strong.
    assert leaderboard.relative_gain(0.2, 0.1) == pytest.approx(100.0)
    assert leaderboard.gap_closed(0.2, 0.1) == pytest.approx(100 * 0.1 / 0.9)
    assert leaderboard.gap_closed(0.9, 0.8) == pytest.approx(50.0)
    assert leaderboard.gap_closed(1.0, 0.3) == pytest.approx(100.0)
    assert leaderboard.gap_closed(0.2, 0.3) < 0  # worse than random is a negative share


def test_gap_closed_skips_missing_and_perfect_references():
    assert leaderboard.gap_closed(None, 0.5) is None
    assert leaderboard.gap_closed(0.5, None) is None
    assert leaderboard.gap_closed(1.0, 1.0) is None
    assert leaderboard.mean_gap_closed([(0.9, 0.8), (None, 0.5), (0.5, 1.0), (0.55, 0.5)]) == pytest.approx((50 + 10) / 2)
    assert leaderboard.mean_gap_closed([(None, 0.5)]) is None
