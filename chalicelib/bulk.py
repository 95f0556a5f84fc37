"""POST /tasks/bulk: cancel, pause or resume every task of the caller's tenant that a
filter matches, each changed as its own route would change it, a bounded number per
request (a `next_token` continues where the request stopped)."""
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Optional

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import observability, service
from chalicelib.errors import (
    Conflict, InvalidPageToken, StoreUnavailable, TaskNotFound, ValidationError,
)
from chalicelib.validation import parse_json_body, parse_list_query
from chalicelib.wiring import Runtime

logger = logging.getLogger("task_scheduler.bulk")

OPERATIONS = {
    "cancel": lambda runtime, task_id: service.cancel_task(runtime, task_id),
    "pause": lambda runtime, task_id: service.pause_task(runtime, task_id, None),
    "resume": lambda runtime, task_id: service.resume_task(runtime, task_id),
}
FILTERS = ("tag", "status", "name", "tenant")
# Tasks one request changes at most (each is a read, a write and a trigger change): a
# request stays well inside API Gateway's 29 s; a next_token continues.
MAX_PER_REQUEST = 100
PAGE = 50
# Listing calls one request makes at most: a filter that matches little (a tag on
# DynamoDB is applied after each read) ends the request with a next_token, not a scan of
# the tenant's every task.
MAX_READS = 10


def bulk_change(runtime: Runtime, raw_body: Optional[bytes]) -> Dict[str, Any]:
    """Apply one operation to the tasks a filter matches: matched, changed, skipped (their
    status did not allow it, or they changed meanwhile) and the token to continue."""
    body = parse_json_body(raw_body)
    operation, query = _parse(body)  # (a body that is not an object is a 400 there)
    tenant = service.tenant_in_scope(runtime, query["tenant"], "filter.tenant is an admin "
                                     "token's: a tenant's token changes its own tasks only",
                                     "filter")
    progress = _Progress(token=_listing_token(body.get("next_token")))
    stopped = None
    try:
        _change_pages(runtime, operation, query, tenant, progress)
    except _Stopped as stop:
        stopped = stop.reason  # progress.token is the page it stopped in: read it again
    more = stopped is not None or progress.token is not None
    observability.event("tasks_bulk_changed", operation=operation, matched=progress.matched,
                        changed=progress.changed, more=more, stopped=stopped is not None)
    answer = {"matched": progress.matched, "changed": progress.changed,
              "skipped": progress.matched - progress.changed,
              "next_token": _bulk_token(progress.token) if more else None}
    if stopped:
        answer["stopped"] = stopped
    return answer


@dataclass
class _Progress:
    token: Optional[str]  # the listing page to read next (None at the start, and at the end)
    matched: int = 0
    changed: int = 0


class _Stopped(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _change_pages(runtime: Runtime, operation: str, query: Dict[str, Any],
                  tenant: Optional[str], progress: _Progress) -> None:
    """Change page after page from progress.token within the request's bounds, leaving
    progress.token at the page to go on with (None: every match is done)."""
    for _ in range(MAX_READS):
        if progress.matched >= MAX_PER_REQUEST:
            return
        with _stop_after_a_change(progress, "listing"):
            try:
                page = runtime.store.list(
                    query["status"], min(PAGE, MAX_PER_REQUEST - progress.matched),
                    progress.token, query["name"], query["tag"], tenant)
            except InvalidPageToken as error:
                raise ValidationError(str(error), field="next_token",
                                      code="invalid_next_token") from None
        for task in page.tasks:
            with _stop_after_a_change(progress, f"task {task.task_id}"):
                try:
                    OPERATIONS[operation](runtime, task.task_id)
                    progress.changed += 1
                except (Conflict, TaskNotFound):
                    pass  # skipped: its status does not allow it, or it is gone
            progress.matched += 1
        progress.token = page.next_token
        if not progress.token:
            return


@contextmanager
def _stop_after_a_change(progress: _Progress, where: str):
    """An AWS error stops the request: as its answer when nothing was changed yet, else
    as _Stopped, so the changes made are answered (the next request reads the page
    again; the tasks already changed are then skipped, or no longer match)."""
    try:
        yield
    except (StoreUnavailable, ClientError, BotoCoreError) as error:
        if not progress.changed:
            raise
        logger.exception("bulk change stopped at the %s", where)
        # What failed, not AWS's message (it may name the account, roles and resources).
        cause = (error.response["Error"]["Code"] if isinstance(error, ClientError)
                 else "the store cannot answer now" if isinstance(error, StoreUnavailable)
                 else error.__class__.__name__)
        raise _Stopped(f"stopped at the {where}: {cause}") from error


# A bulk next_token wraps the listing's page token: it can also name the listing's start,
# where a request stopped by an error in its first page goes on.
_TOKEN_PREFIX = "bulk1."


def _bulk_token(listing_token: Optional[str]) -> str:
    return _TOKEN_PREFIX + (listing_token or "")


def _listing_token(bulk_token: Optional[str]) -> Optional[str]:
    if bulk_token is None:
        return None
    if not bulk_token.startswith(_TOKEN_PREFIX):
        raise ValidationError("next_token is not one a bulk answer gave", field="next_token",
                              code="invalid_next_token")
    return bulk_token[len(_TOKEN_PREFIX):] or None


def _parse(body: Any):
    if not isinstance(body, dict):
        raise ValidationError("the request body must be a JSON object", code="invalid_json")
    unknown = sorted(set(body) - {"operation", "filter", "next_token"})
    if unknown:
        raise ValidationError(f"'{unknown[0][:60]}' is not a field of a bulk change "
                              "(operation, filter, next_token)", field=unknown[0][:60],
                              code="unknown_field")
    operation = body.get("operation")
    if not isinstance(operation, str) or operation not in OPERATIONS:
        raise ValidationError(f"operation must be one of {', '.join(OPERATIONS)}",
                              field="operation")
    wanted = body.get("filter")
    if not isinstance(wanted, dict) or not wanted or set(wanted) - set(FILTERS) or not all(
            isinstance(value, str) and value for value in wanted.values()):
        raise ValidationError("filter is required: an object of one or more of tag "
                              "(key:value), status, name and (an admin's) tenant, each a "
                              "non-empty string", field="filter")
    token = body.get("next_token")
    if token is not None and not isinstance(token, str):
        raise ValidationError("next_token must be the string a bulk answer gave",
                              field="next_token")
    return operation, parse_list_query(dict(wanted))
