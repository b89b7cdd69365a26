"""jobq's web page in a real browser: Debian's chromium driven by Playwright, for tests/ui.rs.

Its one argument is a JSON object: the page's `url`, the API `token`, the `chromium` binary,
the `screenshots` and `downloads` folders, and the ids of the `jobs` the Rust test made
(`succeeded`, `failed`, `debugged`, `container` (of two rows, whose job ids are `children`),
and `kill` (running)). It makes one more job itself, `live`, to watch its lines come. Every
check asserts exact visible text; the first failure ends the script with a non-zero exit and
says what differed. It prints "all pages checked" at the end.
"""

import json
import os
import re
import sys
import zipfile

from playwright.sync_api import expect, sync_playwright

SPEC = json.loads(sys.argv[1])
JOBS = SPEC["jobs"]
TIMEOUT_MS = 30_000


def shot(page, name):
    page.screenshot(path=os.path.join(SPEC["screenshots"], name + ".png"), full_page=True)


def fact(page, name):
    return page.locator(f'dd[data-fact="{name}"]')


def messages(page, text):
    """The event rows whose message is exactly `text`."""
    return page.locator("#events tr").filter(
        has=page.locator("td.message", has_text=re.compile(f"^{re.escape(text)}$"))
    )


def listed_ids(page):
    return page.locator("#jobs tr").evaluate_all("rows => rows.map(r => r.dataset.id)")


def search(page, text):
    page.fill("#search", text)
    page.click("#filters button[type=submit]")


def check_login(page, context):
    page.goto(SPEC["url"])
    expect(page.locator("#login h1")).to_have_text("Log in to jobq")
    # Nothing of the project before the login.
    for hidden in ["#strip", "#who", "#logout"]:
        expect(page.locator(hidden)).to_be_hidden()
    shot(page, "login")
    page.fill("#token", "not-the-token")
    page.click("#login button")
    expect(page.locator("#login-error")).to_have_text("Invalid access token.")
    assert context.cookies() == [], context.cookies()
    page.fill("#token", SPEC["token"])
    page.click("#login button")
    expect(page.locator("#who")).to_have_text("test token")
    [cookie] = context.cookies()
    assert cookie["name"] == "jobq_session", cookie
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict", cookie
    assert cookie["path"] == "/ui", cookie
    assert SPEC["token"] not in cookie["value"]
    # Never in the page's reach: no token in the address, the storage or script-visible
    # cookies.
    assert SPEC["token"] not in page.url
    stored = page.evaluate("() => JSON.stringify([localStorage, sessionStorage, document.cookie])")
    assert stored == '[{},{},""]', stored


CREATE_LIVE_JOB = """component => fetch("api/jobs", {
    method: "POST",
    headers: {"X-Jobq-Page": "1", "Content-Type": "application/json"},
    body: JSON.stringify({component, configData: {parameters: {
        print: ["started"], sleep: 8, print_after_sleep: ["late line"]}}}),
}).then(answer => answer.json())"""


def check_live_events(page):
    # A job made now through the page's API (its cookie and header): its first line comes once
    # its container runs, its last 8 s later, both while the page looks.
    live = page.evaluate(CREATE_LIVE_JOB, SPEC["component"])["id"]
    JOBS["live"] = live
    page.goto(SPEC["url"] + f"#/jobs/{live}")
    expect(page.locator("#stream-state")).to_have_text("(live)")
    expect(messages(page, "started")).to_have_count(1, timeout=TIMEOUT_MS)
    assert messages(page, "late line").count() == 0, "the late line came too early"
    expect(page.locator("#job-status")).to_have_text("processing")
    shot(page, "job-running")
    # The line the container prints after its sleep appears without a reload.
    expect(messages(page, "late line")).to_have_count(1, timeout=TIMEOUT_MS)
    expect(page.locator("#job-status")).to_have_text("success", timeout=TIMEOUT_MS)
    expect(page.locator("#stream-state")).to_have_text("(job ended)")
    # The type filter: a successful job has no warnings; every line it printed is info.
    page.select_option("#event-type", "warn")
    expect(page.locator("#events tr")).to_have_count(0)
    page.select_option("#event-type", "info")
    expect(messages(page, "late line")).to_have_count(1)
    types = page.locator("#events tr td:nth-child(2)").all_inner_texts()
    assert len(types) > 2 and set(types) == {"info"}, types
    page.select_option("#event-type", "")
    expect(messages(page, "late line")).to_have_count(1)


def newest_first(ids):
    return sorted(ids, key=int, reverse=True)


def check_list_and_filters(page):
    every = newest_first(list(JOBS.values()) + SPEC["children"])
    page.goto(SPEC["url"] + "#/")
    expect(page.locator("#count")).to_have_text(f"{len(every)} jobs")
    assert listed_ids(page) == every, listed_ids(page)
    row = page.locator(f'#jobs tr[data-id="{JOBS["failed"]}"] td')
    expect(row.nth(2)).to_have_text(SPEC["component"])
    expect(row.nth(4)).to_have_text("error")
    # The strip: the engine answers, the registered image that is not there is named.
    expect(page.locator("#engine")).to_have_text("up")
    expect(page.locator("#images")).to_have_text(
        "missing: keboola.ex-missing (local/jobq-ui-test-missing:0.0.1)"
    )
    expect(page.locator("#slots")).to_have_text("1/4", timeout=TIMEOUT_MS)
    shot(page, "list")

    # Keboola's search syntax.
    search(page, "status:error")
    expect(page.locator("#count")).to_have_text("1 job")
    assert listed_ids(page) == [JOBS["failed"]], listed_ids(page)
    assert "q=status%3Aerror" in page.url, page.url
    shot(page, "list-filtered")
    search(page, "status:error,success durationSeconds:>120")
    expect(page.locator("#count")).to_have_text("0 jobs")
    search(page, "durationSeconds:<=120 configId:ui-config")
    expect(page.locator("#count")).to_have_text("1 job")
    assert listed_ids(page) == [JOBS["debugged"]], listed_ids(page)
    search(page, "createdTime:<2000-01-01")
    expect(page.locator("#count")).to_have_text("0 jobs")
    search(page, "colour:red")
    expect(page.locator("#list-error")).to_contain_text('Unknown field "colour"; known: id, runId')
    search(page, "status error")
    expect(page.locator("#list-error")).to_have_text(
        'Cannot read "status": write field:value, like status:error or durationSeconds:>120.'
    )
    search(page, "")

    # The filter controls.
    page.select_option("#status", "success")
    succeeded = newest_first(
        [JOBS[name] for name in ["live", "debugged", "succeeded", "container"]] + SPEC["children"]
    )
    expect(page.locator("#count")).to_have_text(f"{len(succeeded)} jobs")
    assert listed_ids(page) == succeeded, listed_ids(page)
    page.fill("#config", "ui-config")
    page.click("#filters button[type=submit]")
    expect(page.locator("#count")).to_have_text("1 job")
    assert listed_ids(page) == [JOBS["debugged"]], listed_ids(page)
    page.goto(SPEC["url"] + "#/")
    expect(page.locator("#count")).to_have_text(f"{len(every)} jobs")
    page.select_option("#component", "keboola.ex-missing")
    expect(page.locator("#count")).to_have_text("0 jobs")
    page.select_option("#component", SPEC["component"])
    page.select_option("#since", "-1 hour")
    expect(page.locator("#count")).to_have_text(f"{len(every)} jobs")


def check_secrets_and_tables(page):
    page.goto(SPEC["url"] + f"#/jobs/{JOBS['succeeded']}")
    expect(page.locator("#job-status")).to_have_text("success")
    expect(fact(page, "Message")).to_have_text("Component processing finished.")
    expect(fact(page, "Image")).to_contain_text("local/jobq-fixture:1.0.0")
    request = page.locator("#request")
    expect(request).to_contain_text('"#password": "KBC::ProjectSecure')
    assert "pl41n-s3cret" not in page.content(), "a plaintext secret on the page"
    expect(page.locator("#output-tables li")).to_have_text(["out.c-ui.result (id, name)"])
    expect(page.locator("#input-tables")).to_have_text("InputNone.")
    expect(page.locator("#children")).to_have_text("None.")
    expect(page.locator("#archives")).to_have_text(
        'None: run the job in debug mode (mode "debug") to keep stage archives.'
    )
    shot(page, "job-succeeded")


def check_archives(page):
    debugged = JOBS["debugged"]
    page.goto(SPEC["url"] + f"#/jobs/{debugged}")
    expect(fact(page, "Configuration")).to_have_text("ui-config")
    expect(fact(page, "Mode")).to_have_text("debug")
    links = page.locator("#archives a")
    expect(links).to_have_text(["stage_0.zip", "stage_output.zip"])
    expect(page.locator("#replay")).to_have_text(
        f"jobq debug {debugged}\njobq replay {debugged} --stage 0"
    )
    shot(page, "job-debug")
    with page.expect_download() as download:
        links.nth(0).click()
    download = download.value
    assert download.suggested_filename == "stage_0.zip", download.suggested_filename
    path = os.path.join(SPEC["downloads"], "stage_0.zip")
    download.save_as(path)
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    assert config["parameters"] == {"print": ["debugging"]}, config


def check_children(page):
    container = JOBS["container"]
    page.goto(SPEC["url"] + f"#/jobs/{container}")
    expect(fact(page, "Type")).to_have_text("container")
    rows = page.locator("#children tbody tr")
    expect(rows).to_have_count(2)
    ids = rows.evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert ids == SPEC["children"], ids
    expect(rows.locator("td:nth-child(4)")).to_have_text(["success", "success"])
    # The tree's events: each row's printed line.
    expect(messages(page, "row first")).to_have_count(1)
    expect(messages(page, "row second")).to_have_count(1)
    shot(page, "job-children")
    run_id = fact(page, "Run ID").inner_text()
    rows.nth(0).locator("a").click()
    expect(page.locator("h1")).to_contain_text(f"Job {SPEC['children'][0]}")
    expect(fact(page, "Parent run ID")).to_have_text(run_id)
    expect(messages(page, "row first")).to_have_count(1)
    expect(messages(page, "row second")).to_have_count(0)


def check_kill(page):
    kill = JOBS["kill"]
    page.goto(SPEC["url"] + f"#/jobs/{kill}")
    expect(page.locator("#job-status")).to_have_text("processing")
    # Dismissed, the confirmation kills nothing.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#kill")
    desired = page.evaluate(
        f"() => fetch('api/jobs/{kill}').then(a => a.json()).then(job => job.desiredStatus)"
    )
    assert desired == "processing", desired
    expect(fact(page, "Status")).to_have_text("processing")
    asked = []

    def accept(dialog):
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click("#kill")
    expect(page.locator("#job-status")).to_have_text("terminated", timeout=TIMEOUT_MS)
    assert asked == [
        f"Kill job {kill} ({SPEC['component']})? A running container is stopped."
    ], asked
    expect(page.locator("#kill")).to_be_hidden()
    expect(fact(page, "Status")).to_have_text("terminated (asked: terminating)")
    expect(page.locator("#events tr td.message").last).to_have_text("Job termination requested.")
    shot(page, "job-killed")


def check_logout(page, context):
    page.goto(SPEC["url"] + "#/")
    page.click("#logout")
    expect(page.locator("#login-error")).to_have_text("Logged out.")
    expect(page.locator("#strip")).to_be_hidden()
    assert context.cookies() == [], context.cookies()
    status = page.evaluate("() => fetch('api/search/jobs').then(a => a.status)")
    assert status == 401, status


def main():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=SPEC["chromium"], headless=True, args=["--no-sandbox"]
        )
        context = browser.new_context(viewport={"width": 1280, "height": 800},
                                      accept_downloads=True)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        expect.set_options(timeout=10_000)
        check_login(page, context)
        check_live_events(page)
        check_list_and_filters(page)
        check_secrets_and_tables(page)
        check_archives(page)
        check_children(page)
        check_kill(page)
        check_logout(page, context)
        assert errors == [], errors
        browser.close()
    print("all pages checked")


if __name__ == "__main__":
    main()
