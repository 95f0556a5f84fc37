"""Backoff with full jitter, and what counts as worth retrying."""
from datetime import datetime, timedelta, timezone

import pytest

from chalicelib import retries


@pytest.mark.parametrize("status,retryable", [
    (408, True), (429, True), (500, True), (502, True), (503, True), (504, True), (599, True),
    (400, False), (401, False), (403, False), (404, False), (410, False), (422, False),
    (301, False), (302, False),
])
def test_retryable_statuses(status, retryable):
    assert retries.is_retryable_status(status) is retryable


def test_full_jitter_stays_within_the_doubling_ceiling(monkeypatch):
    monkeypatch.setenv("RETRY_BASE_SECONDS", "10")
    monkeypatch.setenv("RETRY_MAX_SECONDS", "100")
    for attempt, ceiling in ((1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (9, 100)):
        delays = [retries.backoff_seconds(attempt) for _ in range(300)]
        assert all(1 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spreads over the whole range
        assert min(delays) < max(1.0, ceiling * 0.2)


def test_retry_after_is_honoured_up_to_the_maximum(monkeypatch):
    monkeypatch.setenv("RETRY_BASE_SECONDS", "1")
    monkeypatch.setenv("RETRY_MAX_SECONDS", "600")
    assert retries.backoff_seconds(1, retry_after=120) == 120
    assert retries.backoff_seconds(1, retry_after=10_000) == 600


@pytest.mark.parametrize("header,seconds", [
    ("120", 120.0), (" 7 ", 7.0), ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
    ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0), ("soon", None), ("", None), (None, None),
    ("-5", None), ("²", None),
])
def test_parse_retry_after(header, seconds):
    now = datetime(2015, 10, 21, 7, 28, tzinfo=timezone.utc)
    assert retries.parse_retry_after(header, now) == seconds


def test_retry_time_is_a_whole_second_never_earlier_than_the_delay(monkeypatch):
    monkeypatch.setenv("RETRY_BASE_SECONDS", "5")
    ended = datetime(2025, 5, 19, 17, 56, 0, 400000, tzinfo=timezone.utc)
    for _ in range(50):
        moment = retries.retry_time(1, ended)
        assert moment.microsecond == 0 and moment >= ended + timedelta(seconds=1)
        assert moment <= ended + timedelta(seconds=6)
