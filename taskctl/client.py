"""A thin client of the task scheduler's HTTP API: one method per route, JSON in and out."""
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Optional

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(Exception):
    """The API answered with an error status (its body's code, message and field)."""

    def __init__(self, status: int, code: Optional[str], message: str,
                 field: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


class Unreachable(Exception):
    """No answer from the API: refused, timed out, or a name that does not resolve."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"could not reach {url}: {reason}")
        self.url = url
        self.reason = reason


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx answer is not followed: it reaches _call as an HTTPError with its status."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


# Without a redirect handler that follows, the bearer token never leaves for another URL.
_OPENER = urllib.request.build_opener(_RefuseRedirects)


class Client:
    """The API at `base_url`, authenticated with a bearer token."""

    def __init__(self, base_url: str = DEFAULT_URL, token: Optional[str] = None,
                 timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def schedule(self, body: Dict[str, Any], idempotency_key: Optional[str] = None) -> dict:
        """POST /schedule-task."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/schedule-task", body, headers=headers)

    def list_tasks(self, status: Optional[str] = None, name: Optional[str] = None,
                   limit: Optional[int] = None, next_token: Optional[str] = None,
                   tag: Optional[str] = None, tenant: Optional[str] = None) -> dict:
        """GET /tasks: one page; `tag` is key:value, `tenant` an admin token's filter."""
        return self._call("GET", "/tasks", query={
            "status": status, "name": name, "tag": tag, "limit": limit,
            "next_token": next_token, "tenant": tenant})

    def get_task(self, task_id: str) -> dict:
        """GET /tasks/{task_id}."""
        return self._call("GET", f"/tasks/{_segment(task_id)}")

    def update(self, task_id: str, body: Dict[str, Any],
               if_match: Optional[int] = None) -> dict:
        """PATCH /tasks/{task_id}: change the fields in `body`."""
        return self._call("PATCH", f"/tasks/{_segment(task_id)}", body,
                          headers=_if_match(if_match))

    def cancel(self, task_id: str, if_match: Optional[int] = None) -> dict:
        """DELETE /tasks/{task_id}."""
        return self._call("DELETE", f"/tasks/{_segment(task_id)}", headers=_if_match(if_match))

    def retry(self, task_id: str, run_at: Optional[str] = None,
              if_match: Optional[int] = None) -> dict:
        """POST /tasks/{task_id}/retry, now or at `run_at`."""
        body = {"run_at": run_at} if run_at else None
        return self._call("POST", f"/tasks/{_segment(task_id)}/retry", body,
                          headers=_if_match(if_match))

    def pause(self, task_id: str, until: Optional[str] = None,
              if_match: Optional[int] = None) -> dict:
        """POST /tasks/{task_id}/pause, until resumed or until `until`."""
        body = {"until": until} if until else None
        return self._call("POST", f"/tasks/{_segment(task_id)}/pause", body,
                          headers=_if_match(if_match))

    def resume(self, task_id: str, if_match: Optional[int] = None) -> dict:
        """POST /tasks/{task_id}/resume."""
        return self._call("POST", f"/tasks/{_segment(task_id)}/resume",
                          headers=_if_match(if_match))

    def run_now(self, task_id: str, if_match: Optional[int] = None) -> dict:
        """POST /tasks/{task_id}/run: one extra run now, outside the schedule (202)."""
        return self._call("POST", f"/tasks/{_segment(task_id)}/run",
                          headers=_if_match(if_match))

    def preview(self, run_at: str, timezone: Optional[str] = None,
                count: Optional[int] = None) -> dict:
        """GET /preview: the next firings of a run_at, nothing stored."""
        return self._call("GET", "/preview", query={
            "run_at": run_at, "timezone": timezone, "count": count})

    def flow_control(self, key: str) -> dict:
        """GET /flow-control/{key}: its limits, runs holding a slot and tasks waiting."""
        return self._call("GET", f"/flow-control/{_segment(key)}")

    def _call(self, method: str, path: str, body: Any = None,
              query: Optional[Dict[str, Any]] = None,
              headers: Optional[Dict[str, str]] = None) -> dict:
        url = self.base_url + path
        query = {key: value for key, value in (query or {}).items() if value is not None}
        if query:
            url += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(
            url, method=method, headers={"Accept": "application/json", **(headers or {})},
            data=json.dumps(body).encode() if body is not None else None)
        if body is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            # Unredirected as well: should a redirect ever be followed, it goes without it.
            request.add_unredirected_header("Authorization", f"Bearer {self.token}")
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
            if 300 <= status < 400:
                where = error.headers.get("Location") if error.headers else None
                raise ApiError(status, "redirect", f"{self.base_url} redirects"
                               f"{f' to {where}' if where else ''}, and redirects are not "
                               "followed (the token would go along): give the API's own "
                               "URL with --url or TASKCTL_URL") from None
        except urllib.error.URLError as error:
            raise Unreachable(self.base_url, str(error.reason)) from None
        except (OSError, http.client.HTTPException) as error:
            # Timeouts, resets and garbled answers: nothing usable came back.
            raise Unreachable(self.base_url, str(error) or type(error).__name__) from None
        return _answer(status, raw, self.base_url)


def _segment(value: str) -> str:
    # An id or key is one path segment: a "/" or "?" in it must not reach another route.
    return urllib.parse.quote(value, safe="")


def _if_match(version: Optional[int]) -> Dict[str, str]:
    # The task's ETag is its version in quotes; without one any version is changed.
    return {"If-Match": f'"{version}"'} if version is not None else {}


def _answer(status: int, raw: bytes, base_url: str) -> dict:
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = None
    if not isinstance(body, dict):
        # Not this API (a proxy's page, another server on the port): say so plainly.
        raise ApiError(status if status >= 400 else 502, "not_json",
                       f"{base_url} answered HTTP {status} with something other than "
                       "the task scheduler's JSON")
    if status >= 400:
        # API Gateway's own 401/403 bodies carry only "message" (or "Message").
        message = body.get("message") or body.get("Message") or f"HTTP {status}"
        raise ApiError(status, body.get("code"), message, body.get("field"))
    return body
