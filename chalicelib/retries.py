"""When a failed attempt is tried again: exponential backoff with full jitter."""
import random
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Optional

from chalicelib import config
from chalicelib.models import utcnow

# Statuses worth another attempt: the receiver may answer differently later.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504}) | frozenset(range(505, 600))

_random = random.Random()


def is_retryable_status(status: int) -> bool:
    """408, 425, 429 and 5xx except 501 are retried; other statuses (4xx, 3xx) are final."""
    return status in RETRYABLE_STATUSES


def parse_retry_after(value: Optional[str], now: Optional[datetime] = None) -> Optional[float]:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None or moment.tzinfo is None:
        return None
    return max((moment - (now or utcnow())).total_seconds(), 0.0)


def backoff_seconds(attempt: int, retry_after: Optional[float] = None) -> float:
    """Wait before attempt `attempt + 1`: uniform in [0, min(max, base * 2^(attempt-1))]
    (AWS's "full jitter"), at least one second, and never less than the receiver's
    Retry-After (which is itself capped at RETRY_MAX_SECONDS)."""
    cap = config.retry_max_seconds()
    ceiling = min(cap, config.retry_base_seconds() * 2 ** max(attempt - 1, 0))
    delay = max(1.0, _random.uniform(0, ceiling))
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def retry_time(attempt: int, ended: datetime, retry_after: Optional[float] = None) -> datetime:
    """When the next attempt runs, rounded up to a whole second."""
    moment = ended + timedelta(seconds=backoff_seconds(attempt, retry_after))
    if moment.microsecond:
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
    return moment
