"""Standard Webhooks v1 signatures on every webhook request.

    webhook-id: <stable across the retries of one run>
    webhook-timestamp: <Unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")> [v1,... ]

The secret is `whsec_` + base64 of the key, from WEBHOOK_SIGNING_SECRET or the SSM
SecureString named by WEBHOOK_SIGNING_SECRET_PARAM. Several space-separated secrets sign
with each (rotation: receivers accept any one that matches).
"""
import base64
import binascii
import hashlib
import hmac
import logging
import secrets as random_secrets
import time
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import aws, config
from chalicelib.errors import SigningUnavailable

logger = logging.getLogger("task_scheduler.signing")

PREFIX = "whsec_"
_warned = False


def new_secret() -> str:
    """A fresh whsec_ secret (24 random bytes)."""
    return PREFIX + base64.b64encode(random_secrets.token_bytes(24)).decode()


def parse_secrets(raw: Optional[str]) -> List[bytes]:
    """The keys of a space-separated list of whsec_ secrets (a bad one is an error)."""
    keys = []
    for item in (raw or "").split():
        encoded = item[len(PREFIX):] if item.startswith(PREFIX) else item
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a webhook signing secret is not whsec_<base64>") from None
        if not key:
            raise ValueError("a webhook signing secret is empty")
        keys.append(key)
    return keys


@lru_cache(maxsize=8)
def _keys(raw: Optional[str]) -> Tuple[bytes, ...]:
    # Decoded once per configured value, not for every request.
    return tuple(parse_secrets(raw))


def _configured() -> Optional[str]:
    direct = config.webhook_signing_secret()
    if direct:
        return direct
    name = config.webhook_signing_secret_param()
    if not name:
        return None
    try:
        return aws.get_parameter(name)  # cached: a rotation takes effect within minutes
    except (ClientError, BotoCoreError) as exc:
        raise SigningUnavailable(f"reading the signing secret {name} failed: "
                                 f"{exc.__class__.__name__}") from None


def signature_headers(message_id: str, body: bytes,
                      timestamp: Optional[int] = None) -> Dict[str, str]:
    """The three webhook-* headers for one request (none when no secret is configured)."""
    global _warned
    try:
        keys = _keys(_configured())
    except ValueError as exc:
        raise SigningUnavailable(str(exc)) from None
    if not keys:
        if not _warned:
            logger.warning("no WEBHOOK_SIGNING_SECRET(_PARAM): webhooks are sent unsigned")
            _warned = True
        return {}
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{message_id}.{timestamp}.".encode() + body
    signatures = " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in keys)
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signatures}

