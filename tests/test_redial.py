"""The retry rule and per-number daily count that callbacks and outbound calls share (ivr.redial)."""

from __future__ import annotations

from ivr.redial import DAY, DailyCounts, RetryPolicy


def test_a_retry_comes_retry_after_later_until_the_retries_are_spent() -> None:
    policy = RetryPolicy(retries=2, retry_after=30.0)
    assert policy.attempts == 3
    assert policy.next_attempt_at(1, 100.0) == 130.0
    assert policy.next_attempt_at(2, 200.0) == 230.0
    assert policy.next_attempt_at(3, 300.0) is None
    assert RetryPolicy().next_attempt_at(1, 0.0) is None  # no retries: the first try is the only one


def test_daily_counts_hold_a_number_to_its_limit_until_the_next_utc_day() -> None:
    now = [10 * DAY + 3600.0]
    counts = DailyCounts(lambda: now[0])
    for _ in range(2):
        assert counts.allows("+15550100", 2)
        counts.add("+15550100")
    assert not counts.allows("+15550100", 2) and counts.today("+15550100") == 2
    assert counts.allows("+15550199", 2)
    now[0] = 11 * DAY  # midnight UTC
    assert counts.today("+15550100") == 0 and counts.allows("+15550100", 2)
    counts.load({"+15550100": 5})
    assert counts.today("+15550100") == 5 and not counts.allows("+15550100", 5)
