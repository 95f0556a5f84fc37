"""One HTTP exchange of a webhook run: the pooled session, the pinned address, the deadline.

The host is resolved once and the connection pinned to that answer (a DNS rebind cannot
turn an allowed host into a private one between the check and the connect), and the whole
exchange, not just each read, ends by a deadline.
"""
import threading
from typing import Any, Dict, Optional, Tuple

import requests
from urllib3.util import parse_url

from chalicelib import ssrf, threads
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


def pin(request: requests.PreparedRequest) -> Optional[ActionResult]:
    """Resolve the host once, refuse a private answer, and pin the connection to it."""
    target = parse_url(request.url)  # the host as sent: IDNA-encoded, lower case
    host = target.host.strip("[]")
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        request.pinned_address = ssrf.resolve_allowed(host, port)
    except BlockedAddress as exc:
        return ActionResult(False, error=f"refused: {exc}")
    except (OSError, UnicodeError) as exc:
        return ActionResult(False, error=f"DNS lookup of {host} failed: "
                                         f"{exc.__class__.__name__}: {exc}", retryable=True)
    request.pinned_host = host
    request.headers["Host"] = target.netloc
    return None


def send(session: requests.Session, request: requests.PreparedRequest,
         timeout: float) -> Tuple[requests.Response, str]:
    """The response and the start of its body, or DeadlineExceeded after deadline(timeout)."""
    return _within(deadline(timeout), _exchange, session, request, timeout)


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
        raise DeadlineExceeded(seconds)
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
    body = b"".join(chunks)[:RESPONSE_KEPT_BYTES]
    return body.decode("utf-8", errors="replace").strip()


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
