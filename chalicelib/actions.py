"""What a task does when it fires: a plain registry of actions by name.

Each action validates its payload when the task is created (so a bad task is refused
with a 400 and never stored) and runs it when the task fires.
"""
import json
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional
from urllib.parse import urlsplit

import requests
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import LocationParseError
from urllib3.util import Url, parse_url

from chalicelib import config, observability, retries, signing, ssrf, threads
from chalicelib.errors import ValidationError, shown

logger = logging.getLogger("task_scheduler.actions")

WEBHOOK_METHODS = ("POST", "PUT", "PATCH", "DELETE", "GET")
MAX_DATA_BYTES = 64 * 1024
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 7230 token
# RFC 9110 field-value, stricter than requests (which refuses only a leading space).
HEADER_VALUE = re.compile(r"^(?:[^\x00-\x20\x7f](?:[^\x00-\x08\x0a-\x1f\x7f]*"
                          r"[^\x00-\x20\x7f])?)?$")
RESPONSE_KEPT_BYTES = 1024
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
ERROR_EXCERPT = 200
# `timeout` bounds each socket read; a receiver trickling bytes could hold a run far
# longer. The whole exchange gets this much on top of it, which keeps a run (at most
# 60 + 5 s) well inside the executor's lease.
DEADLINE_MARGIN_SECONDS = 5.0
USER_AGENT = "task-scheduler/1.0"


@dataclass
class ActionContext:
    """What an action knows about the run it performs."""

    task_id: str
    run_id: str
    attempt: int
    idempotency_key: str


@dataclass
class ActionResult:
    """Outcome of one run of an action; a failure says whether trying again may help."""

    success: bool
    http_status: Optional[int] = None
    error: Optional[str] = None
    retryable: bool = False
    retry_after: Optional[float] = None


@dataclass
class Action:
    """A registered action: how to validate its payload, run it, and show it."""

    validate: Callable[[Any], Dict[str, Any]]
    run: Callable[[Dict[str, Any], ActionContext], ActionResult]
    redact: Callable[[Dict[str, Any]], Dict[str, Any]] = lambda payload: payload
    # The longest one run of this payload may take, for callers with a time budget.
    max_seconds: Callable[[Dict[str, Any]], float] = lambda payload: 0.0
    # Text (an error) without the payload's secrets, before it is stored or logged.
    scrub: Callable[[Dict[str, Any], Optional[str]], Optional[str]] = \
        lambda payload, text: text


def payload_error(message: str, field: str = "payload") -> ValidationError:
    """A validation error on the payload (or one of its fields)."""
    return ValidationError(message, field=field, code="invalid_payload")


# ---------------------------------------------------------------- webhook

def validate_webhook(payload: Any) -> Dict[str, Any]:
    """Check and normalise a webhook payload: url, data, method, headers, timeout."""
    if not isinstance(payload, dict):
        raise payload_error("payload must be an object with at least 'url'")
    unknown = sorted(set(payload) - WEBHOOK_FIELDS)
    if unknown:
        raise payload_error(f"payload.{unknown[0]} is not a webhook field "
                             f"(allowed: {', '.join(sorted(WEBHOOK_FIELDS))})",
                             f"payload.{unknown[0]}")
    result: Dict[str, Any] = {"url": _validate_url(payload.get("url"))}
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


def _validate_url(url: Any) -> str:
    field = "payload.url"
    if not isinstance(url, str) or not url.strip():
        raise payload_error("payload.url is required: the http(s) URL to call", field)
    if len(url) > MAX_URL_LENGTH:
        raise payload_error(f"payload.url is longer than {MAX_URL_LENGTH} characters", field)
    try:
        scheme = urlsplit(url).scheme
    except ValueError:  # unbalanced or misplaced brackets: "http://[zz]/x", "http://]/x"
        raise payload_error(f"payload.url '{shown(url, 100)}' is not a valid URL", field) \
            from None
    if scheme.lower() not in ("http", "https"):
        raise payload_error(f"payload.url must use http or https, not '{scheme or 'none'}'",
                            field)
    try:
        target = sendable_url(url)
    except ValueError:
        raise payload_error(f"payload.url '{shown(url, 100)}' is not a valid URL", field) \
            from None
    if target.auth:
        raise payload_error("payload.url must not carry credentials (user:password@); "
                            "send them in an Authorization header", field)
    if not target.host:
        raise payload_error(f"payload.url '{shown(url, 100)}' has no host", field)
    # Checked on the host as it will be sent (IDNA, full-width digits and odd dots mapped).
    if not config.allow_private_targets() and ssrf.is_private_host(target.host):
        raise payload_error(f"payload.url points at a private or loopback address "
                            f"('{target.host}'); set ALLOW_PRIVATE_TARGETS=true to allow it",
                            field)
    return url


def sendable_url(url: str) -> Url:
    """The URL as requests will send it (host IDNA-encoded); ValueError when it cannot."""
    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(url, None)
        return parse_url(prepared.url)
    except (requests.RequestException, LocationParseError) as exc:
        raise ValueError(str(exc)) from None


def _latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


_session: Optional[requests.Session] = None
_session_lock = threading.Lock()


def http_session() -> requests.Session:
    """One pooled session per process, reused by every webhook run."""
    global _session
    if _session is None:
        with _session_lock:
            if _session is None:
                session = requests.Session()
                # No proxies or .netrc from the environment: the pinned address is the
                # one connected to, and no ambient credentials are sent.
                session.trust_env = False
                adapter = ssrf.PinnedAdapter(pool_connections=16, pool_maxsize=32,
                                             max_retries=0)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                _session = session
    return _session


def run_webhook(payload: Dict[str, Any], context: ActionContext) -> ActionResult:
    """Send the request once: a 2xx is success; anything else is a failure with its reason."""
    headers = CaseInsensitiveDict(payload.get("headers", {}))
    body = b""
    if "data" in payload:
        headers.setdefault("Content-Type", "application/json")
        body = json.dumps(payload["data"], separators=(",", ":"), ensure_ascii=False).encode()
    timeout = payload.get("timeout", 10)
    session = http_session()
    try:
        headers.update({
            "User-Agent": USER_AGENT,
            "Idempotency-Key": context.idempotency_key,
            "X-Task-Id": context.task_id,
            "X-Task-Attempt": str(context.attempt),
            **signing.signature_headers(context.idempotency_key, body),
        })
        request = session.prepare_request(requests.Request(
            payload.get("method", "POST"), payload["url"], data=body or None,
            headers=headers))
    except signing.SigningUnavailable as exc:
        return ActionResult(False, error=f"not signed: {exc}", retryable=True)
    except (requests.RequestException, ValueError) as exc:
        # Only the class: the message of an invalid header quotes its (secret) value.
        return ActionResult(False, error=f"request could not be built: "
                                         f"{exc.__class__.__name__}")
    if not config.allow_private_targets():
        refused = _pin(request)
        if refused:
            return refused
    deadline = timeout + DEADLINE_MARGIN_SECONDS
    try:
        response, excerpt = _within(deadline, _exchange, session, request, timeout)
    except DeadlineExceeded:
        return ActionResult(False, error=f"timeout: no complete response within "
                                         f"{deadline:g} s", retryable=True)
    except requests.Timeout:
        return ActionResult(False, error=f"timeout: no response within {timeout} s",
                            retryable=True)
    except requests.ConnectionError as exc:
        return ActionResult(False, error=f"connection failed: {_reason(exc)}",
                            retryable=True)
    except requests.RequestException as exc:
        return ActionResult(False, error=f"request failed: {exc.__class__.__name__}")
    if 200 <= response.status_code < 300:
        return ActionResult(True, http_status=response.status_code)
    reason = f"HTTP {response.status_code}"
    if excerpt:
        reason += f": {excerpt}"
    return ActionResult(False, http_status=response.status_code, error=reason,
                        retryable=retries.is_retryable_status(response.status_code),
                        retry_after=retries.parse_retry_after(
                            response.headers.get("Retry-After")))


def _pin(request: requests.PreparedRequest) -> Optional[ActionResult]:
    """Resolve the host once, refuse a private answer, and pin the connection to it."""
    target = parse_url(request.url)  # the host as sent: IDNA-encoded, lower case
    host = target.host.strip("[]")
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        request.pinned_address = ssrf.resolve_allowed(host, port)
    except ssrf.BlockedAddress as exc:
        return ActionResult(False, error=f"refused: {exc}")
    except (OSError, UnicodeError) as exc:
        return ActionResult(False, error=f"DNS lookup of {host} failed: "
                                         f"{exc.__class__.__name__}: {exc}", retryable=True)
    request.pinned_host = host
    request.headers["Host"] = target.netloc
    return None


class DeadlineExceeded(Exception):
    """The request and its response took longer than the run may."""


def _exchange(session: requests.Session, request: requests.PreparedRequest, timeout: float):
    response = session.send(request, timeout=timeout, allow_redirects=False, stream=True)
    return response, _read_excerpt(response)


# Reused across exchanges; after a burst of hung receivers the extra threads end. A
# 1,000-task burst keeps about LOCAL_WORKERS (16) exchanges going at once.
_EXCHANGES = threads.DaemonThreads("webhook-exchange", keep_idle=16)


def _within(seconds: float, function, *args):
    """function(*args), or DeadlineExceeded after `seconds` (the call is left to end on
    its own in a daemon thread, bounded by its per-read timeouts)."""
    outcome: Dict[str, Any] = {}
    finished = threading.Event()

    def work():
        try:
            outcome["value"] = function(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, re-raised there
            outcome["error"] = exc
        finally:
            finished.set()

    _EXCHANGES.run(work)
    if not finished.wait(seconds):
        raise DeadlineExceeded()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _read_excerpt(response: requests.Response) -> str:
    """The start of the body. At most RESPONSE_KEPT_BYTES are read: a body that ends
    within them lets the connection go back to the pool, a longer one closes it."""
    chunks, read = [], 0
    try:
        for chunk in response.iter_content(chunk_size=RESPONSE_KEPT_BYTES):
            chunks.append(chunk)
            read += len(chunk)
            if read > RESPONSE_KEPT_BYTES:
                response.close()
                break
    except (requests.RequestException, OSError):
        response.close()
    body = b"".join(chunks)[:ERROR_EXCERPT]
    return body.decode("utf-8", errors="replace").strip()


def _reason(exc: Exception) -> str:
    """The innermost cause's class and OS message: never the URL (its path or query may
    hold a token), which requests and urllib3 put in their own messages."""
    cause: BaseException = exc
    seen = set()
    while id(cause) not in seen:
        seen.add(id(cause))
        inner = getattr(cause, "reason", None) or (cause.args[0] if cause.args else None)
        if not isinstance(inner, BaseException):
            break
        cause = inner
    detail, underlying = "", cause
    while underlying is not None and not detail:
        if isinstance(underlying, OSError) and underlying.strerror:
            detail = underlying.strerror
        underlying = underlying.__cause__ or underlying.__context__
    return f"{cause.__class__.__name__}{': ' + detail if detail else ''}"


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


# ---------------------------------------------------------------- log

def validate_log(payload: Any) -> Dict[str, Any]:
    """A log payload: `message` (string), optional `data`."""
    if not isinstance(payload, dict):
        raise payload_error("payload must be an object with 'message'")
    message = payload.get("message")
    if not isinstance(message, str) or not message:
        raise payload_error("payload.message is required: the text to log",
                             "payload.message")
    unknown = sorted(set(payload) - {"message", "data"})
    if unknown:
        raise payload_error(f"payload.{unknown[0]} is not a log field (allowed: data, "
                             "message)", f"payload.{unknown[0]}")
    return dict(payload)


def run_log(payload: Dict[str, Any], context: ActionContext) -> ActionResult:
    """Write one structured log line; always succeeds."""
    observability.event("task_log", task_id=context.task_id, run_id=context.run_id,
                        attempt=context.attempt, message=payload["message"],
                        data=payload.get("data"))
    return ActionResult(True)


ACTIONS: Dict[str, Action] = {
    "webhook": Action(validate=validate_webhook, run=run_webhook, redact=redact_webhook,
                      scrub=scrub_webhook,
                      max_seconds=lambda payload: payload.get("timeout", 10)
                      + DEADLINE_MARGIN_SECONDS),
    "log": Action(validate=validate_log, run=run_log),
}
