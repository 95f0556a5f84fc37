"""Bearer-token check for the API's authorizer."""
import hmac
import logging
from typing import List, Optional

from chalicelib import aws, config

logger = logging.getLogger("task_scheduler.auth")


def _split(raw: Optional[str]) -> List[str]:
    return [token.strip() for token in (raw or "").split(",") if token.strip()]


def valid_tokens() -> List[str]:
    """The accepted tokens: API_TOKENS, else the SSM parameter API_TOKENS_PARAM (cached by
    aws.get_parameter, so a rotated token takes effect without a redeploy)."""
    direct = _split(config.api_tokens())
    if direct:
        return direct
    name = config.api_tokens_param()
    if name:
        return _split(aws.get_parameter(name))
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

