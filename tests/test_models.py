"""models: the time formats every store and the API share."""
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from chalicelib.models import iso, iso_ms, parse_iso

MOMENT = datetime(2026, 11, 27, 10, 4, 5, 678901, tzinfo=timezone.utc)


@pytest.mark.parametrize("moment", [
    MOMENT,
    MOMENT.astimezone(timezone(timedelta(hours=2))),
    MOMENT.astimezone(timezone(timedelta(0), "UTC")),  # UTC, but not timezone.utc
    MOMENT.astimezone(ZoneInfo("UTC")),
    MOMENT.astimezone(ZoneInfo("America/New_York")),
])
def test_any_zone_is_written_as_utc(moment):
    assert iso(moment) == "2026-11-27T10:04:05Z"
    assert iso_ms(moment) == "2026-11-27T10:04:05.678Z"


def test_an_early_year_keeps_four_digits_and_reads_back():
    early = datetime(999, 1, 2, 3, 4, 5, 6000, tzinfo=timezone.utc)
    assert iso_ms(early) == "0999-01-02T03:04:05.006Z"
    assert parse_iso(iso_ms(early)) == early


def test_none_stays_none():
    assert iso(None) is None and iso_ms(None) is None and parse_iso(None) is None
