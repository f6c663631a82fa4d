"""The viewer (/ui) and the offline docs in a real browser: Debian's headless Chromium, driven by selenium through
chromedriver, against the real `stepwise serve` over a real corpus (a replay job with wrong answers, an answer
that cannot be read and bad dataset rows; and a replay job of a reasoning teacher, with thinking traces).

Every browser runs with the network switched off: all traffic goes to a proxy on 127.0.0.1:9, where nothing
listens, and only loopback is reached directly, so a page that needs a CDN shows it. Each test writes screenshots
of the pages it opens under its pytest temp folder and prints their paths (`pytest -s` shows them).

Chromium comes from `make test` (it installs `chromium` and `chromium-driver` with apt-get when they are missing
and it runs as root); the tests skip, saying so, only when they are still absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stepwise.api.auth import CSRF_COOKIE, SESSION_COOKIE, SESSION_TTL_S, Session
from tests.api.conftest import TOKEN, Server, start_server, stop
from tests.conftest import write_jsonl

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason=f"the browser tests need {CHROMIUM} and {CHROMEDRIVER} (Debian's chromium and chromium-driver): "
           f"`make test` installs them with apt-get when run as root, or `apt-get install chromium chromium-driver`")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is missing: pip install -e '.[test]'")

from selenium.common.exceptions import (  # noqa: E402  (after the skip when selenium is absent)
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service as ChromeService  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
# no network: everything through a proxy where nothing listens; loopback stays direct (Chromium's implicit bypass)
OFFLINE_FLAGS = ("--proxy-server=127.0.0.1:9",)
CDN_URL = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"  # what FastAPI's /docs loads
WAIT_S = 20
ARITH, THINK = "arith-replay", "think-replay"
UI_PAGES = ("/ui", "/ui/", f"/ui/jobs/{ARITH}", f"/ui/jobs/{ARITH}/records?reason=incorrect",
            f"/ui/jobs/{ARITH}/examples/q3", "/ui/static/viewer.js", "/ui/static/viewer.css", "/ui/static/jobs.html",
            "/ui/static/vendor/chart.umd.min.js", "/ui/nothing-here")


# ── the corpus and the server ──────────────────────────────────────────────────────────────────────────────────


def _problems() -> list[dict]:
    rows = [{"id": f"q{i}", "question": f"Tom has {i} apples and buys {i + 2} more. How many apples has he now?",
             "answer": 2 * i + 2} for i in range(1, 9)]
    return rows + [{"id": "bad-1", "answer": 3}, {"id": "bad-2", "question": ["not", "text"], "answer": 1}]


def _answers() -> list[dict]:
    """Two samples per problem: q3 and q6 split, q5 wrong twice, q7's second has no answer to read."""
    rows = []
    for i in range(1, 9):
        for s in range(2):
            said = 2 * i + 2 + ((i % 3 == 0 and s == 1) or i == 5)
            text = (f"{'He starts with' if s == 0 else 'Tom had'} {i} and buys {i + 2}, so {i} + {i + 2} = {said}. "
                    f"So the answer is {said}.")
            if i == 7 and s == 1:
                text = "I am not sure about this one."
            rows.append({"example_id": f"q{i}", "sample_idx": s, "text": text,
                         "usage": {"prompt_tokens": 300, "completion_tokens": 20 + s}})
    return rows


def _thoughts() -> list[dict]:
    """A reasoning teacher: a trace apart from the text; q4's and q8's second samples go wrong."""
    rows = []
    for i in range(1, 9):
        for s in range(2):
            said = 2 * i + 2 - (s == 1 and i % 4 == 0)
            trace = f"Let me think. {i} apples, then {i + 2} more. " + f"{i} + {i + 2} = {said}. " * (1 + i + s)
            rows.append({"example_id": f"q{i}", "sample_idx": s, "reasoning": trace,
                         "text": f"{'Adding' if s == 0 else 'Summing'}: {i} + {i + 2} = {said}. "
                                 f"So the answer is {said}.",
                         "usage": {"prompt_tokens": 200, "completion_tokens": 80 + s,
                                   "completion_tokens_details": {"reasoning_tokens": 60 + s}}})
    return rows


def build_corpus(folder: Path) -> Path:
    """Two finished jobs in a fresh corpus, run in this process with the Python API."""
    import stepwise

    data, corpus = folder / "data", folder / "corpus"
    data.mkdir()
    write_jsonl(data / "problems.jsonl", _problems())
    write_jsonl(data / "answers.jsonl", _answers())
    write_jsonl(data / "thoughts.jsonl", _thoughts())
    base = {"dataset": {"path": str(data / "problems.jsonl"), "id_field": "id", "question_field": "question",
                        "answer_field": "answer"},
            "task": "arithmetic", "prompt": "few_shot_cot", "sampling": {"n": 2}, "shard_size": 4,
            "cost": {"input_per_mtok": 2.5, "output_per_mtok": 10.0}}
    for job_id, path, model in ((ARITH, "answers.jsonl", "recorded-teacher"), (THINK, "thoughts.jsonl",
                                                                                "recorded-thinker")):
        summary = stepwise.run({**base, "job_id": job_id,
                                "teacher": {"backend": "replay", "path": str(data / path), "model": model}},
                               corpus=corpus)
        assert summary.status == "completed", summary
    return corpus


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("viewer")
    server = start_server(build_corpus(folder), folder / "server.log")
    yield server
    stop(server.proc)
    assert TOKEN not in (folder / "server.log").read_text(errors="replace")  # never logged


# ── the browser ────────────────────────────────────────────────────────────────────────────────────────────────


class Browser:
    """One headless Chromium with a fresh profile and no network but loopback; `shot` writes a screenshot."""

    def __init__(self, base_url: str, folder: Path):
        self.base_url, self.folder = base_url, folder
        self.downloads = folder / "downloads"
        self.downloads.mkdir(parents=True, exist_ok=True)
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*CHROMIUM_FLAGS, *OFFLINE_FLAGS, f"--user-data-dir={folder / 'profile'}",
                     "--window-size=1400,1000"):
            options.add_argument(flag)
        options.add_experimental_option("prefs", {"download.default_directory": str(self.downloads),
                                                  "download.prompt_for_download": False})
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = ChromeService(executable_path=str(CHROMEDRIVER), log_output=str(folder / "chromedriver.log"))
        self.driver = webdriver.Chrome(options=options, service=service)
        self.driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                                    {"behavior": "allow", "downloadPath": str(self.downloads)})

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def path(self) -> str:
        """The current URL without the origin."""
        return self.driver.current_url.removeprefix(self.base_url)

    def wait(self, condition: Callable[[Any], Any], what: str, timeout_s: float = WAIT_S) -> Any:
        try:
            return WebDriverWait(self.driver, timeout_s, poll_frequency=0.1,  # a page may be replaced meanwhile
                                 ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)) \
                .until(condition)
        except TimeoutException:
            self.shot(f"timeout-{int(time.time())}")
            raise AssertionError(f"waited {timeout_s} s for {what}; on {self.driver.current_url}: "
                                 f"{self.find('main').text[:500] if self.all('main') else ''}\n"
                                 f"console: {self.console()}") from None

    def loaded(self) -> str:
        """Wait until the page's script has filled it (its status line says something other than Loading…)."""
        return self.wait(lambda d: (t := d.find_element(By.ID, "status").text) and t != "Loading…" and t,
                         "the page to load")

    def find(self, css: str):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def js_async(self, script: str, *args: Any) -> Any:
        """Run `script` with `done` as its callback and return what it passes to it."""
        return self.driver.execute_async_script("const done = arguments[arguments.length - 1];\n" + script, *args)

    def console(self) -> list[str]:
        """The console's errors since the last call (JavaScript errors, refused resources, CSP violations)."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def resources(self) -> list[str]:
        """Every URL this page loaded, the page included."""
        return self.js("return [location.href, ...performance.getEntriesByType('resource').map(e => e.name)]")

    def shot(self, name: str, whole: bool = True) -> Path:
        """A screenshot of the page (`whole`: the window grown to the page's height first), its path printed."""
        height = self.js("return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)")
        self.driver.set_window_size(1400, min(max(int(height) + 100, 1000), 4000) if whole else 1000)
        path = self.folder / f"{name}.png"
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(1400, 1000)
        print(f"screenshot: {path}")
        return path

    def sign_in(self, token: str = TOKEN, then: str = "/ui") -> None:
        self.open(then)
        self.wait(lambda d: "/ui/login" in d.current_url, "the sign-in page")
        self.find("#token").send_keys(token)
        self.find("form button[type=submit]").click()

    def cookies(self) -> dict[str, dict]:
        return {c["name"]: c for c in self.driver.get_cookies()}

    def quit(self) -> None:
        self.driver.quit()


@pytest.fixture
def browser(viewer: Server, tmp_path: Path) -> Iterator[Browser]:
    b = Browser(viewer.url, tmp_path)
    yield b
    b.quit()


def signed_in(browser: Browser, then: str = "/ui") -> Browser:
    browser.sign_in(then=then)
    browser.wait(lambda d: d.current_url.removeprefix(browser.base_url) == then, f"{then} after signing in")
    return browser


def api(viewer: Server, path: str) -> Any:
    reply = viewer.get(path)
    assert reply.status == 200, reply.body
    return reply.json()


def click_bar(browser: Browser, canvas_id: str, label: str, dataset: int = 0) -> None:
    """Click the middle of one bar of a Chart.js chart, found by its label, as a user would."""
    x, y, width, height = browser.js("""
        const canvas = document.getElementById(arguments[0]);
        const chart = Chart.getChart(canvas);
        const bar = chart.getDatasetMeta(arguments[2]).data[chart.data.labels.indexOf(arguments[1])];
        const horizontal = chart.options.indexAxis === 'y';
        const box = canvas.getBoundingClientRect();
        return [horizontal ? (bar.x + bar.base) / 2 : bar.x, horizontal ? bar.y : (bar.y + bar.base) / 2,
                box.width, box.height];""", canvas_id, label, dataset)
    canvas = browser.find(f"#{canvas_id}")
    browser.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    ActionChains(browser.driver).move_to_element_with_offset(canvas, int(x - width / 2), int(y - height / 2)) \
        .click().perform()


def table_rows(browser: Browser, css: str = "#records tbody tr") -> list[list[str]]:
    """The cells' text, read in one go (the page may redraw the table meanwhile)."""
    return browser.js("return [...document.querySelectorAll(arguments[0])]"
                      ".map(tr => [...tr.cells].map(td => td.innerText.trim()))", css)


def column(browser: Browser, heading: str) -> list[str]:
    """One column of the records table, by its heading."""
    return browser.js("""const heads = [...document.querySelectorAll('#records thead th')].map(th => th.innerText.trim());
        const i = heads.indexOf(arguments[0]);
        return i < 0 ? null : [...document.querySelectorAll('#records tbody tr')].map(tr => tr.cells[i].innerText.trim());""",
                      heading)


# ── without a session: nothing ─────────────────────────────────────────────────────────────────────────────────


def _no_redirects() -> urllib.request.OpenerDirector:
    class Keep(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    return urllib.request.build_opener(Keep)


def raw(viewer: Server, method: str, path: str, headers: dict[str, str] | None = None,
        body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request without the bearer header and without following redirects."""
    req = urllib.request.Request(viewer.url + path, data=body, method=method, headers=headers or {})
    try:
        with _no_redirects().open(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_without_a_session_every_ui_page_redirects_to_sign_in_and_serves_no_data(viewer, browser):
    expired = Session.issue(TOKEN, now=time.time() - SESSION_TTL_S - 5)
    other_server = Session.issue("another-servers-token")
    for cookie in (None, f"{SESSION_COOKIE}=nonsense", f"{SESSION_COOKIE}={expired.cookie}",
                   f"{SESSION_COOKIE}={other_server.cookie}", f"{SESSION_COOKIE}={TOKEN}"):
        headers = {"Cookie": cookie} if cookie else {}
        for path in UI_PAGES:
            status, answer, body = raw(viewer, "GET", path, headers)
            assert status == 303 and answer["location"].startswith("/ui/login?next=%2Fui"), (path, cookie, status)
            assert body == b""  # no data, no page
        for path in ("/v1/jobs", f"/v1/jobs/{ARITH}/records", f"/v1/jobs/{ARITH}/export?format=dsbs"):
            status, _, body = raw(viewer, "GET", path, headers)
            assert status == 401 and b"recorded-teacher" not in body and b"apples" not in body, (path, cookie)
        status, _, _ = raw(viewer, "POST", "/v1/query", {**headers, "Content-Type": "application/json"},
                           json.dumps({"sql": "SELECT input FROM records"}).encode())
        assert status == 401
    # open without the token: the sign-in page, its stylesheet, the docs and their assets; nothing else
    for path in ("/ui/login", "/ui/static/base.css", "/docs", "/redoc", "/openapi.json", "/docs/static/swagger-ui.css"):
        assert raw(viewer, "GET", path)[0] == 200, path

    browser.open(f"/ui/jobs/{ARITH}/records?reason=incorrect")
    browser.wait(lambda d: "/ui/login" in d.current_url, "the sign-in page")
    assert browser.driver.title.startswith("Sign in")
    assert "apples" not in browser.driver.page_source and "recorded-teacher" not in browser.driver.page_source
    browser.shot("sign-in")


def test_a_wrong_token_is_refused_and_the_session_cookie_is_not_the_token(viewer, browser):
    browser.sign_in(token="not-the-token")
    assert browser.wait(lambda d: d.find_element(By.CSS_SELECTOR, ".error").text, "the error message")
    assert "not-the-token" not in browser.driver.page_source  # never echoed
    assert SESSION_COOKIE not in browser.cookies()
    browser.shot("sign-in-refused")

    browser.find("#token").send_keys(TOKEN)
    browser.find("form button[type=submit]").click()
    browser.wait(lambda d: d.current_url.endswith("/ui"), "the jobs page")
    cookies = browser.cookies()
    session, csrf = cookies[SESSION_COOKIE], cookies[CSRF_COOKIE]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/"
    assert not csrf["httpOnly"] and csrf["sameSite"] == "Strict"
    assert TOKEN not in session["value"] and TOKEN not in csrf["value"]
    assert not session["secure"]  # plain http on loopback; over https the cookie is Secure
    assert SESSION_COOKIE not in browser.js("return document.cookie")  # scripts cannot read it


# ── signed in: jobs, a job, its records, an example, an export ────────────────────────────────────────────────


def test_the_jobs_page_lists_every_job_with_its_figures(viewer, browser):
    signed_in(browser)
    browser.loaded()
    rows = {r[0]: r for r in table_rows(browser, "#jobs tbody tr")}
    assert set(rows) == {ARITH, THINK}
    arith = api(viewer, f"/v1/jobs/{ARITH}")
    job, status, progress, accepted, rejected, cost, tokens, accuracy, teacher = rows[ARITH]
    assert (status, accepted, rejected) == ("completed", str(arith["n_accepted"]), str(arith["n_rejected"]))
    assert progress.startswith("100 %") and teacher == "recorded-teacher"
    assert tokens == f"{arith['tokens_in']:,} / {arith['tokens_out']:,}"
    assert accuracy == f"{100 * arith['teacher_accuracy']:.1f} %" and cost.startswith("$0.0")
    assert browser.console() == []
    assert all(url.startswith(viewer.url) for url in browser.resources())  # nothing from elsewhere
    browser.shot("jobs")


def test_the_jobs_page_refreshes_itself_while_a_job_runs(viewer, browser, tmp_path):
    # a second server over the same corpus, with a state folder of its own holding one submitted job whose process
    # (a stand-in that only sleeps) runs until the test ends it: the job is `starting` while it lives
    state = tmp_path / "state"
    state.mkdir()
    spec = state / "live-1.spec.json"
    spec.write_text(json.dumps({"job_id": "live-1"}), encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(spec)])
    (state / "live-1.pid").write_text(str(process.pid), encoding="utf-8")
    live = start_server(viewer.corpus, tmp_path / "live.log", TOKEN, "--state-dir", str(state))
    try:
        browser.base_url = live.url
        signed_in(browser)
        browser.wait(lambda d: "refreshed every" in browser.loaded(), "the page to say it refreshes")
        assert {row[0]: row[1] for row in table_rows(browser, "#jobs tbody tr")}["live-1"] == "starting"
        browser.shot("jobs-live")
        process.kill()
        process.wait()
        browser.wait(lambda d: {r[0]: r[1] for r in table_rows(browser, "#jobs tbody tr")}["live-1"] == "failed",
                     "the row to change without a reload", timeout_s=10)
        browser.wait(lambda d: "refreshed every" not in browser.loaded(), "the refreshing to stop")
    finally:
        process.kill()
        stop(live.proc)


def test_a_job_shows_its_charts_and_a_bar_opens_the_records_it_counts(viewer, browser):
    signed_in(browser, f"/ui/jobs/{ARITH}")
    browser.loaded()
    job = api(viewer, f"/v1/jobs/{ARITH}")
    figures = dict(zip([dt.text for dt in browser.all("#figures dt")], [dd.text for dd in browser.all("#figures dd")]))
    assert figures["Accepted"] == str(job["n_accepted"]) and figures["Rejected"] == str(job["n_rejected"])
    assert figures["Teacher"] == "replay · recorded-teacher"
    drawn = browser.js("""return ['c-reasons', 'c-agreement', 'c-lengths', 'c-labels', 'c-time'].map(id => {
        const chart = Chart.getChart(document.getElementById(id));
        return [id, chart ? chart.data.labels.length : -1, chart ? chart.data.datasets.length : -1]; })""")
    assert all(n_labels > 0 and n_sets > 0 for _, n_labels, n_sets in drawn), drawn
    reasons = browser.js("const c = Chart.getChart(document.getElementById('c-reasons'));"
                         "return Object.fromEntries(c.data.labels.map((l, i) => [l, c.data.datasets[0].data[i]]))")
    assert reasons == job["reject_reasons"] and {"incorrect", "bad_row", "no_answer"} <= set(reasons)
    assert browser.console() == []
    assert all(url.startswith(viewer.url) for url in browser.resources())
    browser.shot("job")

    click_bar(browser, "c-reasons", "incorrect")
    browser.wait(lambda d: "/records?" in d.current_url, "the records page")
    assert browser.path() == f"/ui/jobs/{ARITH}/records?accepted=false&reason=incorrect"
    browser.loaded()
    assert set(column(browser, "Reject reason")) == {"incorrect"}
    assert len(table_rows(browser)) == job["reject_reasons"]["incorrect"]
    assert Select(browser.find("#f-reason")).first_selected_option.text == "incorrect"
    browser.shot("records-incorrect")

    # an agreement bar opens the records of that agreement; a label's "wrong" part, the wrong records of that label
    for canvas, label, dataset, target, expect in (
            ("c-agreement", "0.50", 0, "min_agreement=0.495&max_agreement=0.505", ("Agreement", {"0.50"}, 4)),
            ("c-labels", "14", 1, "gold_label=14&correct=false", ("Gold", {"14"}, 1))):
        browser.driver.back()
        browser.wait(lambda d: d.current_url.endswith(f"/ui/jobs/{ARITH}"), "the job page again")
        browser.loaded()
        click_bar(browser, canvas, label, dataset)
        browser.wait(lambda d: "/records?" in d.current_url, "the records page")
        assert browser.path() == f"/ui/jobs/{ARITH}/records?{target}"
        browser.loaded()
        heading, values, n = expect
        assert set(column(browser, heading)) == values and len(table_rows(browser)) == n, table_rows(browser)


def test_records_filter_by_reason_search_sort_and_link_to_an_example(viewer, browser):
    signed_in(browser, f"/ui/jobs/{ARITH}/records")
    browser.loaded()
    everything = api(viewer, f"/v1/jobs/{ARITH}/records?limit=1")["total"]
    assert browser.find("#page-info").text == f"1–{everything} of {everything}"

    Select(browser.find("#f-reason")).select_by_visible_text("bad_row")
    browser.find("#filters button[type=submit]").click()
    browser.wait(lambda d: "reason=bad_row" in d.current_url, "the filter in the URL")
    browser.wait(lambda d: set(column(browser, "Reject reason")) == {"bad_row"}, "only bad rows")
    assert sorted(column(browser, "Example")) == ["bad-1", "bad-2"]

    browser.find("#f-clear").click()
    browser.wait(lambda d: len(table_rows(browser)) == everything, "every record again")
    browser.find("#f-q").send_keys("not sure")
    browser.find("#filters button[type=submit]").click()
    browser.wait(lambda d: column(browser, "Reject reason") == ["no_answer"], "the one record saying 'not sure'")

    browser.find("#f-clear").click()
    browser.wait(lambda d: len(table_rows(browser)) == everything, "every record again")
    head = browser.find("#records th[data-sort=agreement] button")
    head.click()
    browser.wait(lambda d: "sort=agreement" in d.current_url and "order=asc" in d.current_url, "ascending")
    browser.wait(lambda d: browser.find("#records th[data-sort=agreement]").get_attribute("aria-sort") == "ascending",
                 "the heading to say so")
    browser.find("#records th[data-sort=agreement] button").click()
    browser.wait(lambda d: "order=desc" in d.current_url, "descending")
    browser.loaded()
    values = [float(v) for v in column(browser, "Agreement") if v != "–"]
    assert values == sorted(values, reverse=True) and values[0] > values[-1]
    browser.shot("records-sorted")

    link = next(a for a in browser.all("#records tbody a") if a.text == "q3")
    link.click()
    browser.wait(lambda d: d.current_url.endswith(f"/ui/jobs/{ARITH}/examples/q3"), "the example page")
    browser.loaded()
    assert len(browser.all(".sample")) == 2


def test_an_example_shows_its_samples_side_by_side_with_the_answer_marked_and_the_trace_folded(viewer, browser):
    signed_in(browser, f"/ui/jobs/{THINK}/examples/q4")
    browser.loaded()
    example = api(viewer, f"/v1/jobs/{THINK}/examples/q4")
    cards = browser.all(".sample")
    assert len(cards) == len(example["samples"]) == 2
    first, second = (card.rect for card in cards)
    assert first["y"] == second["y"] and second["x"] >= first["x"] + first["width"]  # side by side
    assert browser.find("#input").text == example["input"].strip()
    figures = dict(zip([dt.text for dt in browser.all("#figures dt")], [dd.text for dd in browser.all("#figures dd")]))
    assert (figures["Gold label"], figures["Consensus"]) == ("10", example["consensus_label"])
    assert figures["Agreement"] == f"{example['agreement']:.2f}"
    assert example["prompt"] and len(browser.all("#prompt .message")) == len(example["prompt"])

    wrong = next(c for c in cards if c.get_attribute("data-sample") == "1")
    assert "rejected: incorrect" in wrong.text and "Label 9 vs gold 10" in wrong.text
    sample = next(s for s in example["samples"] if s["sample_idx"] == 1)
    start, end = sample["answer_span"]
    assert wrong.find_element(By.CSS_SELECTOR, ".completion mark").text == sample["completion"][start:end] == "9"
    trace = wrong.find_element(By.CSS_SELECTOR, "details.trace")
    assert trace.get_attribute("open") is None and not trace.find_element(By.TAG_NAME, "pre").is_displayed()
    browser.shot("example-folded")
    trace.find_element(By.TAG_NAME, "summary").click()
    browser.wait(lambda d: trace.find_element(By.TAG_NAME, "pre").is_displayed(), "the trace to open")
    assert trace.find_element(By.TAG_NAME, "pre").text == sample["reasoning"].strip()
    assert browser.console() == []
    browser.find("#prompt-box summary").click()
    browser.shot("example-trace-and-prompt-open")


def test_every_export_format_has_a_button_and_a_download_arrives(viewer, browser):
    signed_in(browser, f"/ui/jobs/{ARITH}")
    browser.loaded()
    schema = json.loads(raw(viewer, "GET", "/openapi.json")[2])
    (param,) = [p for p in schema["paths"]["/v1/jobs/{job_id}/export"]["get"]["parameters"] if p["name"] == "format"]
    browser.wait(lambda d: len(browser.all("#exports a")) > 0, "the export buttons")
    offered = [a.get_attribute("data-format") for a in browser.all("#exports a")]
    assert offered == param["schema"]["enum"]

    browser.find("#exports a[data-format=finetune_cot]").click()
    target = browser.downloads / f"{ARITH}.finetune_cot.jsonl"
    browser.wait(lambda d: target.exists() and not list(browser.downloads.glob("*.crdownload")), "the download")
    lines = target.read_text().splitlines()
    assert len(lines) == api(viewer, f"/v1/jobs/{ARITH}")["n_accepted"]
    assert all(json.loads(line) for line in lines)
    print(f"download: {target}")


def test_a_state_change_with_the_cookie_but_without_the_csrf_header_is_refused(viewer, browser):
    signed_in(browser)
    browser.loaded()
    query = json.dumps({"sql": "SELECT count(*) AS n FROM records"})
    script = """fetch('/v1/query', {method: 'POST', credentials: 'same-origin', headers: arguments[0], body: arguments[1]})
                .then(async r => done([r.status, await r.text()]), e => done([0, String(e)]));"""
    status, body = browser.js_async(script, {"Content-Type": "application/json"}, query)
    assert status == 403 and json.loads(body)["error"]["type"] == "CsrfError"
    csrf = browser.cookies()[CSRF_COOKIE]["value"]
    status, body = browser.js_async(script, {"Content-Type": "application/json", "X-Stepwise-CSRF": "forged"}, query)
    assert status == 403
    status, body = browser.js_async(script, {"Content-Type": "application/json", "X-Stepwise-CSRF": csrf}, query)
    assert status == 200 and json.loads(body)["rows"] == [{"n": 36}]

    # the same requests as another site's page would make them: with the cookies, the header even, but its origin
    cookies = "; ".join(f"{c['name']}={c['value']}" for c in browser.driver.get_cookies())
    base = {"Cookie": cookies, "Content-Type": "application/json"}
    for extra in ({}, {"Origin": "http://evil.example", "X-Stepwise-CSRF": csrf},
                  {"Sec-Fetch-Site": "cross-site", "X-Stepwise-CSRF": csrf},
                  {"Origin": "null", "X-Stepwise-CSRF": csrf}):
        status, _, body = raw(viewer, "POST", "/v1/query", {**base, **extra}, query.encode())
        assert status == 403 and json.loads(body)["error"]["type"] == "CsrfError", (extra, body)
        status, _, body = raw(viewer, "POST", f"/v1/jobs/{ARITH}/cancel", {**base, **extra})
        assert status == 403, (extra, body)
    status, _, _ = raw(viewer, "POST", "/ui/login", {"Origin": "http://evil.example",
                                                     "Content-Type": "application/x-www-form-urlencoded"},
                       f"token={TOKEN}".encode())
    assert status == 403  # no other site signs this browser in either
    status, _, body = raw(viewer, "POST", "/v1/query", {**base, "X-Stepwise-CSRF": csrf,
                                                        "Origin": viewer.url, "Sec-Fetch-Site": "same-origin"},
                          query.encode())
    assert status == 200, body


def test_signing_out_ends_the_session(viewer, browser):
    signed_in(browser, f"/ui/jobs/{ARITH}")
    browser.loaded()
    browser.find("#logout").click()
    browser.wait(lambda d: "/ui/login" in d.current_url, "the sign-in page")
    assert SESSION_COOKIE not in browser.cookies()
    browser.open(f"/ui/jobs/{ARITH}")
    browser.wait(lambda d: "/ui/login" in d.current_url, "the sign-in page again")


def test_a_server_without_a_token_shows_the_viewer_without_signing_in(viewer, browser, tmp_path):
    open_server = start_server(viewer.corpus, tmp_path / "open.log", token=None)
    try:
        status, headers, _ = raw(open_server, "GET", "/ui/login?next=%2Fui%2Fjobs%2Farith-replay")
        assert status == 303 and headers["location"] == f"/ui/jobs/{ARITH}"
        browser.base_url = open_server.url
        browser.open("/ui")
        browser.loaded()
        assert {row[0] for row in table_rows(browser, "#jobs tbody tr")} == {ARITH, THINK}
        assert not browser.find("#logout").is_displayed()  # no session to end
    finally:
        stop(open_server.proc)


# ── the docs, offline ──────────────────────────────────────────────────────────────────────────────────────────


def test_docs_and_redoc_render_the_schema_with_the_network_off(viewer, browser):
    schema = json.loads(raw(viewer, "GET", "/openapi.json")[2])
    operations = sum(len(methods) for methods in schema["paths"].values())
    browser.open("/docs")
    browser.wait(lambda d: len(browser.all(".opblock")) == operations, f"Swagger UI's {operations} operations")
    assert all(url.startswith(viewer.url) for url in browser.resources()), browser.resources()
    assert browser.console() == []
    browser.shot("docs", whole=False)
    assert browser.js_async("fetch(arguments[0], {mode: 'no-cors'}).then(() => done('reached'), "
                            "e => done('failed: ' + e))", CDN_URL).startswith("failed")  # the network is off
    assert any("ERR_PROXY_CONNECTION_FAILED" in message for message in browser.console())

    browser.open("/redoc")
    browser.wait(lambda d: len(browser.all("[data-section-id^='tag/']")) > 0 and "Submit" in browser.find("body").text,
                 "ReDoc's operations")
    # ReDoc's sidebar asks its CDN for a logo: the page's policy blocks it before a request leaves, and says so
    elsewhere = [url for url in browser.resources() if not url.startswith(viewer.url)]
    refusals = browser.console()
    assert elsewhere == ["https://cdn.redoc.ly/redoc/logo-mini.svg"], elsewhere
    assert len(refusals) == 1 and elsewhere[0] in refusals[0] and "Content Security Policy" in refusals[0] \
        and "blocked" in refusals[0], refusals
    browser.shot("redoc", whole=False)
