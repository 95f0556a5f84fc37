"""Tenants: tokens mapped to tenants, every route answering 404 for another tenant's task,
listings per tenant (an admin sees all), on the in-memory API and on moto; tasks from
before tenants stay the default tenant's."""
import pytest

from chalicelib import auth
from tests.conftest import Api

TOKENS = "alpha=alpha-token-0123,beta=beta-token-01234,default-token-012,*=admin-token-012"


@pytest.mark.parametrize("entries, expected", [
    (["alpha=token-one", "token-two", "*=token-three"],
     {"token-one": "alpha", "token-two": "default", "token-three": "*"}),
    ([" team.one = token-one "], {"token-one": "team.one"}),
    # Not a tenant's name before `=`: the whole entry is a bare token.
    (["bad name=token-one", "a/b=token-two"],
     {"bad name=token-one": "default", "a/b=token-two": "default"}),
])
def test_tokens_name_their_tenants(entries, expected):
    assert auth.tenants_by_token(entries) == expected


@pytest.mark.parametrize("header, tenant", [
    ("Bearer alpha-token-0123", "alpha"), ("Bearer default-token-012", "default"),
    ("Bearer admin-token-012", "*"), ("Bearer nope", None), (None, None),
])
def test_a_header_names_its_tokens_tenant(monkeypatch, header, tenant):
    monkeypatch.setenv("API_TOKENS", TOKENS)
    assert auth.tenant_of(header) == tenant


def _as(client, token):
    return Api(client, {"Authorization": f"Bearer {token}",
                        "Content-Type": "application/json"})


@pytest.fixture(params=["memory", "moto"])
def apis(request, monkeypatch):
    """(alpha, beta, default, admin) clients of one API (in memory, or over moto)."""
    client = request.getfixturevalue("memory_client" if request.param == "memory"
                                     else "client")
    monkeypatch.setenv("API_TOKENS", TOKENS)
    return tuple(_as(client, token) for token in (
        "alpha-token-0123", "beta-token-01234", "default-token-012", "admin-token-012"))


def _task(name, **extra):
    return {"action": "log", "payload": {"message": name}, "run_at": "cron(0 9 * * ? *)",
            "name": name, "tags": {"team": "x"}, **extra}


def test_every_route_answers_404_for_another_tenants_task(apis):
    alpha, beta, _, admin = apis
    created = alpha.post("/schedule-task", _task("alpha's"))
    assert created.status_code == 201
    task_id = created.json["task_id"]
    assert alpha.get(f"/tasks/{task_id}").json["tenant"] == "alpha"
    for method, path, body in (
            ("GET", f"/tasks/{task_id}", None), ("PATCH", f"/tasks/{task_id}", {"name": "x"}),
            ("POST", f"/tasks/{task_id}/pause", None), ("POST", f"/tasks/{task_id}/resume", None),
            ("POST", f"/tasks/{task_id}/run", None), ("POST", f"/tasks/{task_id}/retry", None),
            ("DELETE", f"/tasks/{task_id}", None)):
        answer = beta.request(method, path, body)
        assert answer.status_code == 404, (method, path, answer.json)
        assert answer.json["code"] == "task_not_found"
    shown = alpha.get(f"/tasks/{task_id}").json
    assert (shown["status"], shown["name"], shown["version"]) == ("scheduled", "alpha's", 1)
    assert admin.patch(f"/tasks/{task_id}", {"name": "by admin"}).status_code == 200
    assert alpha.delete(f"/tasks/{task_id}").status_code == 200


def test_listings_and_searches_see_only_the_callers_tenant(apis):
    alpha, beta, default, admin = apis
    ids = {who: [api.post("/schedule-task", _task(f"{who}-{n}")).json["task_id"]
                 for n in range(3)]
           for who, api in (("alpha", alpha), ("beta", beta), ("default", default))}

    def listed(api, query=""):
        found, token = [], None
        while True:
            page = api.get(f"/tasks?limit=2{query}" + (f"&next_token={token}" if token else ""))
            assert page.status_code == 200, page.json
            found += [task["task_id"] for task in page.json["tasks"]]
            token = page.json["next_token"]
            if not token:
                return found

    assert sorted(listed(alpha)) == sorted(ids["alpha"])
    assert sorted(listed(beta, "&status=scheduled")) == sorted(ids["beta"])
    assert sorted(listed(beta, "&name=beta-1")) == [ids["beta"][1]]
    assert listed(beta, "&name=alpha") == []
    assert sorted(listed(default, "&tag=team:x")) == sorted(ids["default"])
    assert sorted(listed(admin)) == sorted(sum(ids.values(), []))
    assert sorted(listed(admin, "&tenant=alpha&status=scheduled")) == sorted(ids["alpha"])
    refused = beta.get("/tasks?tenant=alpha")
    assert refused.status_code == 400 and refused.json["field"] == "tenant"
    # A page token of one tenant's listing is not another's.
    token = alpha.get("/tasks?limit=1").json["next_token"]
    assert beta.get(f"/tasks?limit=1&next_token={token}").status_code == 400


def test_idempotency_keys_and_flow_keys_are_each_tenants_own(apis):
    alpha, beta, _, _ = apis
    body = _task("same", flow_control={"key": "billing", "parallelism": 1})
    first = alpha.post("/schedule-task", body, headers={"Idempotency-Key": "k1"})
    second = beta.post("/schedule-task", {**body, "flow_control": {
        "key": "billing", "parallelism": 5}}, headers={"Idempotency-Key": "k1"})
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json["task_id"] != second.json["task_id"]
    assert alpha.get("/flow-control/billing").json["parallelism"] == 1
    assert beta.get("/flow-control/billing").json["parallelism"] == 5


def test_a_tenant_over_its_quota_is_refused_429_and_nothing_is_stored(apis, monkeypatch):
    alpha, beta, _, admin = apis
    monkeypatch.setenv("TENANT_MAX_WAITING", "2")
    first, second = (alpha.post("/schedule-task", _task(f"q{n}")).json["task_id"]
                     for n in range(2))
    refused = alpha.post("/schedule-task", _task("one too many"))
    assert refused.status_code == 429
    assert refused.json == {"code": "quota_exceeded", "field": "tenant",
                            "message": refused.json["message"]}
    assert "alpha" in refused.json["message"]
    assert len(alpha.get("/tasks").json["tasks"]) == 2  # nothing stored
    assert beta.post("/schedule-task", _task("beta's own")).status_code == 201
    assert alpha.delete(f"/tasks/{first}").status_code == 200  # a cancel gives one back
    assert alpha.post("/schedule-task", _task("room again")).status_code == 201
    assert alpha.post("/schedule-task", _task("full again")).status_code == 429
    assert admin.delete(f"/tasks/{second}").status_code == 200
    assert alpha.post("/schedule-task", _task("room again")).status_code == 201


def test_a_finished_run_gives_its_quota_back(memory_api, memory, monkeypatch):
    from datetime import timedelta

    from chalicelib import wiring
    from chalicelib.executor import execute_task
    from chalicelib.models import Clock, utcnow

    monkeypatch.setenv("TENANT_MAX_WAITING", "1")
    soon = (utcnow() + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"action": "log", "payload": {"message": "once"}, "run_at": soon}
    task_id = memory_api.post("/schedule-task", body).json["task_id"]
    assert memory_api.post("/schedule-task", body).status_code == 429
    later = Clock(now=lambda: utcnow() + timedelta(minutes=2), sleep=lambda seconds: None)
    with wiring.overridden(clock=later):
        assert execute_task(wiring.runtime(), task_id).status == "completed"
    assert memory.store.waiting_count("default") == 0
    assert memory_api.post("/schedule-task", body).status_code == 201


def test_a_replay_counts_against_the_quota_and_is_refused_at_the_limit(memory_api, memory,
                                                                       monkeypatch):
    from datetime import timedelta

    from chalicelib import wiring
    from chalicelib.executor import execute_task
    from chalicelib.models import Clock, utcnow

    monkeypatch.setenv("TENANT_MAX_WAITING", "1")
    soon = (utcnow() + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    failing = {"action": "webhook", "payload": {"url": "http://127.0.0.1:9/refused"},
               "run_at": soon, "max_attempts": 1}
    task_id = memory_api.post("/schedule-task", failing).json["task_id"]
    later = Clock(now=lambda: utcnow() + timedelta(minutes=2), sleep=lambda seconds: None)
    with wiring.overridden(clock=later):
        assert execute_task(wiring.runtime(), task_id).status == "failed"
    other = memory_api.post("/schedule-task", {**failing, "run_at": "cron(0 9 * * ? *)"})
    refused = memory_api.post(f"/tasks/{task_id}/retry", {})
    assert refused.status_code == 429 and refused.json["code"] == "quota_exceeded"
    assert memory_api.get(f"/tasks/{task_id}").json["status"] == "failed"
    assert memory.store.waiting_count("default") == 1
    assert memory_api.delete(f"/tasks/{other.json['task_id']}").status_code == 200
    assert memory_api.post(f"/tasks/{task_id}/retry", {}).json["status"] == "scheduled"
    assert memory.store.waiting_count("default") == 1
    assert memory_api.post("/schedule-task", failing).status_code == 429


def test_bulk_changes_stay_in_the_callers_tenant_and_continue_by_token(apis, monkeypatch):
    from chalicelib import bulk

    alpha, beta, _, admin = apis
    mine = [alpha.post("/schedule-task", _task(f"a{n}")).json["task_id"] for n in range(3)]
    theirs = [beta.post("/schedule-task", _task(f"b{n}")).json["task_id"] for n in range(2)]
    done = beta.post("/tasks/bulk", {"operation": "cancel", "filter": {"tag": "team:x"}})
    assert done.status_code == 200
    assert done.json == {"matched": 2, "changed": 2, "skipped": 0, "next_token": None}
    assert all(beta.get(f"/tasks/{t}").json["status"] == "cancelled" for t in theirs)
    assert all(alpha.get(f"/tasks/{t}").json["status"] == "scheduled" for t in mine)
    monkeypatch.setattr(bulk, "MAX_PER_REQUEST", 2)
    first = alpha.post("/tasks/bulk", {"operation": "pause", "filter": {"name": "a"}})
    assert (first.json["matched"], first.json["changed"]) == (2, 2)
    assert first.json["next_token"]
    rest = alpha.post("/tasks/bulk", {"operation": "pause", "filter": {"name": "a"},
                                      "next_token": first.json["next_token"]})
    assert rest.json == {"matched": 1, "changed": 1, "skipped": 0, "next_token": None}
    again = alpha.post("/tasks/bulk", {"operation": "pause", "filter": {"status": "paused"}})
    assert (again.json["matched"], again.json["changed"], again.json["skipped"]) == (2, 0, 2)
    monkeypatch.setattr(bulk, "MAX_PER_REQUEST", 100)
    resumed = admin.post("/tasks/bulk", {"operation": "resume",
                                         "filter": {"status": "paused"}})
    assert (resumed.json["matched"], resumed.json["changed"]) == (3, 3)


@pytest.mark.parametrize("body, field", [
    ({"operation": "cancel"}, "filter"), ({"operation": "cancel", "filter": {}}, "filter"),
    ({"operation": "cancel", "filter": {"owner": "x"}}, "filter"),
    ({"operation": "cancel", "filter": {"name": ""}}, "filter"),
    ({"operation": "delete", "filter": {"name": "x"}}, "operation"),
    ({"operation": "pause", "filter": {"status": "nope"}}, "status"),
    ({"operation": "pause", "filter": {"tag": "nocolon"}}, "tag"),
    ({"operation": "pause", "filter": {"name": "x"}, "next_token": "forged"}, "next_token"),
    ({"operation": "pause", "filter": {"name": "x"}, "extra": 1}, "extra"),
])
def test_a_bulk_change_without_a_valid_filter_is_refused(apis, body, field):
    alpha = apis[0]
    alpha.post("/schedule-task", _task("untouched"))
    refused = alpha.post("/tasks/bulk", body)
    assert refused.status_code == 400 and refused.json["field"] == field, refused.json
    assert alpha.get("/tasks").json["tasks"][0]["status"] == "scheduled"


ROLE_SESSION = "arn:aws:sts::123456789012:assumed-role/{}/{}"
IAM_TENANTS = ("billing=arn:aws:iam::123456789012:role/teams/billing-app,"
               "*=arn:aws:iam::123456789012:role/ops, default=arn:aws:iam::123456789012:user/ci")


@pytest.mark.parametrize("user_arn, tenant", [
    # Every session of a role is the role: its tasks stay its own across sessions.
    (ROLE_SESSION.format("reports", "i-0abc"), "arn:aws:iam::123456789012:role/reports"),
    (ROLE_SESSION.format("reports", "lambda-7"), "arn:aws:iam::123456789012:role/reports"),
    ("arn:aws:iam::123456789012:user/alice", "arn:aws:iam::123456789012:user/alice"),
    ("arn:aws:iam::123456789012:root", "arn:aws:iam::123456789012:root"),
    # IAM_TENANTS names them (a role's path as IAM prints it, which sessions lack).
    (ROLE_SESSION.format("billing-app", "s1"), "billing"),
    (ROLE_SESSION.format("ops", "s1"), "*"),
    ("arn:aws:iam::123456789012:user/ci", "default"),
    ("arn:aws-cn:sts::123456789012:assumed-role/ops/s1", "arn:aws-cn:iam::123456789012:role/ops"),
])
def test_an_iam_caller_is_its_principal_or_the_tenant_named_for_it(monkeypatch, user_arn,
                                                                     tenant):
    monkeypatch.setenv("IAM_TENANTS", IAM_TENANTS)
    assert auth.iam_tenant({"userArn": user_arn}) == tenant


def test_an_iam_name_with_commas_stays_whole(monkeypatch):
    monkeypatch.setenv("IAM_TENANTS", "billing=arn:aws:iam::123456789012:role/app,ops=x, "
                                      "*=arn:aws:iam::123456789012:user/a,b")
    assert auth.iam_tenant({"userArn": ROLE_SESSION.format("app,ops=x", "s")}) == "billing"
    assert auth.iam_tenant({"userArn": "arn:aws:iam::123456789012:user/a,b"}) == "*"


@pytest.mark.parametrize("entry", ["arn:aws:iam::123456789012:role/x", "bad name=arn:x",
                                   "billing=", "billing=AIDAEXAMPLE",
                                   "a=arn:aws:iam::123456789012:user/x,"
                                   "b=arn:aws:iam::123456789012:user/x"])
def test_an_iam_tenants_entry_must_name_a_tenant_and_a_principal(monkeypatch, entry):
    monkeypatch.setenv("IAM_TENANTS", entry)
    with pytest.raises(ValueError, match="IAM_TENANTS"):
        auth.iam_tenant({"userArn": "arn:aws:iam::123456789012:user/alice"})


@pytest.mark.parametrize("mode, context, caller", [
    ("iam", {"identity": {"userArn": "arn:aws:iam::123456789012:user/alice"}},
     "arn:aws:iam::123456789012:user/alice"),
    ("iam", {"identity": {"userArn": ROLE_SESSION.format("ops", "me")}},
     "arn:aws:iam::123456789012:role/ops"),
    ("iam", {"identity": {"caller": "AIDAEXAMPLE"}}, "AIDAEXAMPLE"),
    ("token", {"authorizer": {"principalId": "alpha"}}, "alpha"),
    ("token", {"authorizer": {"principalId": "*"}}, "*"),
])
def test_the_caller_is_the_tokens_tenant_or_the_iam_principal(memory, monkeypatch, mode,
                                                              context, caller):
    from types import SimpleNamespace

    from app import app
    from chalicelib import routes

    monkeypatch.setenv("AUTH_MODE", mode)
    monkeypatch.setattr(app, "current_request", SimpleNamespace(context=context),
                        raising=False)
    assert routes._runtime().caller == caller


@pytest.mark.parametrize("operation", [{}, [], 3, None])
def test_a_bulk_operation_that_is_not_a_name_is_a_400(apis, operation):
    refused = apis[0].post("/tasks/bulk", {"operation": operation, "filter": {"name": "x"}})
    assert refused.status_code == 400 and refused.json["field"] == "operation"


@pytest.mark.parametrize("entry, expected", [
    ("q3Jk9XvLmN2pR7sT1uWy0A==", {"q3Jk9XvLmN2pR7sT1uWy0A==": "default"}),  # base64
    ("abcdefgh=", {"abcdefgh=": "default"}),
    ("alpha=short", {"alpha=short": "default"}),  # too short to be a token after a name
])
def test_a_bare_token_with_equals_signs_stays_a_bare_token(entry, expected):
    assert auth.tenants_by_token([entry]) == expected


def test_no_tenant_can_name_another_tenants_flow_key(apis):
    alpha, _, default, _ = apis
    alpha.post("/schedule-task", _task("a", flow_control={"key": "billing", "parallelism": 5}))
    mimic = default.post("/schedule-task", _task("d", flow_control={
        "key": "alpha\x1fbilling", "parallelism": 1}))
    assert mimic.status_code == 400 and mimic.json["field"] == "flow_control"
    default.post("/schedule-task", _task("d", flow_control={"key": "alpha/billing",
                                                            "parallelism": 1}))
    assert alpha.get("/flow-control/billing").json["parallelism"] == 5


def test_a_tenants_running_tasks_are_listed_as_running(apis):
    from chalicelib import wiring

    alpha = apis[0]
    task_id = alpha.post("/schedule-task", _task("runs")).json["task_id"]
    store = wiring.runtime().store
    store.claim(task_id, "run-1", store.get(task_id).next_run_at)
    assert [t["task_id"] for t in alpha.get("/tasks?status=running").json["tasks"]] == [
        task_id]
    assert alpha.get("/tasks?status=scheduled").json["tasks"] == []


def test_a_bulk_request_reads_a_bounded_number_of_pages_and_says_where_to_go_on(
        apis, monkeypatch):
    from chalicelib import bulk

    alpha = apis[0]
    for n in range(6):
        alpha.post("/schedule-task", _task(f"nomatch-{n}"))
    monkeypatch.setattr(bulk, "PAGE", 1)
    monkeypatch.setattr(bulk, "MAX_READS", 2)
    first = alpha.post("/tasks/bulk", {"operation": "pause", "filter": {"status": "scheduled"}})
    assert (first.json["matched"], first.json["changed"]) == (2, 2) and first.json["next_token"]


@pytest.mark.parametrize("raw", [b"[null, null]", b'"cancel"', b"3", b"null"])
def test_a_bulk_body_that_is_not_an_object_is_a_400(apis, raw):
    refused = apis[0].request("POST", "/tasks/bulk", raw=raw)
    assert refused.status_code == 400, refused.json


def test_an_admin_bulk_change_may_keep_to_one_tenant(apis):
    alpha, beta, _, admin = apis
    mine = alpha.post("/schedule-task", _task("a")).json["task_id"]
    theirs = beta.post("/schedule-task", _task("b")).json["task_id"]
    done = admin.post("/tasks/bulk", {"operation": "pause",
                                      "filter": {"status": "scheduled", "tenant": "beta"}})
    assert (done.json["matched"], done.json["changed"]) == (1, 1)
    assert beta.get(f"/tasks/{theirs}").json["status"] == "paused"
    assert alpha.get(f"/tasks/{mine}").json["status"] == "scheduled"
    refused = alpha.post("/tasks/bulk", {"operation": "pause",
                                         "filter": {"name": "b", "tenant": "beta"}})
    assert refused.status_code == 400 and refused.json["field"] == "filter"


class UpdateFailsOnce:
    """The store, but writing one task fails once as an unavailable DynamoDB does."""

    def __init__(self, store, task_id):
        self._store, self.task_id = store, task_id

    def update(self, task, version):
        from chalicelib.errors import StoreUnavailable

        if task.task_id == self.task_id:
            self.task_id = None
            raise StoreUnavailable("DynamoDB cannot answer now")
        return self._store.update(task, version)

    def __getattr__(self, name):
        return getattr(self._store, name)


@pytest.mark.parametrize("failing_at, first_answer", [(2, 200), (0, 503)])
def test_a_bulk_change_stopped_by_the_store_answers_what_it_changed(
        memory, memory_client, monkeypatch, failing_at, first_answer):
    """A store error after some changes answers them with a next_token that reads the page
    again; before any change it is the answer (503), and the same request goes on."""
    from chalicelib import wiring

    monkeypatch.setenv("API_TOKENS", TOKENS)
    alpha = _as(memory_client, "alpha-token-0123")
    for number in range(5):
        alpha.post("/schedule-task", _task(f"t{number}"))
    listed = [task["task_id"] for task in alpha.get("/tasks").json["tasks"]]
    change = {"operation": "pause", "filter": {"tag": "team:x"}}
    with wiring.overridden(store=UpdateFailsOnce(memory.store, listed[failing_at])):
        first = alpha.post("/tasks/bulk", change)
        assert first.status_code == first_answer, first.json
        if first_answer == 200:
            assert (first.json["changed"], first.json["matched"]) == (2, 2)
            assert first.json["stopped"].startswith(f"stopped at the task {listed[2]}")
            change["next_token"] = first.json["next_token"]
        else:
            assert first.json["code"] == "store_unavailable"
        second = alpha.post("/tasks/bulk", change)
    assert second.status_code == 200 and "stopped" not in second.json
    assert second.json["changed"] == 5 - failing_at and second.json["next_token"] is None
    assert {task["status"] for task in alpha.get("/tasks").json["tasks"]} == {"paused"}
