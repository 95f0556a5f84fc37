"""Bearer-token check for the API's authorizer."""
import hmac
import logging
import threading
import time
from typing import List, Optional, Tuple

from chalicelib import aws, config

logger = logging.getLogger("task_scheduler.auth")

# Tokens read from SSM are kept this long, so a rotated token takes effect without
# a redeploy while each request costs no SSM call.
PARAM_CACHE_SECONDS = 300

_cache: dict = {}
_lock = threading.Lock()


def _split(raw: Optional[str]) -> List[str]:
    return [token.strip() for token in (raw or "").split(",") if token.strip()]


def _tokens_from_param(name: str) -> List[str]:
    with _lock:
        cached: Optional[Tuple[float, List[str]]] = _cache.get(name)
        if cached and time.monotonic() - cached[0] < PARAM_CACHE_SECONDS:
            return cached[1]
        value = aws.client("ssm").get_parameter(Name=name, WithDecryption=True)
        tokens = _split(value["Parameter"]["Value"])
        _cache[name] = (time.monotonic(), tokens)
        return tokens


def valid_tokens() -> List[str]:
    """The accepted tokens: API_TOKENS, else the SSM parameter API_TOKENS_PARAM."""
    direct = _split(config.api_tokens())
    if direct:
        return direct
    name = config.api_tokens_param()
    if name:
        return _tokens_from_param(name)
    logger.warning("no API token is configured (API_TOKENS / API_TOKENS_PARAM): "
                   "every request is refused")
    return []


def is_authorized(header: Optional[str]) -> bool:
    """Whether an Authorization header carries a valid bearer token (constant time)."""
    if not header:
        return False
    scheme, _, presented = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return False
    presented_bytes = presented.strip().encode()
    matched = False
    for token in valid_tokens():
        # Compare with every token, so timing tells nothing about which one matched.
        matched |= hmac.compare_digest(presented_bytes, token.encode())
    return matched


def clear_cache() -> None:
    """Forget tokens read from SSM."""
    with _lock:
        _cache.clear()
