"""DynamoDB adapter of the task store.

One item per task, hash key TaskID, with a Version raised by every write: a claim is one
conditional UpdateItem, every other change one PutItem conditioned on the version it read.
Global secondary indexes:
- DueIndex (sparse, projects all attributes): DueBucket = "P<priority>", DueAt = when the
  task next needs attention. Only tasks that wait (scheduled, retrying: DueAt =
  next_run_at), are paused until a time (DueAt = its end) or hold a lease (running: DueAt
  = lease expiry) carry these attributes, so the due query reads
  due items only, one Query per priority from 9 down to 0, and never the whole table.
- StatusIndex: Status, CreatedAt, for listing by status newest first.
- TenantIndex (Tenant, CreatedAt) and TenantStatusIndex (`<tenant>#<status>`, CreatedAt):
  one tenant's listings, so a tenant's read never filters over everyone's items.
DynamoDB throttling, its own failures and an unreachable endpoint (after botocore's
retries) are StoreUnavailable; other AWS errors surface as they are.
"""
import functools
import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Dict, Iterator, List, Optional, Tuple

from botocore.exceptions import (
    ClientError, ConnectionClosedError, ConnectTimeoutError, EndpointConnectionError,
    ReadTimeoutError,
)

from chalicelib import aws, config
from chalicelib.errors import (
    ClaimLost, FlowConflict, StateConflict, StoreUnavailable, TaskExists, TaskNotFound,
)
from chalicelib.flow import FlowState, Limits
from chalicelib.models import (
    DEFAULT_TENANT, FINISHED, OPTIONS, RETRYING, RUNNING, SCHEDULED, Option, Page, Run, Task,
    iso, iso_ms, parse_iso,
)
from chalicelib.store import LEASE_SECONDS, Tag, TaskStore, decode_token, encode_token
from chalicelib.store.attribute_values import deserialize, serialize

# DynamoDB deletes a finished task this long after it finished (the table's TTL attribute).
TTL_ATTRIBUTE = "ExpiresAt"


PRIORITIES = range(9, -1, -1)
# A name or tag search reads at most SEARCH_READS pages per request, each of SEARCH_PAGE_PER_MATCH
# items per match wanted, at most SEARCH_PAGE.
SEARCH_READS = 10
SEARCH_PAGE = 200
SEARCH_PAGE_PER_MATCH = 4


def tenant_status(tenant: str, status: str) -> str:
    """TenantStatusIndex partition: one tenant's tasks of one status."""
    return f"{tenant}#{status}"


def due_bucket(priority: int) -> str:
    """DueIndex partition of a priority."""
    return f"P{priority}"


def _page_key(item: Dict[str, Any], status: Optional[str],
              tenant: Optional[str] = None) -> Dict[str, Any]:
    # The ExclusiveStartKey that continues right after `item` (table, or the index read).
    if tenant:
        by_status = status is not None and status != RUNNING
        names: tuple = ("TaskID", "TenantStatus" if by_status else "Tenant", "CreatedAt")
    else:
        names = ("TaskID", "Status", "CreatedAt") if status else ("TaskID",)
    return {name: item[name] for name in names}


def _is_condition_failure(error: ClientError) -> bool:
    return error.response["Error"]["Code"] == "ConditionalCheckFailedException"


def _is_table_key(key: Any) -> bool:
    # A LastEvaluatedKey of the table or StatusIndex: string attributes only.
    return (isinstance(key, dict) and "TaskID" in key
            and set(key) <= {"TaskID", "Status", "CreatedAt", "Tenant", "TenantStatus"}
            and all(isinstance(v, dict) and set(v) == {"S"} and isinstance(v["S"], str)
                    for v in key.values()))


# DynamoDB's answers, after botocore's own retries, that mean "not now" rather than a fault
# of the request.
_NOT_NOW = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException",
                      "RequestLimitExceeded", "InternalServerError", "ServiceUnavailable"})
_UNREACHABLE = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError,
                ReadTimeoutError)


class _UnavailableAsDomainError:
    """The DynamoDB client, raising StoreUnavailable where DynamoDB cannot answer now."""

    def __init__(self, client):
        self.client = client

    def __getattr__(self, name: str):
        # Called once per method: the wrapper is kept on the instance for the next call.
        method = getattr(self.client, name)

        def call(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except ClientError as error:
                if error.response["Error"]["Code"] not in _NOT_NOW:
                    raise
                raise StoreUnavailable(f"DynamoDB cannot answer now ({error}); "
                                       "try again later") from error
            except _UNREACHABLE as error:
                raise StoreUnavailable(f"DynamoDB cannot be reached ({error}); "
                                       "try again later") from error
        setattr(self, name, call)
        return call


class _Refused(Exception):
    """A conditional update's condition did not hold; `current` is the task as it was
    (None when there is none)."""

    def __init__(self, current: Optional[Task]):
        super().__init__("condition not met")
        self.current = current


def _state_error(task_id: str, current: Optional[Task]) -> Exception:
    if current is None:
        return TaskNotFound(f"no task with id {task_id}", field="task_id")
    return StateConflict(current)


class DynamoDBTaskStore(TaskStore):
    """Tasks in a DynamoDB table (see module docstring for the key design)."""

    def __init__(self, table_name: str, flow_table: Optional[str] = None):
        self.table_name = table_name
        self.flow_table = flow_table or f"{table_name}-flow"
        self._wrapped: Optional[_UnavailableAsDomainError] = None

    @property
    def _client(self):
        client = aws.client("dynamodb")
        if self._wrapped is None or self._wrapped.client is not client:
            self._wrapped = _UnavailableAsDomainError(client)
        return self._wrapped

    # ------------------------------------------------------------ writes

    def create(self, task: Task) -> None:
        try:
            self._client.put_item(
                TableName=self.table_name,
                Item=_serialize(to_item(task)),
                ConditionExpression="attribute_not_exists(TaskID)",
            )
        except ClientError as error:
            if _is_condition_failure(error):
                raise TaskExists(task.task_id) from None
            raise

    def claim(self, task_id: str, run_id: str, now: datetime) -> Task:
        lease_until = now + timedelta(seconds=LEASE_SECONDS)
        try:
            return self._update(
                task_id,
                "SET #status = :running, RunId = :run_id, LeaseUntil = :lease, "
                "DueAt = :lease, UpdatedAt = :now, Attempts = Attempts + :one, "
                "Version = if_not_exists(Version, :zero) + :one "
                # Out of its tenant's status listing while it runs (the claim cannot name
                # the tenant): that listing of running tasks reads the tenant's partition.
                "REMOVE TenantStatus",
                "(#status IN (:scheduled, :retrying) AND NextRunAt <= :now_key) "
                "OR (#status = :running AND LeaseUntil < :now_key)",
                {":running": RUNNING, ":scheduled": SCHEDULED, ":retrying": RETRYING,
                 ":run_id": run_id, ":lease": iso_ms(lease_until),
                 ":now": iso(now), ":now_key": iso_ms(now), ":one": 1, ":zero": 0})
        except _Refused as refused:
            raise ClaimLost(task_id, refused.current) from None

    def update(self, task: Task, version: int) -> Task:
        after = replace(task, version=version + 1)
        # An item from before versions has none: it is version 0.
        condition = ("attribute_exists(TaskID) AND "
                     + ("(attribute_not_exists(Version) OR Version = :version)" if version == 0
                        else "Version = :version"))
        try:
            self._client.put_item(
                TableName=self.table_name, Item=_serialize(to_item(after)),
                ConditionExpression=condition,
                ExpressionAttributeValues=_serialize({":version": version}),
                ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except ClientError as error:
            if not _is_condition_failure(error):
                raise
            old = error.response.get("Item")
            raise _state_error(task.task_id, from_item(_deserialize(old)) if old else None
                               ) from None
        return after

    def _update(self, task_id: str, update: str, condition: str,
                values: Dict[str, Any]) -> Task:
        """One UpdateItem applied only while `condition` holds: the task after it, or
        _Refused with the task as it was. `#status` names the Status attribute."""
        try:
            response = self._client.update_item(
                TableName=self.table_name,
                Key={"TaskID": {"S": task_id}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#status": "Status"},
                ExpressionAttributeValues=_serialize(values),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if _is_condition_failure(error):
                old = error.response.get("Item")
                raise _Refused(from_item(_deserialize(old)) if old else None) from None
            raise
        return from_item(_deserialize(response["Attributes"]))

    # ------------------------------------------------------------ flow control
    # The flow table: partition FlowKey, sort Entry; "state" is the key's FlowState,
    # "wait#<entry>" the queue, so one strongly consistent Query reads the queue in order.

    def get_flow(self, key: str) -> FlowState:
        response = self._client.get_item(
            TableName=self.flow_table, ConsistentRead=True,
            Key={"FlowKey": {"S": key}, "Entry": {"S": FLOW_STATE}})
        item = response.get("Item")
        return _flow_from_item(_deserialize(item)) if item else FlowState(key, Limits())

    def put_flow(self, state: FlowState, version: int) -> FlowState:
        after = replace(state, version=version + 1)
        condition = ({"ConditionExpression": "attribute_not_exists(FlowKey)"} if version == 0
                     else {"ConditionExpression": "Version = :version",
                           "ExpressionAttributeValues": _serialize({":version": version})})
        try:
            self._client.put_item(
                TableName=self.flow_table, Item=_serialize(_flow_to_item(after)),
                ReturnValuesOnConditionCheckFailure="ALL_OLD", **condition)
        except ClientError as error:
            if not _is_condition_failure(error):
                raise
            old = error.response.get("Item")
            raise FlowConflict(_flow_from_item(_deserialize(old)) if old
                               else FlowState(state.key, Limits())) from None
        return after

    def swap_slot(self, key: str, remove: Optional[str] = None,
                  add: Optional[Tuple[str, datetime]] = None) -> Optional[FlowState]:
        changes, names, values = [], {}, {":one": 1}
        condition = "attribute_exists(FlowKey)"
        if add:
            changes.append("Slots.#add = :until")
            names["#add"], values[":until"] = add[0], iso_ms(add[1])
        if remove:
            names["#remove"] = remove
            if add:
                condition += " AND attribute_exists(Slots.#remove)"
        update = "SET " + ", ".join(changes + ["Version = Version + :one"]) + (
            " REMOVE Slots.#remove" if remove else "")
        try:
            response = self._client.update_item(
                TableName=self.flow_table,
                Key=_serialize({"FlowKey": key, "Entry": FLOW_STATE}),
                UpdateExpression=update, ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=_serialize(values), ReturnValues="ALL_NEW")
        except ClientError as error:
            if _is_condition_failure(error):
                return None
            raise
        return _flow_from_item(_deserialize(response["Attributes"]))

    def take_slot(self, key: str, slot: str, until: datetime) -> Tuple[bool, FlowState]:
        try:
            response = self._client.update_item(
                TableName=self.flow_table,
                Key=_serialize({"FlowKey": key, "Entry": FLOW_STATE}),
                UpdateExpression="SET Slots.#slot = :until, Version = Version + :one",
                ConditionExpression="attribute_exists(Slots) AND attribute_not_exists(Rate) "
                                    "AND attribute_not_exists(Slots.#slot) "
                                    "AND size(Slots) < Parallelism",
                ExpressionAttributeNames={"#slot": slot},
                ExpressionAttributeValues=_serialize({":until": iso_ms(until), ":one": 1}),
                ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except ClientError as error:
            if not _is_condition_failure(error):
                raise
            old = error.response.get("Item")
            return False, (_flow_from_item(_deserialize(old)) if old
                           else FlowState(key, Limits()))
        return True, _flow_from_item(_deserialize(response["Attributes"]))

    def wake_waiting(self, task_id: str, entry: str, at: datetime, now: datetime
                     ) -> Optional[Task]:
        try:
            return self._update(
                task_id,
                "SET NextRunAt = :at, DueAt = :at, UpdatedAt = :now, "
                "Version = Version + :one REMOVE FlowWaiting",
                "FlowWaiting = :entry AND #status IN (:scheduled, :retrying)",
                {":at": iso_ms(at), ":now": iso(now), ":one": 1, ":entry": entry,
                 ":scheduled": SCHEDULED, ":retrying": RETRYING})
        except _Refused:
            return None

    # A tenant's count of waiting tasks lives in the flow table too (partition
    # `tenant:<name>`, entry "waiting"): one more small item, no table of its own.

    def count_waiting(self, tenant: str, delta: int, below: Optional[int] = None) -> bool:
        values: Dict[str, Any] = {":delta": delta, ":zero": 0}
        condition = "Waiting > :zero" if delta < 0 else None
        if below is not None:
            values[":below"] = below
            condition = "attribute_not_exists(Waiting) OR Waiting < :below"
        try:
            self._client.update_item(
                TableName=self.flow_table,
                Key=_serialize({"FlowKey": TENANT_COUNT + tenant, "Entry": "waiting"}),
                UpdateExpression="SET Waiting = if_not_exists(Waiting, :zero) + :delta",
                ExpressionAttributeValues=_serialize(values),
                **({"ConditionExpression": condition} if condition else {}))
        except ClientError as error:
            if _is_condition_failure(error):
                return False
            raise
        return True

    def waiting_count(self, tenant: str) -> int:
        item = self._client.get_item(
            TableName=self.flow_table, ConsistentRead=True,
            Key=_serialize({"FlowKey": TENANT_COUNT + tenant, "Entry": "waiting"})
        ).get("Item")
        return int(item["Waiting"]["N"]) if item else 0

    def add_waiter(self, key: str, entry: str, task_id: str) -> None:
        self._client.put_item(TableName=self.flow_table, Item=_serialize(
            {"FlowKey": key, "Entry": WAITER_PREFIX + entry, "TaskID": task_id}))

    def remove_waiter(self, key: str, entry: str) -> None:
        self._client.delete_item(TableName=self.flow_table, Key=_serialize(
            {"FlowKey": key, "Entry": WAITER_PREFIX + entry}))

    def waiters(self, key: str, limit: int) -> List[Tuple[str, str]]:
        response = self._client.query(
            TableName=self.flow_table, ConsistentRead=True, Limit=limit,
            KeyConditionExpression="FlowKey = :key AND begins_with(Entry, :wait)",
            ExpressionAttributeValues=_serialize({":key": key, ":wait": WAITER_PREFIX}))
        return [(item["Entry"]["S"][len(WAITER_PREFIX):], item["TaskID"]["S"])
                for item in response["Items"]]

    def count_waiters(self, key: str) -> int:
        counted, start = 0, None
        while True:
            response = self._client.query(
                TableName=self.flow_table, ConsistentRead=True, Select="COUNT",
                KeyConditionExpression="FlowKey = :key AND begins_with(Entry, :wait)",
                ExpressionAttributeValues=_serialize({":key": key, ":wait": WAITER_PREFIX}),
                **({"ExclusiveStartKey": start} if start else {}))
            counted += response["Count"]
            start = response.get("LastEvaluatedKey")
            if not start:
                return counted

    def delete(self, task_id: str) -> None:
        self._client.delete_item(TableName=self.table_name, Key={"TaskID": {"S": task_id}})

    # ------------------------------------------------------------ reads

    def get(self, task_id: str) -> Task:
        response = self._client.get_item(
            TableName=self.table_name, Key={"TaskID": {"S": task_id}}, ConsistentRead=True)
        if "Item" not in response:
            raise TaskNotFound(f"no task with id {task_id}", field="task_id")
        return from_item(_deserialize(response["Item"]))

    def list(self, status: Optional[str], limit: int, next_token: Optional[str],
             name: Optional[str] = None, tag: Optional[Tag] = None,
             tenant: Optional[str] = None) -> Page:
        start_key = decode_token(next_token, status, _is_table_key, name, tag, tenant)
        scope = (status, tenant)
        running = None
        if tenant:
            by_status = status is not None and status != RUNNING
            index, partition, value = (
                (config.TENANT_STATUS_INDEX, "TenantStatus", tenant_status(tenant, status))
                if by_status else (config.TENANT_INDEX, "Tenant", tenant))
            running = status if status == RUNNING else None
            read = functools.partial(
                self._client.query, TableName=self.table_name, IndexName=index,
                KeyConditionExpression="#part = :part", ScanIndexForward=False,
                ExpressionAttributeNames={"#part": partition},
                ExpressionAttributeValues={":part": {"S": value}})
        elif status:
            read = functools.partial(
                self._client.query, TableName=self.table_name, IndexName=config.STATUS_INDEX,
                KeyConditionExpression="#status = :status", ScanIndexForward=False,
                ExpressionAttributeNames={"#status": "Status"},
                ExpressionAttributeValues={":status": {"S": status}})
        else:
            read = functools.partial(self._client.scan, TableName=self.table_name)
        if not name and not tag and not running:
            response = read(Limit=limit, **({"ExclusiveStartKey": start_key}
                                            if start_key else {}))
            tasks = [from_item(_deserialize(item)) for item in response.get("Items", [])]
            return Page(tasks=tasks, next_token=encode_token(
                response.get("LastEvaluatedKey"), status, tenant=tenant))
        return self._search(read, scope, name, tag, limit, start_key, running)

    def _search(self, read, scope, name: Optional[str], tag: Optional[Tag],
                limit: int, start_key: Optional[Dict[str, Any]],
                status: Optional[str] = None) -> Page:
        # A filter applies after the read: follow pages until `limit` matches, reading at
        # most SEARCH_READS pages of a few times `limit` items per call (the page may then
        # be short, with a token). Items stored before NameSearch existed match on Name
        # as written (case-sensitive).
        found: List[Dict[str, Any]] = []
        names = dict(read.keywords.get("ExpressionAttributeNames", {}))
        values = dict(read.keywords.get("ExpressionAttributeValues", {}))
        clauses = []
        if name:
            names["#name"] = "Name"
            values.update({":folded": {"S": name.casefold()}, ":name": {"S": name}})
            clauses.append("(contains(NameSearch, :folded) OR "
                           "(attribute_not_exists(NameSearch) AND contains(#name, :name)))")
        if status:  # a tenant's running tasks: its partition, filtered by status
            names["#state"] = "Status"
            values[":state"] = {"S": status}
            clauses.append("#state = :state")
        if tag:
            # A tag key is any text: it is always an attribute name placeholder.
            names.update({"#tags": "Tags", "#tag_key": tag[0]})
            values[":tag_value"] = {"S": tag[1]}
            clauses.append("#tags.#tag_key = :tag_value")
        for _ in range(SEARCH_READS):
            response = read(
                Limit=min(SEARCH_PAGE, SEARCH_PAGE_PER_MATCH * limit),
                FilterExpression=" AND ".join(clauses),
                ExpressionAttributeNames=names, ExpressionAttributeValues=values,
                **({"ExclusiveStartKey": start_key} if start_key else {}))
            items = response.get("Items", [])
            for index, item in enumerate(items):
                found.append(item)
                if len(found) == limit:
                    more = index < len(items) - 1 or "LastEvaluatedKey" in response
                    key = _page_key(item, *scope) if more else None
                    return self._page(found, key, scope, name, tag)
            start_key = response.get("LastEvaluatedKey")
            if not start_key:
                break
        return self._page(found, start_key, scope, name, tag)

    @staticmethod
    def _page(items, key, scope, name, tag) -> Page:
        status, tenant = scope
        return Page(tasks=[from_item(_deserialize(item)) for item in items],
                    next_token=encode_token(key, status, name, tag, tenant))

    def due(self, now: datetime, limit: int) -> Iterator[Task]:
        for priority in PRIORITIES:
            yield from self._due_in_bucket(priority, now, limit)

    def _due_in_bucket(self, priority: int, now: datetime, limit: int) -> Iterator[Task]:
        kwargs: Dict[str, Any] = {}
        while True:
            response = self._client.query(
                TableName=self.table_name,
                IndexName=config.DUE_INDEX,
                KeyConditionExpression="DueBucket = :bucket AND DueAt <= :now",
                ExpressionAttributeValues=_serialize({
                    ":bucket": due_bucket(priority), ":now": iso_ms(now)}),
                Limit=limit,
                **kwargs,
            )
            for item in response.get("Items", []):
                yield from_item(_deserialize(item))
            if "LastEvaluatedKey" not in response:
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def next_due_after(self, now: datetime) -> Optional[datetime]:
        earliest = None
        for priority in PRIORITIES:
            response = self._client.query(
                TableName=self.table_name,
                IndexName=config.DUE_INDEX,
                KeyConditionExpression="DueBucket = :bucket AND DueAt > :now",
                ExpressionAttributeValues=_serialize({
                    ":bucket": due_bucket(priority), ":now": iso_ms(now)}),
                ProjectionExpression="DueAt",
                Limit=1,
            )
            for item in response.get("Items", []):
                due_at = _deserialize(item)["DueAt"]
                earliest = due_at if earliest is None else min(earliest, due_at)
        return parse_iso(earliest)

    def recover_running(self, now: datetime, run_prefix: str) -> int:
        recovered = 0
        kwargs: Dict[str, Any] = {}
        while True:
            response = self._client.query(
                TableName=self.table_name,
                IndexName=config.STATUS_INDEX,
                KeyConditionExpression="#status = :running",
                ExpressionAttributeNames={"#status": "Status"},
                ExpressionAttributeValues={":running": {"S": RUNNING}},
                ProjectionExpression="TaskID, RunId",
                **kwargs,
            )
            for item in response.get("Items", []):
                found = _deserialize(item)
                if str(found.get("RunId", "")).startswith(run_prefix):
                    recovered += self._expire_lease(found, now)
            if "LastEvaluatedKey" not in response:
                return recovered
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def _expire_lease(self, item: Dict[str, Any], now: datetime) -> int:
        try:
            self._update(item["TaskID"], "SET LeaseUntil = :lease, DueAt = :lease, "
                         "Version = if_not_exists(Version, :zero) + :one",
                         "#status = :running AND RunId = :run_id",
                         {":lease": iso_ms(now - timedelta(milliseconds=1)),
                          ":running": RUNNING, ":run_id": item.get("RunId"), ":zero": 0,
                          ":one": 1})
        except _Refused:
            return 0  # finished meanwhile
        return 1


# ---------------------------------------------------------------- item mapping

FLOW_STATE = "state"
# A tenant's count's partition; its entry is "waiting", which no flow key's items use.
TENANT_COUNT = "tenant:"
WAITER_PREFIX = "wait#"


def _flow_to_item(state: FlowState) -> Dict[str, Any]:
    item = {"FlowKey": state.key, "Entry": FLOW_STATE, "Period": state.limits.period,
            "Rate": state.limits.rate, "Parallelism": state.limits.parallelism,
            "Slots": {run: iso_ms(end) for run, end in state.slots.items()},
            "NextStart": iso_ms(state.next_start), "LastStart": iso_ms(state.last_start),
            "Version": state.version}
    return {name: value for name, value in item.items() if value is not None}


def _flow_from_item(item: Dict[str, Any]) -> FlowState:
    def number(name):
        return int(item[name]) if name in item else None

    return FlowState(key=item["FlowKey"],
                     limits=Limits(rate=number("Rate"), period=item["Period"],
                                   parallelism=number("Parallelism")),
                     slots={run: parse_iso(end) for run, end in item["Slots"].items()},
                     next_start=parse_iso(item.get("NextStart")),
                     last_start=parse_iso(item.get("LastStart")),
                     version=int(item["Version"]))


def to_item(task: Task) -> Dict[str, Any]:
    """The DynamoDB item of a task (plain Python values; serialized by the caller)."""
    item: Dict[str, Any] = {
        "TaskID": task.task_id,
        "Action": task.action,
        "Payload": json.dumps(task.payload, separators=(",", ":"), ensure_ascii=False),
        "RunAt": task.run_at,
        "ScheduleKind": task.schedule_kind,
        "Timezone": task.timezone,
        "Status": task.status,
        "Attempts": task.attempts,
        "CreatedAt": iso_ms(task.created_at),
        "UpdatedAt": iso(task.updated_at),
        "Runs": [_run_to_item(run) for run in task.runs],
        "Version": task.version,
        "RunsDone": task.runs_done,
    }
    optional = {
        **{attribute_name(declared): getattr(task, declared.name) for declared in OPTIONS},
        "NextRunAt": iso_ms(task.next_run_at),
        "FiringAt": iso_ms(task.firing_at),
        "RunId": task.run_id,
        "LeaseUntil": iso_ms(task.lease_until),
        "IdempotencyKey": task.idempotency_key,
        "RequestHash": task.request_hash,
        "PausedUntil": iso_ms(task.paused_until),
        "ExtraRunKey": task.extra_run_key,
        "PauseAfterRun": task.pause_after_run or None,
        "FlowWaiting": task.flow_waiting,
        "Tenant": task.tenant,
        # A running task is out of its tenant's status listing, as a claim leaves it.
        "TenantStatus": tenant_status(task.tenant, task.status) if task.status != RUNNING
        else None,
        "FlowDelayedAt": iso_ms(task.flow_delayed_at),
    }
    item.update({key: value for key, value in optional.items() if value is not None})
    if task.name:
        item["NameSearch"] = task.name.casefold()  # DynamoDB's contains() is case-sensitive
    due = task.lease_until if task.status == RUNNING else task.wake_at
    if due is not None:
        item["DueBucket"] = due_bucket(task.priority)
        item["DueAt"] = iso_ms(due)
    if task.status in FINISHED and task.updated_at is not None:
        item[TTL_ATTRIBUTE] = expires_at(task.updated_at)
    return item


def expires_at(finished: datetime) -> int:
    """When DynamoDB's TTL may delete a task that finished at `finished` (epoch seconds)."""
    return int((finished + timedelta(days=config.task_retention_days())).timestamp())


def from_item(item: Dict[str, Any]) -> Task:
    """A Task from a deserialized item."""
    return Task(
        task_id=item["TaskID"],
        action=item["Action"],
        payload=json.loads(item["Payload"]),
        run_at=item["RunAt"],
        schedule_kind=item["ScheduleKind"],
        next_run_at=parse_iso(item.get("NextRunAt")),
        status=item["Status"],
        timezone=item.get("Timezone", "UTC"),
        attempts=int(item.get("Attempts", 0)),
        created_at=parse_iso(item["CreatedAt"]),
        updated_at=parse_iso(item["UpdatedAt"]),
        run_id=item.get("RunId"),
        lease_until=parse_iso(item.get("LeaseUntil")),
        runs=[_run_from_item(run) for run in item.get("Runs", [])],
        firing_at=parse_iso(item.get("FiringAt")),
        idempotency_key=item.get("IdempotencyKey"),
        request_hash=item.get("RequestHash"),
        version=int(item.get("Version", 0)),
        runs_done=int(item.get("RunsDone", 0)),
        paused_until=parse_iso(item.get("PausedUntil")),
        extra_run_key=item.get("ExtraRunKey"),
        pause_after_run=bool(item.get("PauseAfterRun", False)),
        flow_waiting=item.get("FlowWaiting"),
        tenant=item.get("Tenant", DEFAULT_TENANT),
        flow_delayed_at=parse_iso(item.get("FlowDelayedAt")),
        **{declared.name: _option_from_item(declared, item) for declared in OPTIONS},
    )


def attribute_name(declared: Option) -> str:
    """The item attribute of a task option: its name in CamelCase (max_attempts ->
    MaxAttempts)."""
    return "".join(part.capitalize() for part in declared.name.split("_"))


def _option_from_item(declared: Option, item: Dict[str, Any]) -> Any:
    value = item.get(attribute_name(declared))
    if value is None:  # not set, or an item from before the option was declared
        return declared.default
    # DynamoDB numbers come back as Decimal.
    if declared.schema["type"] == "integer":
        return int(value)
    if declared.schema["type"] == "array" and declared.schema["items"]["type"] == "integer":
        return [int(each) for each in value]
    if "properties" in declared.schema:
        return {name: int(each) if declared.schema["properties"][name]["type"] == "integer"
                else each for name, each in value.items()}
    return value


def _run_to_item(run: Run) -> Dict[str, Any]:
    item = {
        "RunId": run.run_id, "Attempt": run.attempt, "StartedAt": iso_ms(run.started_at),
        "EndedAt": iso_ms(run.ended_at), "Outcome": run.outcome,
        "HttpStatus": run.http_status, "Error": run.error, "DurationMs": run.duration_ms,
        "Callback": run.callback,
    }
    return {key: value for key, value in item.items() if value is not None}


def _run_from_item(item: Dict[str, Any]) -> Run:
    def number(key):
        return int(item[key]) if key in item else None

    return Run(
        run_id=item["RunId"], attempt=int(item["Attempt"]),
        started_at=parse_iso(item["StartedAt"]), ended_at=parse_iso(item.get("EndedAt")),
        outcome=item.get("Outcome"), http_status=number("HttpStatus"),
        error=item.get("Error"), duration_ms=number("DurationMs"),
        callback=item.get("Callback"),
    )


def _serialize(values: Dict[str, Any]) -> Dict[str, Any]:
    return {key: serialize(value) for key, value in values.items()}


def _deserialize(item: Dict[str, Any]) -> Dict[str, Any]:
    return {key: deserialize(value) for key, value in item.items()}


def flow_table_definition(table_name: str) -> Dict[str, Any]:
    """create_table arguments for the flow table (bootstrap, tests)."""
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": "FlowKey", "KeyType": "HASH"},
                      {"AttributeName": "Entry", "KeyType": "RANGE"}],
        "AttributeDefinitions": [{"AttributeName": "FlowKey", "AttributeType": "S"},
                                 {"AttributeName": "Entry", "AttributeType": "S"}],
    }


def table_definition(table_name: str) -> Dict[str, Any]:
    """create_table arguments for the tasks table and its two indexes (bootstrap, tests)."""
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": "TaskID", "KeyType": "HASH"}],
        "AttributeDefinitions": [
            {"AttributeName": "TaskID", "AttributeType": "S"},
            {"AttributeName": "DueBucket", "AttributeType": "S"},
            {"AttributeName": "DueAt", "AttributeType": "S"},
            {"AttributeName": "Status", "AttributeType": "S"},
            {"AttributeName": "CreatedAt", "AttributeType": "S"},
            {"AttributeName": "Tenant", "AttributeType": "S"},
            {"AttributeName": "TenantStatus", "AttributeType": "S"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": config.DUE_INDEX,
                "KeySchema": [{"AttributeName": "DueBucket", "KeyType": "HASH"},
                              {"AttributeName": "DueAt", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": config.STATUS_INDEX,
                "KeySchema": [{"AttributeName": "Status", "KeyType": "HASH"},
                              {"AttributeName": "CreatedAt", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "ALL"},
            },
            *TENANT_INDEXES,
        ],
    }


# A tenant's listings: its tasks newest first, and those of one status.
TENANT_INDEXES = (
    {"IndexName": config.TENANT_INDEX,
     "KeySchema": [{"AttributeName": "Tenant", "KeyType": "HASH"},
                   {"AttributeName": "CreatedAt", "KeyType": "RANGE"}],
     "Projection": {"ProjectionType": "ALL"}},
    {"IndexName": config.TENANT_STATUS_INDEX,
     "KeySchema": [{"AttributeName": "TenantStatus", "KeyType": "HASH"},
                   {"AttributeName": "CreatedAt", "KeyType": "RANGE"}],
     "Projection": {"ProjectionType": "ALL"}},
)
