"""Finding due work as the store grows: the sweeper's due query against a full-table Scan
(the older daily design), on moto's DynamoDB and on SQLite, in the same run.

Each table holds N tasks of which 20 are due; of the rest, half wait for a future time and
half have finished (as a store that has run for a while looks). For each size and store the
two queries run alternately, several rounds, and the medians are reported.

- DynamoDB: items examined = the sum of `ScannedCount` over every page (what DynamoDB bills
  read capacity on), read with a botocore `after-call` hook. Wall time is moto's, which keeps
  items in a Python dict and filters them all even for an index Query, so on moto the time of
  both grows with the table; the examined count is what a real table would read.
- SQLite: the due query is the adapter's own (partial index per priority); the Scan is the
  same filter with `NOT INDEXED`. Work = SQLite virtual machine steps, counted with a progress
  handler (in a run of its own), next to the statements run, the wall time and the plan.

    python bench/due_query.py [--sizes 1000,10000,100000] [--rounds 3]
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import markdown_table, use_moto_stage  # noqa: E402

DUE = 20
MOTO_ROUNDS_UP_TO = 10000
VM_STEPS_PER_TICK = 100


def make_tasks(total: int, now, due: int = DUE):
    """`due` tasks due at `now`, the rest half waiting for later and half finished."""
    from chalicelib.models import COMPLETED, SCHEDULED, Task

    tasks = []
    for number in range(total):
        if number < due:
            status, next_run_at = SCHEDULED, now - timedelta(minutes=1 + number)
        elif number % 2:
            status, next_run_at = SCHEDULED, now + timedelta(hours=1 + number)
        else:
            status, next_run_at = COMPLETED, None
        tasks.append(Task(task_id=str(uuid.uuid4()), action="webhook",
                          payload={"url": "https://example.com/hook", "data": {"n": number}},
                          run_at="2030-01-01T00:00:00Z", schedule_kind="once",
                          next_run_at=next_run_at, status=status, priority=number % 10,
                          created_at=now - timedelta(days=1), updated_at=now))
    return tasks


# ---------------------------------------------------------------- DynamoDB (moto)

def measure_dynamodb(total: int, rounds: int) -> list:
    """Our due query against a Scan on a moto table of `total` tasks."""
    import boto3
    from boto3.dynamodb.types import TypeSerializer
    from moto import mock_aws

    from chalicelib import aws, config
    from chalicelib.models import WAITING, iso_ms, utcnow
    from chalicelib.store.dynamodb import DynamoDBTaskStore, table_definition, to_item

    use_moto_stage()
    with mock_aws():
        table = config.tasks_table()
        client = boto3.client("dynamodb")
        client.create_table(**table_definition(table))
        now = utcnow()
        serializer = TypeSerializer()
        tasks = make_tasks(total, now)
        for start in range(0, total, 25):
            client.batch_write_item(RequestItems={table: [
                {"PutRequest": {"Item": {key: serializer.serialize(value)
                                         for key, value in to_item(task).items()}}}
                for task in tasks[start:start + 25]]})

        examined = {"items": 0, "calls": 0}

        def note_page(parsed, **_):
            examined["items"] += parsed.get("ScannedCount", 0)
            examined["calls"] += 1

        ours_client = aws.client("dynamodb")
        ours_client.meta.events.register("after-call.dynamodb.Query", note_page)
        client.meta.events.register("after-call.dynamodb.Scan", note_page)
        store = DynamoDBTaskStore(table)

        def ours():
            examined.update(items=0, calls=0)
            found = len(list(store.due(now, config.sweep_batch_size())))
            return found, dict(examined)

        def older_scan():
            # The older design: read the whole table, keep what is pending and past due.
            examined.update(items=0, calls=0)
            found, kwargs = [], {}
            while True:
                page = client.scan(
                    TableName=table, FilterExpression="#s IN (:a, :b) AND NextRunAt <= :now",
                    ExpressionAttributeNames={"#s": "Status"},
                    ExpressionAttributeValues={":a": {"S": WAITING[0]}, ":b": {"S": WAITING[1]},
                                               ":now": {"S": iso_ms(now)}}, **kwargs)
                found += page["Items"]
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            found.sort(key=lambda item: -int(item["Priority"]["N"]))
            return len(found), dict(examined)

        # moto's Scan sorts the whole table for every 1 MB page (minutes at 100k items),
        # so large tables get one round; the hook's counts of the last timed run are kept.
        results = _alternate("dynamodb (moto)", total, rounds if total <= MOTO_ROUNDS_UP_TO
                             else 1, ours, older_scan, examine=None)
        return results


# ---------------------------------------------------------------- SQLite

def measure_sqlite(total: int, rounds: int) -> list:
    """Our due query against a full scan on an SQLite file of `total` tasks."""
    from chalicelib import config
    from chalicelib.models import WAITING, iso_ms, utcnow
    from chalicelib.store.sqlite import SQLiteTaskStore, to_row

    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteTaskStore(Path(folder) / "tasks.sqlite3")
        now = utcnow()
        rows = [to_row(task) for task in make_tasks(total, now)]
        columns = ", ".join(rows[0])
        db = store._raw()
        with db:
            db.execute("BEGIN")
            db.executemany(f"INSERT INTO tasks ({columns}) VALUES "
                           f"({', '.join('?' for _ in rows[0])})",
                           [list(row.values()) for row in rows])
        db.execute("ANALYZE")
        ticks, statements = [0], [0]

        def tick():
            ticks[0] += 1
            return 0

        def note_statement(sql):
            statements[0] += sql.lstrip().upper().startswith("SELECT")

        def examine(query):
            # Counted in a run of its own: the handler slows the query it counts.
            ticks[0] = statements[0] = 0
            db.set_progress_handler(tick, VM_STEPS_PER_TICK)
            db.set_trace_callback(note_statement)
            try:
                query()
            finally:
                db.set_progress_handler(None, 0)
                db.set_trace_callback(None)
            return {"items": ticks[0] * VM_STEPS_PER_TICK, "calls": statements[0]}

        scan_sql = ("SELECT * FROM tasks NOT INDEXED WHERE status IN (?, ?) AND "
                    "next_run_at <= ? ORDER BY priority DESC, next_run_at")
        scan_args = (WAITING[0], WAITING[1], iso_ms(now))

        def ours():
            return len(list(store.due(now, config.sweep_batch_size())))

        def older_scan():
            return len(db.execute(scan_sql, scan_args).fetchall())

        plan = {"ours": " / ".join(sorted(set(store.explain_due(now)))),
                "scan": " / ".join(row[3] for row in db.execute(
                    "EXPLAIN QUERY PLAN " + scan_sql, scan_args))}
        results = _alternate("sqlite", total, rounds, ours, older_scan, examine)
        for result in results:
            result["plan"] = plan[result["query"]]
            result["examined_unit"] = "VM steps"
        return results


def _alternate(store: str, total: int, rounds: int, ours, older_scan, examine) -> list:
    """Both queries, one round of each in turn; medians of the wall times, and what each
    examined: `examine(query)`, or when None, what the queries return with their count."""
    queries = {"ours": ours, "scan": older_scan}
    times = {"ours": [], "scan": []}
    found = {}
    for _ in range(rounds):
        for name, query in queries.items():
            started = time.perf_counter()
            found[name] = query()
            times[name].append((time.perf_counter() - started) * 1000)
    results = []
    for name, query in queries.items():
        if examine is None:
            found[name], examined = found[name]
        else:
            examined = examine(query)
        results.append({"store": store, "tasks": total, "query": name, "found": found[name],
                        "examined": examined["items"], "requests": examined["calls"],
                        "examined_unit": "items", "rounds": rounds, "ms_median": round(
                            statistics.median(times[name]), 2)})
    return results


def measure(sizes=(1000, 10000, 100000), rounds: int = 3) -> list:
    """Every size on both stores."""
    results = []
    for total in sizes:
        results += measure_dynamodb(total, rounds)
        results += measure_sqlite(total, rounds)
    return results


def table(results: list) -> str:
    """A Markdown table of the results."""
    return markdown_table(
        ["store", "tasks stored", "query", "due found", "examined", "requests",
         "median ms (rounds)"],
        [[r["store"], f"{r['tasks']:,}",
          "ours (due index)" if r["query"] == "ours" else "full scan (older design)",
          r["found"], f"{r['examined']:,} {r['examined_unit']}", r["requests"],
          f"{r['ms_median']} ({r['rounds']})"] for r in results])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    out = measure(tuple(int(size) for size in args.sizes.split(",")), args.rounds)
    print(table(out))
    print(json.dumps(out))
