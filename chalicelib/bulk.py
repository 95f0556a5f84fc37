"""POST /tasks/bulk: cancel, pause or resume every task of the caller's tenant that a
filter matches, each changed as its own route would change it, a bounded number per
request (a `next_token` continues where the request stopped)."""
from typing import Any, Dict, Optional

from chalicelib import observability, service
from chalicelib.errors import Conflict, InvalidPageToken, TaskNotFound, ValidationError
from chalicelib.validation import parse_json_body, parse_list_query
from chalicelib.wiring import Runtime

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
    matched = changed = 0
    token = body.get("next_token")
    for _ in range(MAX_READS):
        if matched >= MAX_PER_REQUEST:
            break
        try:
            page = runtime.store.list(query["status"], min(PAGE, MAX_PER_REQUEST - matched),
                                      token, query["name"], query["tag"], tenant)
        except InvalidPageToken as error:
            raise ValidationError(str(error), field="next_token",
                                  code="invalid_next_token") from None
        for task in page.tasks:
            matched += 1
            try:
                OPERATIONS[operation](runtime, task.task_id)
            except (Conflict, TaskNotFound):
                continue
            changed += 1
        token = page.next_token
        if not token:
            break
    observability.event("tasks_bulk_changed", operation=operation, matched=matched,
                        changed=changed, more=bool(token))
    return {"matched": matched, "changed": changed, "skipped": matched - changed,
            "next_token": token}


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
