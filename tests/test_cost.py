"""bench/cost.py: the formula's arithmetic on known inputs (item sizes, request units, index
writes, billed duration, the cost of a million tasks); nothing here is timed or measured."""
import pytest

from bench import cost
from bench.prices import PRICES, Price

INDEX = {"IndexName": "StatusIndex", "Projection": {"ProjectionType": "ALL"},
         "KeySchema": [{"AttributeName": "Status", "KeyType": "HASH"},
                       {"AttributeName": "CreatedAt", "KeyType": "RANGE"}]}
KEYS = ["TaskID"]


def item(status=None, size=0, **more):
    """A task item: its id, a status if any, `size` bytes of payload."""
    found = {"TaskID": {"S": "t1"}, "CreatedAt": {"S": "2026"}, "Payload": {"S": "x" * size}}
    if status:
        found["Status"] = {"S": status}
    return {**found, **more}


def test_item_sizes_follow_the_developer_guide():
    assert cost.item_bytes({"TaskID": {"S": "abc"}}) == 6 + 3
    assert cost.item_bytes({"Name": {"S": "é"}}) == 4 + 2  # UTF-8 bytes
    # Numbers: 1 byte a 2 significant digits (leading and trailing zeros trimmed), and 1.
    assert cost.value_bytes({"N": "12345"}) == 3 + 1
    assert cost.value_bytes({"N": "-0.0500"}) == 1 + 1
    assert cost.value_bytes({"N": "100"}) == 1 + 1
    assert cost.value_bytes({"B": b"\x00\x01\x02"}) == 3
    assert cost.value_bytes({"BOOL": True}) == cost.value_bytes({"NULL": True}) == 1
    # A map or list: 3 bytes, 1 an element, and the elements (a map's with their names).
    assert cost.value_bytes({"M": {"a": {"S": "xy"}, "b": {"N": "1"}}}) == 3 + (1 + 1 + 2) + (
        1 + 1 + 2)
    assert cost.value_bytes({"L": [{"BOOL": False}, {"S": "abc"}]}) == 3 + 2 + 4
    assert cost.value_bytes({"SS": ["ab", "c"]}) == 3
    assert cost.item_bytes(None) == 0


def test_request_units_round_up_per_request():
    assert [cost.write_units(size) for size in (0, 1, 1024, 1025, 3000)] == [1, 1, 1, 2, 3]
    assert cost.read_units(4096, consistent=True) == 1
    assert cost.read_units(4097, consistent=True) == 2
    assert cost.read_units(4097, consistent=False) == 1.0
    assert cost.read_units(0, consistent=False) == 0.5


def test_index_writes_follow_the_developer_guide():
    write = cost.index_write_units
    assert write(None, item("scheduled"), INDEX, KEYS) == 1  # a new item into the index
    assert write(None, item(), INDEX, KEYS) == 0  # sparse: never in it
    assert write(item(), item(size=10), INDEX, KEYS) == 0
    assert write(item("scheduled"), item("running"), INDEX, KEYS) == 2  # key: delete + put
    assert write(item("running"), item(), INDEX, KEYS) == 1  # out of the index
    assert write(item("running"), item("running"), INDEX, KEYS) == 0  # entry unchanged
    assert write(item("running"), item("running", size=5), INDEX, KEYS) == 1  # in place
    # Each write is rounded up to a KB on its own: a 1.5 KB entry moved is 2 + 2.
    assert write(item("a", size=1500), item("b", size=1500), INDEX, KEYS) == 4
    assert write(item("running", size=1500), None, INDEX, KEYS) == 2  # deleted
    # KEYS_ONLY: a change of an attribute it does not hold costs it nothing.
    keys_only = {**INDEX, "Projection": {"ProjectionType": "KEYS_ONLY"}}
    assert write(item("running"), item("running", size=5), keys_only, KEYS) == 0
    include = {**INDEX, "Projection": {"ProjectionType": "INCLUDE",
                                       "NonKeyAttributes": ["Payload"]}}
    assert write(item("running"), item("running", size=5), include, KEYS) == 1


def test_stored_bytes_add_100_per_copy():
    stored = cost.stored_bytes(item("completed"), [INDEX, {**INDEX, "IndexName": "DueIndex",
                                                           "KeySchema": [{
                                                               "AttributeName": "DueAt",
                                                               "KeyType": "HASH"}]}], KEYS)
    size = cost.item_bytes(item("completed"))
    assert stored == {"table": size + 100, "StatusIndex": size + 100}


def test_billed_duration_slows_cpu_to_the_memory_share_and_adds_the_waits():
    assumed = {"call_ms": {"dynamodb": 6, "scheduler": 30, "other": 20}}
    function = {"memory_mb": 256, "cpu_ms": 2.0, "calls": {"dynamodb": 1, "scheduler": 1}}
    # 2 ms x 1769 / 256 = 13.82, + 6 + 30 = 49.82: billed 50 ms.
    assert cost.billed_ms(function, assumed) == 50
    assert cost.billed_ms({**function, "calls": {"ssm": 2}, "receiver_ms": 100},
                          assumed) == 14 + 40 + 100
    # A vCPU or more: CPU time as measured.
    assert cost.billed_ms({**function, "memory_mb": 2048, "calls": {}}, assumed) == 2
    assert cost.cpu_scale(128) == pytest.approx(13.8203, abs=1e-4)


def test_the_authorizer_runs_once_per_token_per_ttl():
    # 30 days / 300 s = 8,640 invocations for a million tasks.
    assert cost.authorizer_share(300, tokens=1) == pytest.approx(0.00864)
    assert cost.authorizer_share(300, tokens=10) == pytest.approx(0.0864)
    assert cost.authorizer_share(0, tokens=1) == 1.0  # no cache: every request
    assert cost.authorizer_share(300, tokens=10**6) == 1.0
    assert cost.authorizer_share(None, tokens=1) == 0.0  # IAM auth: no authorizer function


def known_inputs() -> dict:
    function = {"invocations": 1.0, "cpu_ms": 0.0, "calls": {}, "log_bytes": 0,
                "log_lines": 0}
    return {
        "tasks_measured": 3, "init_ms": 500, "init_source": "given",
        "retention_days": 73, "authorizer_ttl_s": None,
        "assumed": {"call_ms": {"dynamodb": 250, "other": 20}, "receiver_ms": 1000,
                    "cold_start_share": 0.01, "platform_log_bytes": 260,
                    "platform_log_lines": 3, "log_event_overhead": 26, "tokens": 1},
        "functions": {
            "token_auth": {**function, "invocations": 0.0, "memory_mb": 128},
            # 2 calls x 250 ms = 0.5 s at 0.5 GB: 0.25 GB-s.
            "api_handler": {**function, "memory_mb": 512, "calls": {"dynamodb": 2},
                            "log_bytes": 1000, "log_lines": 2},
            # 1 s at 1 GB: 1 GB-s.
            "execute_task": {**function, "memory_mb": 1024, "receiver_ms": 1000,
                             "log_bytes": 2000, "log_lines": 4},
        },
        "dynamodb": {"table_write_units": 3, "index_write_units": 5, "read_units": 2,
                     "writes": ["POST: PutItem 1 + 2 in indexes"], "unmetered": {},
                     "indexes": ["StatusIndex", "DueIndex"],
                     "stored_bytes": {"table": 1000, "StatusIndex": 3000}},
    }


def test_a_million_tasks_on_known_inputs():
    result = cost.cost(known_inputs(), PRICES)
    dollars = {row["part"]: row["dollars"] for row in result["rows"]}
    gb_s = 0.0000166667 * 1e6
    assert dollars["API Gateway REST requests"] == pytest.approx(3.50)
    assert dollars["Lambda requests"] == pytest.approx(0.40)  # 2 invocations
    assert dollars["Lambda duration: authorizer, 128 MB"] == 0
    assert dollars["Lambda duration: API (POST /schedule-task), 512 MB"] == pytest.approx(
        0.25 * gb_s)
    assert dollars["Lambda duration: executor, 1024 MB"] == pytest.approx(gb_s)
    # 1% x 0.5 s x (0.5 GB + 1 GB).
    assert dollars["Lambda INIT (cold starts)"] == pytest.approx(0.0075 * gb_s)
    assert dollars["DynamoDB writes"] == pytest.approx(8 * 0.625)
    assert dollars["DynamoDB reads"] == pytest.approx(2 * 0.125)
    # 4,000 B for 73 / (365 / 12) = 2.4 months, a million times: 8.9407 GB-months.
    assert dollars["DynamoDB storage, 73 days"] == pytest.approx(
        4000 * 2.4 * 1e6 / 2**30 * 0.25)
    assert dollars["DynamoDB point-in-time recovery"] == pytest.approx(
        1000 * 2.4 * 1e6 / 2**30 * 0.20)
    assert dollars["EventBridge Scheduler"] == pytest.approx(1.00)
    # (1000 + 2 x 26 + 338) + (2000 + 4 x 26 + 338) = 3,832 B a task, 338 being the
    # platform's 260 B in 3 lines.
    assert dollars["CloudWatch Logs"] == pytest.approx(3832 * 1e6 / 2**30 * 0.50)
    assert result["total"] == pytest.approx(sum(dollars.values()))
    assert result["total"] == pytest.approx(35.5750, abs=1e-3)
    assert [anchor["dollars"] for anchor in result["anchors"]] == pytest.approx(
        [1.00, 2.20, 10.00])
    assert result["receiver_per_100ms"] == pytest.approx(0.1 * gb_s)


def test_prices_are_dated_and_apply_per_unit():
    from bench import prices

    assert prices.AS_OF and prices.REGION == "us-east-1"
    assert Price(3.50, 1e6, "requests").each == pytest.approx(3.5e-6)
    assert str(Price(3.50, 1e6, "requests")) == "$3.50 per 1M requests"
    assert str(Price(0.0000166667, 1, "GB-s")) == "$0.0000166667 per GB-s"
    assert str(Price(1, 1e5, "messages")) == "$1.00 per 100K messages"


def test_the_tables_give_each_figure_against_the_anchors():
    result = {"as_of": "2026-11-27", "region": "us-east-1", "inputs": known_inputs(),
              **cost.cost(known_inputs(), PRICES)}
    text = cost.table(result)
    assert "| **total** |  |  | **$35.57** | **35.57** |  |" in text
    assert "| QStash pay-as-you-go (one message a task) | $10.00 | 3.56 |" in text
    assert len(cost.behind(result)) == 3  # every anchor costs less than these inputs
    assert ("DynamoDB writes ($5.00: 5 of a task's 8 write units are its copies in the "
            "table's 2 indexes") in cost.why(result)
    assert cost.money(0.0041) == "$0.0041" and cost.money(1234.5) == "$1,234.50"


def test_memory_sizes_are_the_stage_config():
    assert cost.memory_sizes("dev") == {"token_auth": 128, "api_handler": 256,
                                        "execute_task": 256}


@pytest.mark.integration  # moto and a receiver process, through bench/cost.py
def test_a_one_time_webhook_task_writes_18_units_and_reads_none(monkeypatch):
    import os

    monkeypatch.setattr(os, "environ", dict(os.environ))  # the benchmark sets its own
    result = cost.measure(tasks=2, init_ms=1, warmup=1)
    functions, dynamo = result["inputs"]["functions"], result["inputs"]["dynamodb"]
    assert functions["api_handler"]["calls"] == {"dynamodb": 1, "scheduler": 1}
    assert functions["execute_task"]["calls"] == {"dynamodb": 2}
    assert functions["token_auth"]["calls"] == {}
    # PutItem, the claim, the result: 1 unit each in the table, and in each of the four
    # indexes the item enters, leaves or moves in (a moved key is a delete and a put).
    assert dynamo["writes"] == ["POST: PutItem 1 + 4 in indexes",
                                "run: UpdateItem 1 + 6 in indexes",
                                "run: PutItem 1 + 5 in indexes"]
    assert dynamo["read_units"] == 0 and dynamo["unmetered"] == {}
    # Finished, it stays in the table and three indexes (not the due index).
    assert sorted(dynamo["stored_bytes"]) == ["StatusIndex", "TenantIndex",
                                              "TenantStatusIndex", "table"]
    assert result["inputs"]["authorizer_ttl_s"] == 300
    assert functions["execute_task"]["log_bytes"] > 0
