"""The webhook action: one signed HTTP request per run.

Its payload is checked when the task is created (so a bad task is refused with a 400 and
never stored); the values of headers whose names mark them as secrets are shown as ***
and scrubbed from errors. The exchange itself is in `exchange`.
"""
import json
import re
from typing import Any, Dict, Optional, Tuple
from urllib.parse import urlsplit

from chalicelib import config, signing, ssrf
from chalicelib.actions import exchange
from chalicelib.actions.base import Action, ActionContext, ActionResult, payload_error
from chalicelib.errors import SigningUnavailable, shown

WEBHOOK_METHODS = ("POST", "PUT", "PATCH", "DELETE", "GET")
MAX_DATA_BYTES = 64 * 1024
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 7230 token
# RFC 9110 field-value, stricter than requests (which refuses only a leading space).
HEADER_VALUE = re.compile(r"^(?:[^\x00-\x20\x7f](?:[^\x00-\x08\x0a-\x1f\x7f]*"
                          r"[^\x00-\x20\x7f])?)?$")
MAX_HEADERS = 20
MAX_HEADER_BYTES = 1024
# Set by the HTTP client or by the scheduler itself; a task may not choose them.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection",
                              "idempotency-key", "x-task-id", "x-task-attempt"})
# A header is a secret when its name holds one of these (Authorization, X-Hub-Signature,
# X-Api-Key, Proxy-Authorization, X-Credentials, Set-Cookie, X-Jwt, X-Db-Passwd, ...).
SENSITIVE_NAME = re.compile(r"auth|token|secret|key|signature|passw(?:or)?d|credential|session"
                            r"|cookie|jwt", re.IGNORECASE)
REDACTED = "***"
# Parts of a secret header's value this long or longer are scrubbed from errors on their
# own too (the token of "Bearer <token>" echoed without its scheme); shorter ones would
# blank out ordinary words.
SCRUBBED_PART_LENGTH = 8
WEBHOOK_FIELDS = {"url", "data", "method", "headers", "timeout"}
MAX_URL_LENGTH = 2048
USER_AGENT = "task-scheduler/1.0"


def validate_webhook(payload: Any) -> Dict[str, Any]:
    """Check and normalise a webhook payload: url, data, method, headers, timeout."""
    if not isinstance(payload, dict):
        raise payload_error("payload must be an object with at least 'url'")
    unknown = sorted(set(payload) - WEBHOOK_FIELDS)
    if unknown:
        raise payload_error(f"payload.{unknown[0]} is not a webhook field "
                             f"(allowed: {', '.join(sorted(WEBHOOK_FIELDS))})",
                             f"payload.{unknown[0]}")
    result: Dict[str, Any] = {"url": validate_url(payload.get("url"))}
    if "data" in payload:
        size = len(json.dumps(payload["data"], separators=(",", ":"),
                              ensure_ascii=False).encode())
        if size > MAX_DATA_BYTES:
            raise payload_error(f"payload.data is {size} bytes as JSON; the limit is "
                                 f"{MAX_DATA_BYTES // 1024} KiB", "payload.data")
        result["data"] = payload["data"]
    method = payload.get("method", "POST")
    if not isinstance(method, str) or method.upper() not in WEBHOOK_METHODS:
        raise payload_error(f"payload.method must be one of {', '.join(WEBHOOK_METHODS)}",
                             "payload.method")
    result["method"] = method.upper()
    headers = payload.get("headers", {})
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise payload_error("payload.headers must be an object of string names to string "
                             "values", "payload.headers")
    if len(headers) > MAX_HEADERS:
        raise payload_error(f"payload.headers has {len(headers)} headers; at most "
                             f"{MAX_HEADERS} are allowed", "payload.headers")
    for name, value in headers.items():
        lower = name.lower()
        if lower in RESERVED_HEADERS or lower.startswith("webhook-"):
            raise payload_error(f"payload.headers: '{name}' is set by the scheduler and "
                                 "cannot be chosen", "payload.headers")
        if len(name.encode()) + len(value.encode("latin-1", "replace")) > MAX_HEADER_BYTES:
            raise payload_error(f"payload.headers: '{name}' is longer than "
                                 f"{MAX_HEADER_BYTES} bytes", "payload.headers")
        if not HEADER_NAME.fullmatch(name):
            raise payload_error(f"payload.headers: '{name}' is not a valid header name",
                                 "payload.headers")
        if not HEADER_VALUE.fullmatch(value) or not _latin1(value):
            raise payload_error(f"payload.headers: the value of '{name}' must be one line "
                                 "of Latin-1 text without control characters or spaces at "
                                 "either end", "payload.headers")
    result["headers"] = headers
    timeout = payload.get("timeout", 10)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not 1 <= timeout <= 60:
        raise payload_error("payload.timeout must be a number of seconds from 1 to 60",
                             "payload.timeout")
    result["timeout"] = timeout
    return result


def validate_url(url: Any, field: str = "payload.url") -> str:
    """An http(s) URL a request may be sent to (SSRF-checked), or a ValidationError on
    `field`."""
    if not isinstance(url, str) or not url.strip():
        raise payload_error(f"{field} is required: the http(s) URL to call", field)
    if len(url) > MAX_URL_LENGTH:
        raise payload_error(f"{field} is longer than {MAX_URL_LENGTH} characters", field)
    try:
        scheme = urlsplit(url).scheme
    except ValueError:  # unbalanced or misplaced brackets: "http://[zz]/x", "http://]/x"
        raise payload_error(f"{field} '{shown(url, 100)}' is not a valid URL", field) \
            from None
    if scheme.lower() not in ("http", "https"):
        raise payload_error(f"{field} must use http or https, not '{scheme or 'none'}'",
                            field)
    try:
        target = exchange.sendable_url(url)
    except ValueError:
        raise payload_error(f"{field} '{shown(url, 100)}' is not a valid URL", field) \
            from None
    if target.auth:
        raise payload_error(f"{field} must not carry credentials (user:password@); "
                            "send them in an Authorization header", field)
    if not target.host:
        raise payload_error(f"{field} '{shown(url, 100)}' has no host", field)
    # Checked on the host as it will be sent (IDNA, full-width digits and odd dots mapped).
    if not config.allow_private_targets() and ssrf.is_private_host(target.host):
        raise payload_error(f"{field} points at a private or loopback address "
                            f"('{target.host}'); set ALLOW_PRIVATE_TARGETS=true to allow it",
                            field)
    return url


def _latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def run_webhook(payload: Dict[str, Any], context: ActionContext) -> ActionResult:
    """Send the request once: a 2xx is success; anything else is a failure with its reason."""
    given = payload.get("headers", {})
    body = None
    if "data" in payload:
        given = {"Content-Type": "application/json", **given}  # unless the task names one
        body = json.dumps(payload["data"], separators=(",", ":"), ensure_ascii=False).encode()
    timeout = payload.get("timeout", 10)
    try:
        if not all(HEADER_NAME.fullmatch(name) and HEADER_VALUE.fullmatch(value)
                   and _latin1(value) for name, value in given.items()):
            # Stored by an older version with looser rules. Only the kind: the value of
            # an invalid header may be a secret.
            return ActionResult(False, error="request could not be built: InvalidHeader")
        headers = merged_headers(given, {
            "User-Agent": USER_AGENT,
            "Idempotency-Key": context.idempotency_key,
            "X-Task-Id": context.task_id,
            "X-Task-Attempt": str(context.attempt),
            **signing.signature_headers(context.idempotency_key, body or b""),
        })
        request = exchange.Outgoing(payload.get("method", "POST"),
                                    exchange.sendable_url(payload["url"]), headers, body)
    except SigningUnavailable as exc:
        return ActionResult(False, error=f"not signed: {exc}", retryable=True)
    except ValueError as exc:
        return ActionResult(False, error=f"request could not be built: "
                                         f"{exc.__class__.__name__}")
    if not config.allow_private_targets():
        refused = exchange.pin(request)
        if refused:
            return refused
    return exchange.deliver(request, timeout)


def merged_headers(*layers: Dict[str, str]) -> Dict[str, str]:
    """The headers of `layers` as one plain dict (urllib3 copies a request's headers, and a
    dict copies in C), names compared without case: a later layer's value replaces an
    earlier one's, whatever the case of either name."""
    merged: Dict[str, Tuple[str, str]] = {}
    for layer in layers:
        for name, value in layer.items():
            merged[name.lower()] = (name, value)
    return dict(merged.values())


def is_sensitive_header(name: str) -> bool:
    """Whether the header's name says it holds a secret (auth, token, secret, key,
    signature, password/passwd, credential, session, cookie, jwt: any case, any place)."""
    return SENSITIVE_NAME.search(name) is not None


def scrub_webhook(payload: Dict[str, Any], text: Optional[str]) -> Optional[str]:
    """`text` (an error) without the values of the task's secret headers, which a receiver
    may echo back ("401: invalid credentials: Bearer sk_live_...")."""
    if not text:
        return text
    secrets = set()
    for name, value in (payload.get("headers") or {}).items():
        if is_sensitive_header(name) and value:
            secrets.add(value)
            secrets.update(part for part in re.split(r"[\s,;=]+", value)
                           if len(part) >= SCRUBBED_PART_LENGTH)
    for secret in sorted(secrets, key=len, reverse=True):  # whole values before their parts
        text = text.replace(secret, REDACTED)
    return text


def redact_webhook(payload: Dict[str, Any]) -> Dict[str, Any]:
    """The payload as shown to API clients: sensitive header values replaced by ***."""
    headers = payload.get("headers") or {}
    if not headers:
        return payload
    shown = {name: (REDACTED if is_sensitive_header(name) else value)
             for name, value in headers.items()}
    return {**payload, "headers": shown}


ACTION = Action(validate=validate_webhook, run=run_webhook, redact=redact_webhook,
                scrub=scrub_webhook,
                max_seconds=lambda payload: exchange.deadline(payload.get("timeout", 10)))
