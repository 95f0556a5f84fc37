"""bench/report.py's targets: each figure against its anchor, and whether it is met (the
arithmetic on given results; the timings themselves come from `make bench` only)."""
import pytest

from bench import footprint, report


def results(ours_rate=700.0, aps_rate=800.0, ours_sparse_p99=8.0, cold=130.0, lost=0,
            other_key=0, duplicates=10):
    burst = {"ours": {"throughput_per_s": ours_rate, "p99_ms": 1500.0},
             "apscheduler": {"throughput_per_s": aps_rate, "p99_ms": 1200.0}}
    sparse = {"ours": {"p99_ms": ours_sparse_p99}, "apscheduler": {"p99_ms": 6.0}}
    return {"dispatch": {"burst": burst, "sparse": sparse},
            "footprint": {"import_ms_median": cold, "bytecode": {
                footprint.SDK_IMPORT: {"median": 100.0}, **{
                    function: {"median": cold + 50 * n}
                    for n, function in enumerate(footprint.FUNCTIONS)}}},
            "restart": {"tasks": 10000, "restarts": [{}, {}], "workers": 16, "signal": "KILL",
                        "lost": lost, "early": 0, "duplicates": duplicates,
                        "duplicates_with_another_key": other_key}}


def met(rows):
    return {row[0].split(" (")[0]: row[5] for row in rows}


def test_every_target_is_judged_against_its_anchor():
    rows = report.targets(results())
    assert [row[3] for row in rows[:4]] == ["0.88x", "1.25x", "+2.0 ms", "1.08x"]
    slowest = list(footprint.FUNCTIONS)[-1]
    assert met(rows) == {"burst throughput": False, "burst lateness p99": False,
                         "sparse lateness p99": True, "Lambda cold start": False,
                         "Lambda cold start, slowest function's imports to its first AWS "
                         "call": None, "10,000 tasks, 2 kill -9 restarts": True}
    slowest_ms = 130 + 50 * (len(footprint.FUNCTIONS) - 1)
    assert slowest in rows[4][0] and rows[4][1] == f"{slowest_ms} ms"
    # Shown against the SDK's own import, which no package of ours makes cheaper.
    assert rows[4][2:5] == ["botocore's import alone 100 ms", f"{slowest_ms - 100:+.0f} ms",
                            "reported"]
    assert "| reported |  |" in report.targets_table(results())


@pytest.mark.parametrize("change, target", [
    ({"ours_rate": 800.0}, "burst throughput"),
    ({"cold": 119.0}, "Lambda cold start"),
])
def test_a_target_is_met_at_its_bound(change, target):
    assert met(report.targets(results(**change)))[target] is True


@pytest.mark.parametrize("change", [{"lost": 1}, {"other_key": 1}, {"duplicates": 65}])
def test_a_restart_that_loses_or_duplicates_beyond_the_runs_in_flight_fails(change):
    assert met(report.targets(results(**change)))["10,000 tasks, 2 kill -9 restarts"] is False


def test_the_table_says_no_plainly():
    assert "| **no** |" in report.targets_table(results())
