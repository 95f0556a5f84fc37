"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright, against
`make dev`'s server process and a real webhook receiver on 127.0.0.1.

Each state is kept as a screenshot in build/test-output/dashboard/ (NN-<state>.png).
"""
import http.client
import threading
import time
import urllib.parse
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.conftest import LOCAL_TOKEN, PROJECT_DIR, TENANT_TOKENS, DevServer, Receiver

pytestmark = pytest.mark.e2e  # server processes and a browser

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium dials out at start, which this
# machine's closed network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SHOTS = PROJECT_DIR / "build" / "test-output" / "dashboard"
ZONE = "Europe/Berlin"  # the browser's zone: datetime-local is read in it
WAIT = 45_000  # ms; live refresh runs every 2 s, and CI may be very busy
# Every expectation waits on its condition up to 20 s (Playwright's default is 5 s): a
# page on a machine running two suites and a browser can take longer to show a row.
expect.set_options(timeout=20_000)
NOWHERE = "http://127.0.0.1:9/nowhere"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    dev = DevServer(tmp_path_factory.mktemp("dashboard") / "data").start()
    yield dev
    dev.stop()


@pytest.fixture(scope="module")
def hooks():
    """A module-wide receiver; each test that changes its answer puts it back."""
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "no /usr/bin/chromium: `make test` installs it"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh tab (own session storage) in Berlin time; fails the test on any console
    error, CSP violation or uncaught exception."""
    context = browser.new_context(timezone_id=ZONE, locale="en-GB",
                                  viewport={"width": 1280, "height": 1000})
    tab = context.new_page()
    problems = []
    tab.on("console", lambda m: m.type == "error" and problems.append(m.text))
    tab.on("pageerror", lambda e: problems.append(str(e)))
    yield tab
    context.close()
    # The API's 4xx answers are logged as failed loads; nothing else may appear.
    expected = "Failed to load resource: the server responded with a status of 4"
    assert [p for p in problems if not p.startswith(expected)] == []


def shot(tab, name):
    tab.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(tab, base, token=LOCAL_TOKEN):
    tab.goto(base)
    expect(tab.locator("#login")).to_be_visible()
    tab.get_by_label("API token").fill(token)
    tab.get_by_role("button", name="Use token").click()


def row(tab, text):
    return tab.locator("#rows tr", has_text=text)


def status_cell(tab, text):
    return row(tab, text).locator("td").nth(1)


def utc_text(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_token_is_asked_once_kept_in_session_storage_only_and_forgotten(page, server):
    sign_in(page, server.url + "/", token="not-the-token")
    expect(page.locator("#token-err")).to_contain_text("The token was refused (HTTP 403)")
    expect(page.locator("#app")).to_be_hidden()
    shot(page, "01-token-refused")

    page.get_by_label("API token").fill(LOCAL_TOKEN)
    page.get_by_label("API token").press("Enter")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#status")).to_have_text("Signed in.")
    assert LOCAL_TOKEN not in page.url and "token" not in page.url
    assert page.evaluate("sessionStorage.getItem('task-scheduler.token')") == LOCAL_TOKEN
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    assert LOCAL_TOKEN not in page.content()  # not even the input keeps it
    shot(page, "02-signed-in")

    page.reload()  # same tab: the session keeps the token, no second prompt
    expect(page.locator("#app")).to_be_visible()
    page.get_by_role("button", name="Forget token").click()
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_a_refused_token_mid_session_returns_to_the_token_form(page, server):
    page.add_init_script("sessionStorage.setItem('task-scheduler.token', 'revoked-token')")
    page.goto(server.url + "/")
    expect(page.locator("#login")).to_be_visible(timeout=WAIT)
    expect(page.locator("#token-err")).to_contain_text("The token was refused")
    assert page.evaluate("sessionStorage.getItem('task-scheduler.token')") is None


def test_schedule_a_webhook_through_the_form_with_preview_and_live_refresh(page, server, hooks):
    sign_in(page, server.url)
    expect(page.locator("#app")).to_be_visible()
    page.evaluate("window.sameDocument = true")  # gone if the page reloads or navigates

    # Recurring: the next five firings, in UTC and in the chosen zone.
    page.get_by_label("cron, rate or HH:MM").check()
    expect(page.get_by_label("Time zone")).to_have_value(ZONE)  # the browser's zone
    page.get_by_label("Expression").fill("cron(0 9 ? * MON-FRI *)")
    preview = page.locator("#preview li")
    expect(preview).to_have_count(5)
    expect(page.locator("#preview")).to_contain_text("Next firings")
    expect(preview.first).to_contain_text("UTC")
    expect(preview.first).to_contain_text(f"({ZONE})")
    shot(page, "03-preview-cron")

    # A bad expression: the API's validation message next to the field, no preview.
    page.get_by_label("Expression").fill("cron(61 9 * * ? *)")
    error = page.locator('.err[data-field="run_at"]')
    expect(error).to_be_visible()
    expect(error).not_to_be_empty()
    expect(preview).to_have_count(0)
    shot(page, "04-preview-invalid")
    page.get_by_label("Time zone").fill("Mars/Olympus")
    page.get_by_label("Expression").fill("09:30")
    expect(page.locator('.err[data-field="timezone"]')).to_contain_text("Mars/Olympus")

    # Once, a few seconds ahead, typed in the browser's (Berlin) time.
    page.get_by_label("once, at").check()
    page.get_by_label("URL").fill(hooks.url)
    page.get_by_label("Data (JSON body)").fill('{"msg": "from the dashboard"}')
    page.get_by_label("Headers").fill("Authorization: Bearer s3cret-value\nX-Trace: abc")
    page.get_by_label("Name", exact=True).fill("browser-hook")
    # Far enough ahead that typing on a busy machine cannot make it past when submitted.
    at = (datetime.now(timezone.utc) + timedelta(seconds=10)).replace(microsecond=0)
    page.get_by_label("Date and time").fill(
        at.astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%dT%H:%M:%S"))
    expect(preview).to_have_count(1)  # read in Berlin time, shown in UTC
    expect(preview.first).to_contain_text(at.strftime("%Y-%m-%d %H:%M:%S UTC"))
    page.get_by_role("button", name="Schedule", exact=True).click()
    expect(page.locator("#status")).to_contain_text("Scheduled task")
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#d-fields")).to_contain_text(utc_text(at))  # its run_at
    shot(page, "05-scheduled")
    # The form starts afresh, so a second click cannot schedule the same task again.
    for label in ("URL", "Headers"):
        expect(page.get_by_label(label)).to_have_value("")
    expect(page.get_by_label("Data (JSON body)")).to_have_value('{"msg": "Hello from Lambda"}')
    expect(page.get_by_label("Name", exact=True)).to_have_value("")
    expect(page.get_by_label("once, at")).to_be_checked()
    expect(page.get_by_label("Date and time")).not_to_have_value("")

    # Live refresh turns the row completed: no reload, the receiver got the webhook.
    expect(status_cell(page, "browser-hook")).to_have_text("completed", timeout=WAIT)
    assert page.evaluate("window.sameDocument") is True
    delivered = [r for r in hooks.requests if b"from the dashboard" in r["body"]]
    assert len(delivered) == 1
    assert delivered[0]["headers"]["authorization"] == "Bearer s3cret-value"
    assert delivered[0]["headers"]["x-trace"] == "abc"

    # Its detail: payload with the secret header redacted, the run with status and time.
    expect(page.locator("#d-fields")).to_contain_text("completed", timeout=WAIT)
    payload = page.locator("#d-payload")
    expect(payload).to_contain_text('"Authorization": "***"')
    expect(payload).to_contain_text('"X-Trace": "abc"')
    expect(payload).not_to_contain_text("s3cret")
    run = page.locator("#d-runs tr").first
    expect(run).to_contain_text("succeeded")
    expect(run.locator("td").nth(3)).to_have_text("200")
    expect(run.locator("td").nth(4)).to_contain_text(" ms")
    shot(page, "06-completed-detail")


def test_cancel_with_the_button_and_the_apis_refusal_shown(page, server):
    far = datetime.now(timezone.utc) + timedelta(days=2)
    task_id = server.schedule("http://127.0.0.1:9/nowhere", far, name="far-away")
    sign_in(page, server.url)
    page.get_by_label("Name contains").fill("FAR-away")  # any case
    expect(page.locator("#rows tr")).to_have_count(1)
    opener = row(page, "far-away").get_by_role("button")
    opener.focus()
    opener.press("Enter")  # rows open from the keyboard
    expect(page.locator("#d-title")).to_be_focused()
    expect(page.locator("#d-upcoming")).to_contain_text(utc_text(far).replace("T", " ")[:-1])
    expect(page.get_by_role("button", name="Replay")).to_be_hidden()

    page.get_by_role("button", name="Cancel task").click()
    expect(status_cell(page, "far-away")).to_have_text("cancelled")
    expect(page.locator("#d-fields")).to_contain_text("cancelled")
    expect(page.get_by_role("button", name="Cancel task")).to_be_hidden()
    assert server.request("GET", f"/tasks/{task_id}")[1]["status"] == "cancelled"
    shot(page, "07-cancelled")

    # A click that meets a task already finished (the page's copy is up to 2 s old)
    # shows the API's own message.
    page.locator("#d-cancel").dispatch_event("click")
    expect(page.locator("#d-err")).to_contain_text("cancel")
    expect(page.locator("#d-err")).to_be_visible()
    shot(page, "08-cancel-refused")


def test_replay_a_failed_task(page, server, hooks):
    hooks.script = [500]  # the webhook fails; its failure callback (next) is answered 200
    try:
        task_id = server.schedule(hooks.url, datetime.now(timezone.utc) + timedelta(seconds=2),
                                  name="flaky-hook", max_attempts=1,
                                  failure_callback_url=f"{hooks.url}/failed")
        sign_in(page, server.url)
        page.get_by_label("Status").select_option("failed")
        expect(status_cell(page, "flaky-hook")).to_have_text("failed", timeout=WAIT)
        row(page, "flaky-hook").click()
        expect(field(page, "Failure callback")).to_have_text(f"{hooks.url}/failed")
        first_run = page.locator("#d-runs tr").first
        expect(first_run).to_contain_text("failed")
        expect(first_run.locator("td").nth(3)).to_have_text("500")
        expect(first_run.locator("td").nth(5)).to_contain_text(
            "failure callback delivered (HTTP 200)")
        expect(page.get_by_role("button", name="Cancel task")).to_be_hidden()
        shot(page, "09-failed")

        hooks.status = 200
        page.get_by_label("Status").select_option("")
        page.get_by_role("button", name="Replay").click()
        expect(status_cell(page, "flaky-hook")).to_have_text("completed", timeout=WAIT)
        expect(page.locator("#d-runs tr").first).to_contain_text("succeeded", timeout=WAIT)
        expect(page.locator("#d-runs tr")).to_have_count(2)
        assert server.request("GET", f"/tasks/{task_id}")[1]["status"] == "completed"
        shot(page, "10-replayed")
    finally:
        hooks.status = 200


def test_name_search_status_filter_and_paging(page, server):
    far = datetime.now(timezone.utc) + timedelta(days=3)
    for number in range(27):
        server.schedule("http://127.0.0.1:9/nowhere", far, name=f"Bulk-{number:02d}")
    server.schedule("http://127.0.0.1:9/nowhere", far, name="newest-other")
    sign_in(page, server.url)
    expect(row(page, "newest-other")).to_have_count(1)
    page.get_by_label("Name contains").fill("bulk-")
    expect(row(page, "newest-other")).to_have_count(0)
    expect(page.locator("#rows tr")).to_have_count(25)  # one page
    more = page.get_by_role("button", name="Load more")
    expect(more).to_be_visible()
    more.click()
    expect(page.locator("#rows tr")).to_have_count(27)
    expect(more).to_be_hidden()
    page.wait_for_timeout(2500)  # a live refresh keeps both pages
    expect(page.locator("#rows tr")).to_have_count(27)
    expect(page.locator("#asof")).to_contain_text("Past row 25, only pending tasks on screen")
    shot(page, "11-search-paged")

    page.get_by_label("Status").select_option("cancelled")
    expect(page.locator("#empty")).to_be_visible()
    page.get_by_label("Name contains").fill("nothing-like-this")
    page.get_by_label("Status").select_option("")
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator("#rows tr")).to_have_count(0)


def test_a_refresh_reads_the_first_page_and_at_most_ten_tasks(page, server):
    """Behind API Gateway each GET is a DynamoDB read (a name search reads up to 2,000 items),
    so a refresh never reads "Load more" pages again: one list request for the first page,
    plus at most 10 task GETs, the open task's and those of rows past the first page that are
    pending and on screen (least recently checked first)."""
    far = datetime.now(timezone.utc) + timedelta(days=3)
    ids = [server.schedule(NOWHERE, far, name=f"Tick-{number:02d}") for number in range(60)]
    sign_in(page, server.url)
    with page.expect_response(lambda r: "name=tick-" in r.url):
        page.get_by_label("Name contains").fill("tick-")
    rows = page.locator("#rows tr")
    expect(rows).to_have_count(25)
    more = page.get_by_role("button", name="Load more")
    more.click()
    expect(rows).to_have_count(50)
    more.click()
    expect(rows).to_have_count(60)
    expect(more).to_be_hidden()
    row(page, "Tick-30").click()  # on the second page
    expect(page.locator("#d-title")).to_have_text("Tick-30")
    row(page, "Tick-00").scroll_into_view_if_needed()  # the last row, with ~20 others

    seen = []
    page.on("request", lambda r: "/tasks" in r.url and seen.append(urllib.parse.urlsplit(r.url)))
    assert server.request("DELETE", f"/tasks/{ids[0]}")[0] == 200
    expect(status_cell(page, "Tick-00")).to_have_text("cancelled", timeout=WAIT)
    # Four refreshes' list requests (the last may be under way): on a busy machine a tick
    # can come late, so wait for them, not for a fixed time.
    deadline = time.monotonic() + WAIT / 1000
    while sum(url.path == "/tasks" for url in seen) < 4 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    shot(page, "12-refresh-past-the-first-page")

    # Each tick's requests go out together, the list request first.
    ticks = []
    for url in seen:
        if url.path == "/tasks":
            ticks.append([])
        if ticks:
            ticks[-1].append(url)
    ticks = ticks[:-1]  # the last may be under way
    first_page = set(rows.evaluate_all("rs => rs.slice(0, 25).map((r) => r.dataset.id)"))
    assert len(ticks) >= 3
    for tick in ticks:
        lists = [url for url in tick if url.path == "/tasks"]
        gets = {url.path.rsplit("/", 1)[1] for url in tick if url.path.startswith("/tasks/")}
        assert len(lists) == 1 and "next_token" not in lists[0].query
        assert len(tick) == 1 + len(gets) <= 11  # no task twice, nothing else
        assert ids[30] in gets and not gets & first_page
    print(f"requests per refresh: {[len(tick) for tick in ticks]}")
    assert max(len(tick) for tick in ticks) == 11  # 9 of the ~20 pending rows on screen


def test_refresh_slows_down_when_quiet_and_stops_while_hidden(page, server):
    server.schedule(NOWHERE, datetime.now(timezone.utc) + timedelta(days=3), name="quiet-one")
    page.clock.install()  # time flows, and fast_forward jumps it (firing due timers once)
    sign_in(page, server.url)
    page.get_by_label("Name contains").fill("quiet-one")
    expect(page.locator("#rows tr")).to_have_count(1)
    lists = []
    page.on("request", lambda r: urllib.parse.urlsplit(r.url).path == "/tasks" and
            lists.append(r.url))

    def refreshes_in(ms):
        before = len(lists)
        page.clock.fast_forward(ms)
        page.wait_for_timeout(500)  # for the requests, and the next tick's timer to be set
        return len(lists) - before

    def hide(hidden):
        page.evaluate("(hidden) => { Object.defineProperty(document, 'hidden', {value: hidden, "
                      "configurable: true}); document.dispatchEvent(new Event('visibilitychange'))"
                      " }", hidden)

    assert refreshes_in(2_100) >= 1  # every 2 s while someone is at it
    assert refreshes_in(31_000) == 1  # 30 s untouched and unchanged: every 10 s from now
    assert refreshes_in(6_000) == 0
    assert refreshes_in(4_500) == 1
    page.keyboard.press("Shift")  # someone is back: 2 s again
    assert refreshes_in(2_100) == 1
    assert refreshes_in(2_100) == 1

    hide(True)
    assert refreshes_in(60_000) == 0
    assert refreshes_in(60_000) == 0
    before = len(lists)
    hide(False)  # back at once
    page.wait_for_timeout(500)
    assert len(lists) == before + 1
    assert refreshes_in(2_100) == 1


def test_other_actions_take_a_json_payload(page, server):
    sign_in(page, server.url)
    page.get_by_label("Action").select_option("log")
    expect(page.get_by_label("URL")).to_be_hidden()
    expect(page.get_by_label("Payload (JSON)")).to_have_value('{\n  "message": "hello"\n}')
    page.get_by_label("Payload (JSON)").fill('{"message": ')
    page.get_by_role("button", name="Schedule", exact=True).click()
    expect(page.locator('.err[data-field="payload"]')).to_contain_text("not valid JSON")
    page.get_by_label("Payload (JSON)").fill('{"message": "log me"}')
    page.get_by_label("Name", exact=True).fill("log-task")
    page.get_by_role("button", name="Schedule", exact=True).click()
    expect(page.locator("#d-payload")).to_contain_text('"message": "log me"')
    expect(status_cell(page, "log-task")).to_have_text("scheduled")

    page.get_by_label("Action").select_option("sqs")  # make dev has no AWS: the API says so
    page.get_by_label("Payload (JSON)").fill(
        '{"queue_url": "https://sqs.us-east-1.amazonaws.com/123456789012/q", "message": "x"}')
    page.get_by_role("button", name="Schedule", exact=True).click()
    expect(page.locator("#n-err")).to_contain_text("make dev-aws")
    shot(page, "13-action-refused")


# ---------------------------------------------------------------- managing tasks

def schedule_recurring(server, name, url=NOWHERE, run_at="rate(1 day)", **extra):
    """A recurring webhook task made through the API; its id."""
    status, body = server.request("POST", "/schedule-task", {
        "action": "webhook", "payload": {"url": url, "data": {"task": name}},
        "run_at": run_at, "name": name, **extra})
    assert status == 201, body
    return body["task_id"]


def open_task(tab, server, name):
    """Signed in, the list searched for `name` and its task open."""
    sign_in(tab, server.url)
    tab.get_by_label("Name contains").fill(name)
    expect(tab.locator("#rows tr")).to_have_count(1)
    row(tab, name).click()
    expect(tab.locator("#d-title")).to_have_text(name)


def detail_button(tab, name):
    return tab.locator("#detail").get_by_role("button", name=name, exact=True)


def field(tab, name):
    """The value shown for `name` in the open task's fields."""
    return tab.locator("#d-fields dt", has_text=name).locator("xpath=following-sibling::dd[1]")


def test_edit_a_task_shows_the_change_and_refuses_a_stale_edit(page, server):
    far = (datetime.now(timezone.utc) + timedelta(days=2)).replace(microsecond=0)
    task_id = server.schedule(NOWHERE, far, name="renamable-1", tags={"team": "edits"})
    open_task(page, server, "renamable-1")
    page.get_by_label("Name contains").fill("renamable")  # the new name stays in the list
    expect(field(page, "Version")).to_have_text("1")
    detail_button(page, "Edit").click()
    edit = page.locator("#edit-form")
    expect(edit.locator("h3")).to_have_text("Edit version 1")
    expect(edit.get_by_label("Name")).to_be_focused()
    expect(edit.get_by_label("Name")).to_have_value("renamable-1")
    expect(edit.get_by_label("Run at")).to_have_value(utc_text(far))
    expect(edit.get_by_label("Tags")).to_have_value("team=edits")
    expect(edit.get_by_label("Catch up")).to_have_value("latest")

    edit.get_by_role("button", name="Save changes").click()  # nothing changed: nothing sent
    expect(edit.locator("#e-err")).to_have_text("Nothing was changed.")

    # A 400 is shown next to the field the API names (start_at: recurring tasks only).
    edit.get_by_label("Start at").fill("2031-01-01T00:00:00Z")
    edit.get_by_role("button", name="Save changes").click()
    start_error = edit.locator('.err[data-field="start_at"]')
    expect(start_error).to_contain_text("recurring tasks only")
    expect(edit.locator("#e-err")).to_be_empty()
    shot(page, "15-edit-refused-field")
    assert server.request("GET", f"/tasks/{task_id}")[1]["version"] == 1

    later = far + timedelta(days=1, hours=3)
    edit.get_by_label("Start at").fill("")
    edit.get_by_label("Name").fill("renamable-2")
    edit.get_by_label("Run at").fill(utc_text(later))
    with page.expect_request(lambda r: r.method == "PATCH") as sent:
        edit.get_by_role("button", name="Save changes").click()
    assert sent.value.headers["if-match"] == '"1"'  # the version the form was filled from
    assert sent.value.post_data_json == {"name": "renamable-2", "run_at": utc_text(later)}
    expect(page.locator("#edit-form")).to_have_count(0)
    expect(page.locator("#d-title")).to_have_text("renamable-2")
    expect(field(page, "Schedule")).to_have_text(utc_text(later))
    expect(field(page, "Version")).to_have_text("2")
    expect(page.locator("#d-upcoming li").first).to_contain_text(
        utc_text(later).replace("T", " ")[:-1])
    expect(row(page, "renamable-2")).to_have_count(1)
    expect(row(page, "renamable-1")).to_have_count(0)
    expect(page.locator("#status")).to_contain_text("now version 2")
    shot(page, "16-edited")
    stored = server.request("GET", f"/tasks/{task_id}")[1]
    assert (stored["name"], stored["run_at"], stored["version"]) == (
        "renamable-2", utc_text(later), 2)
    assert stored["tags"] == {"team": "edits"}  # what the form did not change stays

    # Changed elsewhere while the form is open: the save is refused (412), nothing changes.
    detail_button(page, "Edit").click()
    expect(edit.locator("h3")).to_have_text("Edit version 2")
    status, _ = server.request("PATCH", f"/tasks/{task_id}", {"priority": 1})
    assert status == 200
    edit.get_by_label("Priority").fill("9")
    edit.get_by_role("button", name="Save changes").click()
    expect(edit.locator("#e-err")).to_contain_text("changed meanwhile")
    expect(edit.locator("#e-err")).to_contain_text("Reload")
    expect(field(page, "Version")).to_have_text("3")  # the detail shows the version that won
    expect(edit.locator("#e-note")).to_contain_text("now version 3")
    expect(edit.get_by_label("Priority")).to_have_value("9")  # the user's edit is still there
    shot(page, "17-edit-stale")
    stored = server.request("GET", f"/tasks/{task_id}")[1]
    assert (stored["priority"], stored["version"]) == (1, 3)

    edit.get_by_role("button", name="Reload the task").click()
    expect(edit.locator("h3")).to_have_text("Edit version 3")
    expect(edit.get_by_label("Priority")).to_have_value("1")
    expect(edit.locator("#e-err")).to_be_empty()
    edit.get_by_label("Priority").fill("9")
    edit.get_by_role("button", name="Save changes").click()
    expect(field(page, "Priority")).to_have_text("9")
    expect(field(page, "Version")).to_have_text("4")
    assert server.request("GET", f"/tasks/{task_id}")[1]["priority"] == 9


def test_pause_until_then_resume_changes_status_and_buttons(page, server):
    task_id = schedule_recurring(server, "pausable-daily")
    open_task(page, server, "pausable-daily")
    for shown in ("Pause", "Run now", "Edit", "Cancel task"):
        expect(detail_button(page, shown)).to_be_visible()
    expect(detail_button(page, "Resume")).to_be_hidden()

    until = (datetime.now(timezone.utc) + timedelta(days=1)).replace(microsecond=0)
    page.locator("#detail").get_by_label("until").fill(
        until.astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%dT%H:%M:%S"))  # the browser's time
    detail_button(page, "Pause").click()
    expect(status_cell(page, "pausable-daily")).to_have_text("paused")
    expect(field(page, "Status")).to_have_text("paused")
    expect(field(page, "Paused until")).to_contain_text(utc_text(until).replace("T", " ")[:-1])
    expect(page.locator("#d-upcoming")).to_have_text("nothing while it is paused")
    expect(detail_button(page, "Pause")).to_be_hidden()
    expect(detail_button(page, "Resume")).to_be_visible()
    for shown in ("Run now", "Edit", "Cancel task"):  # a paused task may still change
        expect(detail_button(page, shown)).to_be_visible()
    shot(page, "18-paused")
    stored = server.request("GET", f"/tasks/{task_id}")[1]
    assert (stored["status"], stored["paused_until"]) == ("paused", utc_text(until))

    page.get_by_label("Status").select_option("paused")  # a status of the filter now
    expect(page.locator("#rows tr")).to_have_count(1)
    page.get_by_label("Status").select_option("")

    detail_button(page, "Resume").click()
    expect(status_cell(page, "pausable-daily")).to_have_text("scheduled")
    expect(field(page, "Status")).to_have_text("scheduled")
    expect(page.locator("#d-fields dt", has_text="Paused until")).to_have_count(0)
    expect(detail_button(page, "Resume")).to_be_hidden()
    expect(detail_button(page, "Pause")).to_be_visible()
    assert server.request("GET", f"/tasks/{task_id}")[1]["status"] == "scheduled"

    # A click the task's status no longer allows shows the API's refusal.
    page.locator("#d-resume").dispatch_event("click")
    expect(page.locator("#d-err")).to_contain_text("only a paused task can be resumed")


def test_run_now_runs_a_recurring_task_once_and_keeps_its_schedule(page, server, hooks):
    task_id = schedule_recurring(server, "run-me-now", url=hooks.url, max_runs=5)
    before = server.request("GET", f"/tasks/{task_id}")[1]
    open_task(page, server, "run-me-now")
    expect(field(page, "Runs done")).to_have_text("0 of 5")
    expect(page.locator("#d-runs")).to_contain_text("no runs yet")

    detail_button(page, "Run now").click()
    expect(page.locator("#status")).to_contain_text(f"Started a run of task {task_id}")
    first_run = page.locator("#d-runs tr").first
    expect(first_run).to_contain_text("succeeded", timeout=WAIT)
    expect(field(page, "Runs done")).to_have_text("1 of 5", timeout=WAIT)
    expect(status_cell(page, "run-me-now")).to_have_text("scheduled", timeout=WAIT)
    expect(detail_button(page, "Run now")).to_be_visible()
    shot(page, "19-run-now")
    delivered = [r for r in hooks.requests if b'"run-me-now"' in r["body"]]
    assert len(delivered) == 1
    after = server.request("GET", f"/tasks/{task_id}")[1]
    assert after["runs_done"] == 1
    assert after["next_run_at"] == before["next_run_at"]  # the schedule is unchanged


def test_a_skipped_firing_reads_apart_from_runs(page, server):
    """A one-time task paused over its firing, with catch_up none: resumed, the firing is
    recorded as skipped and the task is completed."""
    at = (datetime.now(timezone.utc) + timedelta(seconds=4)).replace(microsecond=0)
    task_id = server.schedule(NOWHERE, at, name="skip-the-firing", catch_up="none")
    assert server.request("POST", f"/tasks/{task_id}/pause")[0] == 200
    open_task(page, server, "skip-the-firing")
    expect(detail_button(page, "Resume")).to_be_visible()
    # Its firing has passed (a function, not an expression: the page's CSP forbids eval).
    page.wait_for_function("(t) => Date.now() > t", arg=(at.timestamp() + 1) * 1000)
    detail_button(page, "Resume").click()
    expect(field(page, "Status")).to_have_text("completed")
    skipped = page.locator("#d-runs tr").first
    expect(skipped).to_have_class("skipped")
    expect(skipped.locator("td").nth(0)).to_have_text("—")  # no attempt was made
    expect(skipped.locator("td").nth(2)).to_have_text("skipped")
    expect(skipped.locator(".st-skipped")).to_have_count(1)
    expect(skipped).to_contain_text("catch_up none")
    assert skipped.evaluate("tr => getComputedStyle(tr.cells[1]).fontStyle") == "italic"
    for hidden in ("Resume", "Pause", "Run now", "Edit"):
        expect(detail_button(page, hidden)).to_be_hidden()
    shot(page, "20-skipped-run")
    runs = server.request("GET", f"/tasks/{task_id}")[1]["runs"]
    assert [r["outcome"] for r in runs] == ["skipped"]


def test_tags_column_filter_and_the_form_s_new_fields(page, server):
    schedule_recurring(server, "tagged-billing", tags={"team": "billing-t", "env": "prod"})
    schedule_recurring(server, "tagged-ops", tags={"team": "ops-t"})
    sign_in(page, server.url)
    tags = row(page, "tagged-billing").locator("td").nth(7)
    expect(tags.locator(".tag")).to_have_text(["team=billing-t", "env=prod"])
    expect(row(page, "tagged-ops").locator("td").nth(7)).to_have_text("team=ops-t")

    tag_filter = page.get_by_label("Tag", exact=True)
    tag_filter.fill("team:billing-t")
    expect(page.locator("#rows tr")).to_have_count(1)
    expect(row(page, "tagged-billing")).to_have_count(1)
    shot(page, "21-tag-filter")
    tag_filter.fill("team")  # no colon: the API's message under the filters, no rows
    expect(page.locator("#f-err")).to_contain_text("key:value")
    expect(page.locator("#rows tr")).to_have_count(0)
    expect(page.locator("#empty")).to_be_hidden()
    tag_filter.fill("team:nobody-t")
    expect(page.locator("#f-err")).to_be_empty()
    expect(page.locator("#empty")).to_be_visible()

    # The schedule form: tags, and the lifecycle fields folded under their summary.
    form = page.locator("#new-form")
    page.get_by_label("Action").select_option("log")
    page.get_by_label("cron, rate or HH:MM").check()
    page.get_by_label("Expression").fill("rate(1 hour)")
    page.get_by_label("Name", exact=True).fill("form-tagged")
    form.get_by_label("Tags").fill("team form-t")
    form.get_by_role("button", name="Schedule", exact=True).click()
    expect(form.locator('.err[data-field="tags"]')).to_contain_text("line 1: write key=value")
    form.get_by_label("Tags").fill("team=form-t\nowner=dashboard")
    lifecycle = form.locator("summary", has_text="Notify and lifecycle")
    lifecycle.click()
    form.get_by_label("End at").fill("2001-01-01T00:00:00Z")
    lifecycle.click()  # folded again: the refusal unfolds it
    expect(form.get_by_label("End at")).to_be_hidden()
    form.get_by_role("button", name="Schedule", exact=True).click()
    expect(form.locator('.err[data-field="end_at"]')).to_be_visible()
    expect(form.locator('.err[data-field="end_at"]')).to_contain_text("not in the future")
    form.get_by_label("End at").fill("")
    form.get_by_label("Max runs").fill("3")
    form.get_by_label("Catch up").select_option("none")
    form.get_by_label("Overlap").select_option("buffer_one")
    form.get_by_label("Window").fill("5")
    form.get_by_label("Notify").select_option("always")
    form.get_by_role("button", name="Schedule", exact=True).click()
    expect(page.locator("#d-title")).to_have_text("form-tagged")
    expect(field(page, "Tags").locator(".tag")).to_have_text(["team=form-t", "owner=dashboard"])
    expect(field(page, "Runs done")).to_have_text("0 of 3")
    expect(field(page, "Catch up")).to_have_text("none")
    expect(field(page, "Overlap")).to_have_text("buffer_one")
    expect(field(page, "Window")).to_have_text("5 min")
    expect(field(page, "Notify")).to_have_text("always")
    shot(page, "22-form-tagged")
    tag_filter.fill("owner:dashboard")
    expect(page.locator("#rows tr")).to_have_count(1)
    expect(row(page, "form-tagged")).to_have_count(1)
    task_id = row(page, "form-tagged").get_attribute("data-id")
    stored = server.request("GET", f"/tasks/{task_id}")[1]
    assert stored["tags"] == {"team": "form-t", "owner": "dashboard"}
    assert (stored["max_runs"], stored["catch_up"], stored["overlap"], stored["window_minutes"],
            stored["notify"]) == (3, "none", "buffer_one", 5, "always")



# ---------------------------------------------------------------- flow control

def key_field(tab, name):
    """The value shown for `name` in the flow-control key's view."""
    return tab.locator("#k-fields dt", has_text=name).locator("xpath=following-sibling::dd[1]")


def test_flow_control_set_through_the_form_changed_and_removed_in_the_edit_form(page, server):
    key = f"form-key-{uuid.uuid4().hex[:8]}"
    sign_in(page, server.url)
    form = page.locator("#new-form")
    page.get_by_label("Action").select_option("log")
    page.get_by_label("cron, rate or HH:MM").check()
    page.get_by_label("Expression").fill("rate(1 hour)")
    page.get_by_label("Name", exact=True).fill("flow-form")
    form.locator("summary", has_text="Flow control").click()
    form.get_by_label("Key (empty: none)").fill(key)
    form.get_by_role("button", name="Schedule", exact=True).click()  # a key without limits
    refusal = form.locator('.err[data-field="flow_control"]')
    expect(refusal).to_contain_text("at least rate or parallelism")
    form.get_by_label("Parallelism").fill("2")
    with page.expect_request(lambda r: r.method == "POST") as sent:
        form.get_by_role("button", name="Schedule", exact=True).click()
    assert sent.value.post_data_json["flow_control"] == {
        "key": key, "period": "second", "parallelism": 2}
    expect(page.locator("#d-title")).to_have_text("flow-form")
    expect(field(page, "Flow control")).to_have_text(f"{key}2 at once")
    expect(row(page, "flow-form").locator("td").nth(2)).to_have_text(f"logflow {key}")
    expect(page.locator("#d-fields dt", has_text="Delayed")).to_have_count(0)
    expect(form.get_by_label("Key (empty: none)")).to_have_value("")  # a fresh form

    # The key shows its state; clicked again, the view closes.
    page.locator("#d-fields").get_by_role("button", name=key).click()
    expect(page.locator("#k-h")).to_have_text(f"Flow-control key {key}")
    expect(page.locator("#k-h")).to_be_focused()
    for name, shown in (("Rate", "none"), ("Parallelism", "2"), ("Running", "0"),
                        ("Waiting", "0")):
        expect(key_field(page, name)).to_have_text(shown)
    shot(page, "23-flow-key-view")
    page.locator("#d-fields").get_by_role("button", name=key).click()
    expect(page.locator("#d-flow")).to_be_hidden()

    # Edit: the parts are filled from the task; a change sends the whole flow_control.
    detail_button(page, "Edit").click()
    edit = page.locator("#edit-form")
    expect(edit.get_by_label("Key (empty: none)")).to_have_value(key)
    expect(edit.get_by_label("Parallelism")).to_have_value("2")
    expect(edit.get_by_label("Period")).to_have_value("second")
    edit.get_by_label("Rate", exact=True).fill("5")
    edit.get_by_label("Period").select_option("minute")
    with page.expect_request(lambda r: r.method == "PATCH") as sent:
        edit.get_by_role("button", name="Save changes").click()
    assert sent.value.post_data_json == {"flow_control": {
        "key": key, "period": "minute", "rate": 5, "parallelism": 2}}
    expect(field(page, "Flow control")).to_have_text(f"{key}5 per minute, 2 at once")
    shot(page, "24-flow-edited")

    # An empty key removes flow control: null is sent, whatever the other parts hold.
    detail_button(page, "Edit").click()
    edit.get_by_label("Key (empty: none)").fill("")
    with page.expect_request(lambda r: r.method == "PATCH") as sent:
        edit.get_by_role("button", name="Save changes").click()
    assert sent.value.post_data_json == {"flow_control": None}
    expect(field(page, "Version")).to_have_text("3")
    expect(page.locator("#d-fields dt", has_text="Flow control")).to_have_count(0)
    expect(row(page, "flow-form").locator("td").nth(2)).to_have_text("log")
    task_id = row(page, "flow-form").get_attribute("data-id")
    assert server.request("GET", f"/tasks/{task_id}")[1]["flow_control"] is None


def test_a_task_delayed_by_its_key_says_so_and_the_key_view_counts_it(page, server, hooks):
    """Parallelism 1: the first task's webhook is held at the receiver until the page has
    shown the second one waiting for the key; released, both complete."""
    key = f"one-at-a-time-{uuid.uuid4().hex[:8]}"
    arrived, release = hooks.hold(b"flow-first")

    def schedule(name, seconds):
        status, body = server.request("POST", "/schedule-task", {
            "action": "webhook", "run_at": utc_text(datetime.now(timezone.utc) + timedelta(
                seconds=seconds)), "name": name, "flow_control": {"key": key, "parallelism": 1},
            "payload": {"url": hooks.url, "data": {"task": name}, "timeout": 60}})
        assert status == 201, body
        return body["task_id"]

    try:
        first = schedule("flow-first", 2)
        assert arrived.wait(WAIT / 1000), "the first task's webhook never arrived"
        second = schedule("flow-second", 1)
        open_task(page, server, "flow-second")
        delayed = field(page, "Delayed")
        expect(delayed).to_contain_text(f"waiting for {key} since ", timeout=WAIT)
        cell = row(page, "flow-second").locator("td").nth(3)
        expect(cell).to_contain_text(f"waiting for {key}since ")
        expect(field(page, "Status")).to_have_text("scheduled")
        expect(field(page, "Next run")).to_have_text("when its key has room")
        since = server.request("GET", f"/tasks/{second}")[1]["flow_delayed_since"]
        assert since and utc_text(datetime.fromisoformat(since.replace("Z", "+00:00"))
                                  ).replace("T", " ")[:-1] in delayed.inner_text()

        page.locator("#d-fields").get_by_role("button", name=key).click()
        for name, shown in (("Parallelism", "1"), ("Running", "1"), ("Waiting", "1")):
            expect(key_field(page, name)).to_have_text(shown)
        shot(page, "25-flow-delayed")

        release.set()
        expect(status_cell(page, "flow-second")).to_have_text("completed", timeout=WAIT)
        expect(page.locator("#d-fields dt", has_text="Delayed")).to_have_count(0)
        for name in ("Running", "Waiting"):  # the key view refreshes with the task
            expect(key_field(page, name)).to_have_text("0", timeout=WAIT)
        shot(page, "26-flow-done")
        assert server.wait_status(first, "completed")["runs"][0]["attempt"] == 1
        assert server.request("GET", f"/tasks/{second}")[1]["attempts"] == 1  # none used waiting
    finally:
        release.set()
        hooks.on_request = None


# ---------------------------------------------------------------- under a stage path

class StagePath:
    """API Gateway's shape of a deployed API: the app under /api (the stage), nothing at /."""

    def __init__(self, upstream):
        target = urllib.parse.urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self):
                if self.path != "/api" and not self.path.startswith(("/api/", "/api?")):
                    self.send_error(403)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                connection = http.client.HTTPConnection(target.hostname, target.port,
                                                        timeout=10)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("authorization", "content-type")}
                connection.request(self.command, self.path[4:] or "/", body or None, headers)
                answer = connection.getresponse()
                data = answer.read()
                proxy.paths.append(self.path)
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("content-length", "connection", "transfer-encoding",
                                            "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                connection.close()

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, *args):
                pass

        self.paths = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("path, name", [("/api/", "staged-slash"), ("/api", "staged-bare")])
def test_works_under_an_api_gateway_stage_path(page, server, path, name):
    stage = StagePath(server.url)
    try:
        server.schedule("http://127.0.0.1:9/nowhere",
                        datetime.now(timezone.utc) + timedelta(days=1), name=name)
        sign_in(page, stage.url + path)
        expect(row(page, name)).to_have_count(1)
        row(page, name).click()
        expect(page.locator("#d-payload")).to_contain_text("nowhere")
        page.get_by_label("cron, rate or HH:MM").check()
        page.get_by_label("Expression").fill("rate(5 minutes)")
        expect(page.locator("#preview li")).to_have_count(5)
        assert stage.paths and all(p.startswith("/api") for p in stage.paths)
        assert any(p.startswith("/api/tasks/") for p in stage.paths)
        assert any(p.startswith("/api/preview?") for p in stage.paths)
    finally:
        # Leave the page first: a live refresh through a proxy already shut would log a
        # failed load, which the page fixture counts as an error of the page.
        page.goto("about:blank")
        stage.close()


def test_a_phone_screen_never_scrolls_sideways(browser, server):
    """390 px wide (a phone): the task table and the runs scroll inside their box; the
    page itself is no wider than the screen."""
    server.schedule("http://127.0.0.1:9/a-rather-long-path/that/keeps/going/on",
                    datetime.now(timezone.utc) + timedelta(days=1),
                    name="a task with a rather long name on a small screen")
    context = browser.new_context(viewport={"width": 390, "height": 844}, timezone_id=ZONE)
    try:
        tab = context.new_page()
        sign_in(tab, server.url)
        expect(row(tab, "small screen")).to_have_count(1)
        row(tab, "small screen").click()
        expect(tab.locator("#d-payload")).to_contain_text("a-rather-long-path")
        width = tab.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width
        shot(tab, "14-phone")
    finally:
        context.close()


def test_a_signed_out_page_calls_no_api(page, server):
    """The page just loaded asks the API nothing (the form's preview waits for a token): a
    refused call would sign out whoever signs in meanwhile."""
    calls = []
    page.on("request", lambda r: urllib.parse.urlsplit(r.url).path in (
        "/tasks", "/preview", "/schedule-task") and calls.append(r.url))
    page.goto(server.url + "/")
    expect(page.locator("#login")).to_be_visible()
    page.wait_for_timeout(1000)  # longer than the preview's 300 ms debounce
    assert calls == []
    sign_in(page, server.url)
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#preview li")).to_have_count(1)  # now it previews




def test_each_tenant_sees_its_own_tasks_and_an_admin_filters_by_tenant(page, tenant_server):
    far = utc_text(datetime.now(timezone.utc) + timedelta(days=2))
    ids = {"alpha": [], "beta": []}
    # Beta's first, so that alpha's are the newest and both share the admin's first page.
    for tenant, count in (("beta", 26), ("alpha", 2)):
        for number in range(count):
            status, body = tenant_server.request("POST", "/schedule-task", {
                "action": "log", "payload": {"message": "x"}, "run_at": far,
                "name": f"{tenant}-{number:02d}"}, token=TENANT_TOKENS[tenant])
            assert status == 201, body
            ids[tenant].append(body["task_id"])
    tenants = page.locator("#rows tr td:nth-child(9)")

    # Alpha's token: alpha's tasks only, each row and the detail naming the tenant.
    sign_in(page, tenant_server.url, TENANT_TOKENS["alpha"])
    expect(tenants).to_have_text(["alpha", "alpha"])
    expect(row(page, "beta-")).to_have_count(0)
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    row(page, "alpha-01").get_by_role("button").click()
    expect(page.locator("#d-fields")).to_contain_text(ids["alpha"][1])
    expect(field(page, "Tenant")).to_have_text("alpha")
    shot(page, "27-tenant-alpha")
    # A tenant's token cannot list another tenant: the page says why, the list is empty.
    page.get_by_label("Tenant").fill("beta")
    expect(page.locator("#f-err")).to_contain_text("Only an admin token filters by tenant")
    expect(page.locator("#rows tr")).to_have_count(0)
    shot(page, "28-tenant-filter-refused")
    page.get_by_label("Tenant").fill("")
    expect(tenants).to_have_text(["alpha", "alpha"])
    expect(page.locator("#f-err")).to_be_empty()
    page.get_by_role("button", name="Forget token").click()

    # The admin's token: every tenant's, newest first, alpha's then beta's.
    sign_in(page, tenant_server.url, TENANT_TOKENS["*"])
    expect(tenants).to_have_text(["alpha"] * 2 + ["beta"] * 23)
    row(page, "beta-25").get_by_role("button").click()
    expect(field(page, "Tenant")).to_have_text("beta")
    # The tenant filter narrows to beta's, and "Load more" keeps it.
    page.get_by_label("Tenant").fill("beta")
    expect(tenants).to_have_text(["beta"] * 25)
    more = page.get_by_role("button", name="Load more")
    with page.expect_response(lambda r: "next_token=" in r.url) as paged:
        more.click()
    assert "tenant=beta" in paged.value.url
    expect(tenants).to_have_text(["beta"] * 26)
    expect(more).to_be_hidden()
    expect(row(page, "alpha-")).to_have_count(0)
    shot(page, "29-tenant-admin-filtered")
