"""One HTTP exchange of a webhook run: pooled connections, the pinned address, the deadline,
and what the answer makes of the run (success, or a failure retryable or not).

The host is resolved once and the connection pinned to that answer (a DNS rebind cannot
turn an allowed host into a private one between the check and the connect), and the whole
exchange, not just each read, ends by a deadline. Requests go out through urllib3 directly:
requests' preparation of each request cost a run more CPU than its store writes did
(bench/dispatch.py), and the URL as requests would send it is worked out once per URL.
A process may hand its exchanges to another (`hand_over_to`): `make dev`'s server does.
"""
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Dict, Optional

import certifi
import urllib3
from urllib3 import HTTPHeaderDict, PoolManager
from urllib3.exceptions import (
    ClosedPoolError, HTTPError, NewConnectionError, ProtocolError, SSLError,
)
from urllib3.exceptions import TimeoutError as ClientTimeout
from urllib3.util import Url

from chalicelib import retries, ssrf, threads
from chalicelib.actions.base import ActionResult
from chalicelib.errors import BlockedAddress, DeadlineExceeded

RESPONSE_KEPT_BYTES = 1024
ERROR_EXCERPT = 200
# `timeout` bounds each socket read; a receiver trickling bytes could hold a run far
# longer. The whole exchange gets this much on top of it, which keeps a run (at most
# 60 + 5 s) well inside the executor's lease.
DEADLINE_MARGIN_SECONDS = 5.0


def deadline(timeout: float) -> float:
    """The longest a whole exchange whose reads each wait up to `timeout` may take."""
    return timeout + DEADLINE_MARGIN_SECONDS


@dataclass
class Outgoing:
    """One request as it goes out: where to, what, and (pinned) the address to connect to."""

    method: str
    target: Url  # as sent: host IDNA-encoded, path and query quoted
    headers: Dict[str, str]
    body: Optional[bytes]
    address: Optional[str] = None  # the checked address, when pinned


@lru_cache(maxsize=1024)
def sendable_url(url: str) -> Url:
    """The URL as an HTTP client sends it (host IDNA-encoded, path and query quoted, as
    requests prepares it); ValueError when it cannot be sent."""
    import requests  # only for a URL not seen before: a webhook's URL rarely changes
    from urllib3.exceptions import LocationParseError
    from urllib3.util import parse_url

    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(url, None)
        return parse_url(prepared.url)
    except (requests.RequestException, LocationParseError) as exc:
        raise ValueError(str(exc)) from None


_pools: Optional[PoolManager] = None
_pools_lock = threading.Lock()


def connection_pools() -> PoolManager:
    """One set of keep-alive connection pools per process, reused by every webhook run.
    urllib3 reads no proxy or .netrc from the environment: the pinned address is the one
    connected to, and no ambient credentials are sent."""
    global _pools
    if _pools is None:
        with _pools_lock:
            if _pools is None:
                _pools = PoolManager(num_pools=16, maxsize=32, block=False,
                                     cert_reqs="CERT_REQUIRED", ca_certs=certifi.where())
    return _pools


def _port(target: Url) -> int:
    return target.port or (443 if target.scheme == "https" else 80)


def pin(request: Outgoing) -> Optional[ActionResult]:
    """Resolve the host once, refuse a private answer, and pin the connection to it."""
    host = request.target.host.strip("[]")
    try:
        request.address = ssrf.resolve_allowed(host, _port(request.target))
    except BlockedAddress as exc:
        return ActionResult(False, error=f"refused: {exc}")
    except (OSError, UnicodeError) as exc:
        return ActionResult(False, error=f"DNS lookup of {host} failed: "
                                         f"{exc.__class__.__name__}: {exc}", retryable=True)
    request.headers["Host"] = request.target.netloc
    return None


@dataclass
class Answer:
    """The receiver's answer: status, headers and the start of its body."""

    status: int
    headers: HTTPHeaderDict
    excerpt: str


# Where a process's exchanges go: None sends them from this process. `make dev`'s server
# hands them to exchange processes of its own (chalicelib.local.exchangers), so the
# HTTP client's work runs on another core than the store's. A handover returns the run's
# result (it sends the exchange here itself when it cannot take it).
Handover = Callable[[Outgoing, float], ActionResult]
_handover: Optional[Handover] = None


def hand_over_to(handover: Optional[Handover]) -> None:
    """Send this process's exchanges through `handover` (None: send them here)."""
    global _handover
    _handover = handover


def deliver(request: Outgoing, timeout: float) -> ActionResult:
    """Send the request once: a 2xx is success, anything else a failure with its reason."""
    handover = _handover
    return deliver_here(request, timeout) if handover is None else handover(request, timeout)


def deliver_here(request: Outgoing, timeout: float, guarded: bool = True) -> ActionResult:
    """deliver(), sent from this process (guarded=False: the caller keeps the deadline)."""
    try:
        answer = send(request, timeout) if guarded else _exchange(request, timeout)
    except DeadlineExceeded:
        return timed_out(timeout)
    except NewConnectionError as exc:  # (also a ConnectTimeoutError in urllib3's tree)
        return ActionResult(False, error=f"connection failed: {failure_reason(exc)}",
                            retryable=True)
    except ClientTimeout:  # connecting, or one read, took longer than `timeout`
        return ActionResult(False, error=f"timeout: no response within {timeout} s",
                            retryable=True)
    # ClosedPoolError: its pool was closed under it (evicted by others): try again.
    except (ProtocolError, SSLError, ClosedPoolError, OSError) as exc:
        return ActionResult(False, error=f"connection failed: {failure_reason(exc)}",
                            retryable=True)
    except HTTPError as exc:
        return ActionResult(False, error=f"request failed: {exc.__class__.__name__}")
    if 200 <= answer.status < 300:
        return ActionResult(True, http_status=answer.status, response_body=answer.excerpt)
    reason = f"HTTP {answer.status}"
    if answer.excerpt:
        reason += f": {answer.excerpt[:ERROR_EXCERPT]}"
    return ActionResult(False, http_status=answer.status, error=reason,
                        response_body=answer.excerpt,
                        retryable=retries.is_retryable_status(answer.status),
                        retry_after=retries.parse_retry_after(
                            answer.headers.get("Retry-After")))


def timed_out(timeout: float) -> ActionResult:
    """The result of an exchange that did not end by deadline(timeout)."""
    return ActionResult(False, error=f"timeout: no complete response within "
                                     f"{deadline(timeout):g} s", retryable=True)


def send(request: Outgoing, timeout: float) -> Answer:
    """The receiver's answer, or DeadlineExceeded after deadline(timeout); urllib3's errors
    (a timeout of one read, a refused connection) as they are."""
    return _within(deadline(timeout), _exchange, request, timeout)


def _exchange(request: Outgoing, timeout: float) -> Answer:
    target = request.target
    # Connected to the pinned address, TLS still checks the certificate against the host
    # the URL names.
    tls_name = ({"server_hostname": target.host, "assert_hostname": target.host}
                if request.address and target.scheme == "https" else None)
    pool = connection_pools().connection_from_host(
        request.address or target.host, _port(target), target.scheme, pool_kwargs=tls_name)
    response = pool.urlopen(request.method, target.request_uri, body=request.body,
                            headers=request.headers, retries=False, redirect=False,
                            assert_same_host=False, preload_content=False,
                            release_conn=False,
                            timeout=urllib3.Timeout(connect=timeout, read=timeout))
    return Answer(response.status, response.headers, _read_excerpt(response))


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
        raise DeadlineExceeded(seconds)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _read_excerpt(response: urllib3.BaseHTTPResponse) -> str:
    """The start of the body. At most RESPONSE_KEPT_BYTES are read: a body that ends
    within them lets the connection go back to the pool, a longer one closes it."""
    try:
        body = response.read(RESPONSE_KEPT_BYTES + 1)  # all of it, or that much (urllib3 2)
    except (urllib3.exceptions.HTTPError, OSError):
        body = b""
        response.close()
    else:
        if len(body) > RESPONSE_KEPT_BYTES:
            response.close()
    response.release_conn()  # a closed connection is replaced by a new one when next used
    return body[:RESPONSE_KEPT_BYTES].decode("utf-8", errors="replace").strip()


def failure_reason(exc: Exception) -> str:
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
