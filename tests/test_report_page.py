"""The report page, rendered from reports in Azurite's results container and loaded in a real
headless Chromium (Debian's, installed by `make setup`), driven by Playwright (no browser of its own)."""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import azure.functions as func
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

import function_app
from devkit.local_stack import LocalStack
from shared import report_page
from shared.cli import main
from shared.report import Mode, ModelReport, RunReport, RunStatus
from shared.report_page import (
    BINS,
    PAGE_CSP,
    cell_status,
    histogram,
    load_page_data,
    page_response,
    write_report_page,
)
from shared.storage import Results
from shared.storage.page import REPORT_PAGE
from tests.support import fire_timer, reports, results

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Without the networking flags Chromium reaches for Google's hosts at start; the sandbox needs a non-root user.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# `make screenshot` sets this to docs/report-page.png to refresh the README's picture.
SCREENSHOT = os.environ.get("REPORT_PAGE_SCREENSHOT")
SCRIPT = "<script>window.__ran = 1</script>"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), (
        f"{CHROMIUM} is missing: `make setup` installs Debian's chromium"
    )
    with sync_playwright() as playwright:
        # Playwright gives each launch a fresh, empty profile.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _run(
    store: Results,
    run_id: str,
    mode: Mode,
    round_number: int | None,
    lines: list[dict],
    status: RunStatus = RunStatus.SUCCEEDED,
    reason: str | None = None,
) -> None:
    """Store a report as the app writes it, then give its lines what the models' entries say.

    Statuses and fields this version does not have yet (`gated`, `skipped`, `benchmark_corr`) are
    set in the JSON, as a newer app would write them.
    """
    report = RunReport(
        run_id,
        mode,
        "2026-11-27T12:00:00+00:00",
        status,
        reason=reason,
        round_number=round_number,
        models=[ModelReport(line["name"]) for line in lines],
    )
    raw = json.loads(report.to_json())
    for model, line in zip(raw["models"], lines, strict=True):
        model.update(line)
        if "csv" in model:
            model["predictions_blob"] = store.archive.write(
                round_number, line["name"], model.pop("csv")
            )
    store.runs.write_report(run_id, json.dumps(raw))


def _csv(values: list[float]) -> str:
    return "id,prediction\n" + "".join(f"n{i},{v}\n" for i, v in enumerate(values))


ALPHA_PREDICTIONS = [i / 100 for i in range(100)]  # 5 in each bin
BETA_PREDICTIONS = [0.5] * 30 + [0.97] * 10


@pytest.fixture
def fixture_reports(stack: LocalStack) -> Results:
    """Five runs over rounds 1200-1202 of three models, with every kind of cell."""
    store = results(stack)
    _run(
        store,
        "20261124T120000000000Z-scheduled-aaaa0001",
        Mode.SCHEDULED,
        1200,
        [
            {"name": "alpha", "status": "submitted", "benchmark_corr": 0.52},
            {"name": "beta", "status": "failed", "error": f"model 'beta': {SCRIPT} & more"},
            {"name": "gamma", "status": "mystery_status"},
        ],
        RunStatus.FAILED,
        "1 of 3 models failed: beta",
    )
    _run(
        store,
        "20261125T110000000000Z-test-aaaa0002",
        Mode.TEST,
        1201,
        [
            {"name": "alpha", "status": "validated", "benchmark_corr": 0.50},
            {"name": "beta", "status": "validated"},
            {"name": "gamma", "status": "validated"},
        ],
    )
    _run(
        store,
        "20261125T120000000000Z-scheduled-aaaa0003",
        Mode.SCHEDULED,
        1201,
        [
            {
                "name": "alpha",
                "status": "gated",
                "benchmark_corr": 0.01,
                "error": "correlation with the benchmark fell from 0.52 to 0.01: were the model's features changed?",
            },
            {"name": "beta", "status": "submitted", "benchmark_corr": 0.6},
            {"name": "gamma", "status": "skipped", "benchmark_corr": None},
        ],
    )
    _run(
        store,
        "20261126T110000000000Z-scheduled-aaaa0004",
        Mode.SCHEDULED,
        None,
        [],
        RunStatus.FAILED,
        f"the round could not be had {SCRIPT}",
    )
    _run(
        store,
        "20261126T120000000000Z-scheduled-aaaa0005",
        Mode.SCHEDULED,
        1202,
        [
            {
                "name": "alpha",
                "status": "submitted",
                "benchmark_corr": 0.49,
                "csv": _csv(ALPHA_PREDICTIONS),
            },
            {"name": "beta", "status": "submitted", "csv": _csv(BETA_PREDICTIONS)},
            {
                "name": "gamma",
                "status": "failed",
                "error": "model 'gamma': the model file is missing",
                "output": ["loading gamma.pkl", SCRIPT],
            },
        ],
        RunStatus.FAILED,
        "1 of 3 models failed: gamma",
    )
    return store


LABELS = {"validated": "validated (test)", "already_submitted": "already submitted"}
EXPECTED_GRID = {
    "1202": {"alpha": "submitted", "beta": "submitted", "gamma": "failed"},
    "1201": {"alpha": "gated", "beta": "submitted", "gamma": "skipped"},
    "1200": {"alpha": "submitted", "beta": "failed", "gamma": "mystery_status"},
}


def _open(browser: Browser, html: str, tmp_path: Path) -> tuple[Page, list[str]]:
    """Load the page from a file, as a downloaded copy is opened; returns the page and what went wrong."""
    path = tmp_path / "index.html"
    path.write_text(html, encoding="utf-8")
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console {message.type}: {message.text}")
            if message.type in ("error", "warning")
            else None
        ),
    )
    page.on(
        "request",
        lambda request: (
            problems.append(f"fetched {request.url}") if request.url != path.as_uri() else None
        ),
    )
    page.goto(path.as_uri())
    return page, problems


def test_the_page_shows_the_runs_rounds_and_models_in_a_real_browser(
    browser: Browser,
    stack: LocalStack,
    fixture_reports: Results,
    tmp_path: Path,
) -> None:
    assert write_report_page(fixture_reports) == REPORT_PAGE
    html = fixture_reports.page.read()
    assert html is not None
    page, problems = _open(browser, html, tmp_path)

    assert page.eval_on_selector_all(
        "#grid thead th", "cells => cells.map(c => c.textContent)"
    ) == ["round", "alpha", "beta", "gamma"]
    cells = page.eval_on_selector_all(
        "#grid td",
        "cells => cells.map(c => [c.dataset.round, c.dataset.model, c.dataset.status, c.textContent])",
    )
    grid: dict[str, dict[str, str]] = {}
    for round_number, model, status, text in cells:
        grid.setdefault(round_number, {})[model] = status
        assert text == LABELS.get(status, status)
    assert grid == EXPECTED_GRID
    assert list(grid) == ["1202", "1201", "1200"]  # newest first

    # Each run's error is in its cell's tooltip, as text; the page holds no script and none ran.
    beta_1200 = page.get_attribute('#grid td[data-round="1200"][data-model="beta"]', "title")
    assert (
        f"20261124T120000000000Z-scheduled-aaaa0001 (scheduled): failed: model 'beta': {SCRIPT} & more"
        == beta_1200
    )
    alpha_1201 = page.get_attribute('#grid td[data-round="1201"][data-model="alpha"]', "title")
    assert alpha_1201.splitlines() == [
        "20261125T110000000000Z-test-aaaa0002 (test): validated (test)",
        (
            "20261125T120000000000Z-scheduled-aaaa0003 (scheduled): gated: correlation with the benchmark fell "
            "from 0.52 to 0.01: were the model's features changed?"
        ),
    ]
    # A failed model's last printed lines follow its error, as text too.
    gamma_1202 = page.get_attribute('#grid td[data-round="1202"][data-model="gamma"]', "title")
    assert gamma_1202.splitlines() == [
        "20261126T120000000000Z-scheduled-aaaa0005 (scheduled): failed: model 'gamma': the model file is missing",
        "  | loading gamma.pkl",
        f"  | {SCRIPT}",
    ]
    assert f"the round could not be had {SCRIPT}" in page.inner_text("#runs")
    assert page.evaluate("document.scripts.length") == 0 and page.evaluate("window.__ran") is None

    # Benchmark correlation: a line chart where there is any, "no data" where there is none.
    assert page.eval_on_selector_all(
        "figure.corr svg circle", "cs => cs.map(c => c.textContent)"
    ) == ["round 1200: 0.520", "round 1201: 0.010", "round 1202: 0.490", "round 1201: 0.600"]
    assert page.locator('figure.corr[data-model="alpha"] svg polyline').count() == 1
    assert page.inner_text('figure.corr[data-model="gamma"]').endswith("no data")

    # The latest run's histograms: BINS bars per model that has predictions.
    bars = page.eval_on_selector_all(
        'figure.hist[data-model="beta"] svg rect',
        "rs => rs.map(r => r.querySelector('title').textContent)",
    )
    assert len(bars) == BINS and bars[10] == "0.50–0.55: 30" and bars[19] == "0.95–1.00: 10"
    assert page.locator('figure.hist[data-model="alpha"] svg rect').count() == BINS
    assert "no predictions (failed)" in page.inner_text('figure.hist[data-model="gamma"]')
    assert "20261126T120000000000Z-scheduled-aaaa0005" in page.inner_text("body")

    shot = page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert shot.startswith(b"\x89PNG")
    if SCREENSHOT:
        _save_small_png(shot, Path(SCREENSHOT))
    page.close()
    assert problems == []


def _save_small_png(png: bytes, target: Path) -> None:
    """The screenshot in 64 colours, a third of its size: the page has few colours, the README a budget."""
    # Pillow comes with catboost's matplotlib; only `make screenshot` needs it here.
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        image.convert("RGB").quantize(colors=64).save(target, optimize=True)


def test_a_page_with_no_runs_says_so_in_a_real_browser(
    browser: Browser, stack: LocalStack, tmp_path: Path
) -> None:
    store = results(stack)
    write_report_page(store)
    page, problems = _open(browser, store.page.read() or "", tmp_path)
    assert "No run has reached a round yet." in page.inner_text("body")
    assert page.locator("#grid").count() == 0
    page.close()
    assert problems == []


def _get_report() -> func.HttpResponse:
    request = func.HttpRequest("GET", "/api/report", body=b"")
    return function_app.report.build().get_user_function()(request)


def test_get_api_report_answers_the_stored_page_or_makes_one(
    fixture_reports: Results,
    stack: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in stack.environ(tmp_path / "work").items():
        monkeypatch.setenv(name, value)
    made = _get_report()  # none stored yet: made for this request, not stored
    assert made.status_code == 200 and made.mimetype == "text/html"
    assert 'data-round="1202"' in made.get_body().decode()
    assert fixture_reports.page.read() is None

    assert fixture_reports.page.write_if_unchanged("<!DOCTYPE html><p>stored</p>", None)
    stored = _get_report()
    assert stored.status_code == 200 and stored.get_body() == b"<!DOCTYPE html><p>stored</p>"
    for answer in (made, stored):
        assert_security_headers(answer)


def assert_security_headers(answer: func.HttpResponse) -> None:
    # The page's meta CSP is only read once the browser parses it as HTML: the headers come first.
    assert answer.headers["Content-Security-Policy"] == PAGE_CSP
    assert "default-src 'none'" in PAGE_CSP
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_get_api_report_sends_security_headers_with_an_error_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("MODELS_STORAGE_CONNECTION_STRING", "MODELS_STORAGE_ACCOUNT_URL"):
        monkeypatch.delenv(name, raising=False)
    answer = _get_report()
    assert answer.status_code == 500
    assert_security_headers(answer)


def test_get_api_report_says_what_is_wrong_when_storage_is_not_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("MODELS_STORAGE_CONNECTION_STRING", "MODELS_STORAGE_ACCOUNT_URL"):
        monkeypatch.delenv(name, raising=False)
    status, content_type, body = page_response(
        {"NUMERAI_PUBLIC_ID": "x", "NUMERAI_SECRET_KEY": "y"}
    )
    assert status == 500 and content_type == "text/plain"
    assert "MODELS_STORAGE_CONNECTION_STRING" in body


def test_the_route_is_key_protected() -> None:
    # Not app.get_functions(): the app indexes its functions once, and other tests may have.
    [trigger] = [b for b in function_app.report.build().get_bindings() if b.type == "httpTrigger"]
    assert trigger.auth_level == func.AuthLevel.FUNCTION and [
        str(m.value) for m in trigger.methods
    ] == ["GET"]


def test_a_scheduled_run_writes_the_page(deployed: LocalStack) -> None:
    fire_timer()
    [report] = reports(deployed)
    html = results(deployed).page.read()
    assert html is not None and f'data-round="{report["round_number"]}"' in html
    assert re.search(r'data-model="demo_onnx" data-status="submitted"', html)


def test_a_report_that_is_not_a_run_report_is_named_and_left_out(stack: LocalStack) -> None:
    store = results(stack)
    store.runs.write_report("20261126T120000000000Z-scheduled-bbbb0001", "not json")
    _run(
        store,
        "20261126T130000000000Z-test-bbbb0002",
        Mode.TEST,
        7,
        [{"name": "alpha", "status": "validated"}],
    )
    write_report_page(store)
    html = store.page.read() or ""
    assert (
        "report &#x27;reports/20261126T120000000000Z-scheduled-bbbb0001.json&#x27; is not a run report"
        in html
    )
    assert 'data-model="alpha" data-status="validated"' in html


def test_a_cell_shows_what_became_of_the_submission_whatever_the_order_of_the_runs() -> None:
    assert cell_status(["failed", "submitted"]) == "submitted"
    assert (
        cell_status(["validated", "failed"]) == "failed"
    )  # a test run does not hide a failed submission
    assert cell_status(["already_submitted", "gated"]) == "already_submitted"
    assert cell_status(["something_new", "validated"]) == "validated"
    assert cell_status(["something_new"]) == "something_new"


def test_a_histogram_of_a_cut_file_drops_its_partial_last_line() -> None:
    text = _csv([0.1, 0.2, 0.3]) + "n3,0.9"  # the read stopped inside n3's line
    counts = histogram(text, cut=True)
    assert counts.rows == 3 and counts.cut and sum(counts.counts) == 3 and counts.counts[18] == 0
    assert (
        histogram(_csv([0.0, 1.0])).counts[0] == 1
        and histogram(_csv([0.0, 1.0])).counts[BINS - 1] == 1
    )


def test_the_command_line_rewrites_the_page_and_saves_a_copy(
    fixture_reports: Results,
    stack: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": stack.environ(tmp_path / "work")}))
    for name in stack.environ(tmp_path / "work"):
        monkeypatch.delenv(name, raising=False)  # from the file alone
    copy = tmp_path / "copy" / "report.html"
    copy.parent.mkdir()
    assert main(["report-page", "--settings", str(settings), "--out", str(copy)]) == 0
    assert copy.read_text(encoding="utf-8") == fixture_reports.page.read()
    assert 'data-round="1202"' in copy.read_text(encoding="utf-8")
    assert main(["report-page", "--settings", str(tmp_path / "missing.json")]) == 2


def test_read_head_reads_no_more_than_asked_and_says_whether_there_was_more(
    stack: LocalStack,
) -> None:
    store = results(stack)
    name = store.archive.write(5, "alpha", _csv([0.25] * 10))
    size = len(_csv([0.25] * 10))
    assert store.archive.read_head(name, 20) == (_csv([0.25] * 10)[:20], True)
    assert store.archive.read_head(name, size) == (_csv([0.25] * 10), False)
    assert (
        histogram(*store.archive.read_head(name, 40)).rows == 3
    )  # the header, 3 whole lines and "n3" are read


def test_runs_with_nothing_to_do_are_passed_over_so_the_page_keeps_its_rounds(
    stack: LocalStack,
) -> None:
    store = results(stack)
    busy = "20261128T120000000000Z-scheduled-bbbb0001"
    _run(store, busy, Mode.SCHEDULED, 1300, [{"name": "alpha", "status": "submitted"}])
    for minute in range(10, 60, 10):  # the healing schedule's later firings in the round
        _run(
            store,
            f"20261128T12{minute:02d}00000000Z-scheduled-bbbb00{minute:02d}",
            Mode.SCHEDULED,
            1300,
            [{"name": "alpha", "status": "already_submitted"}],
            RunStatus.NOTHING_TO_DO,
        )
    assert [run.run_id for run in load_page_data(store, limit=1).runs] == [busy]


def test_locked_runs_are_passed_over_so_the_page_keeps_its_rounds(stack: LocalStack) -> None:
    store = results(stack)
    busy = "20261128T120000000000Z-scheduled-bbbb0001"
    _run(store, busy, Mode.SCHEDULED, 1300, [{"name": "alpha", "status": "submitted"}])
    for minute in range(1, 31):  # thirty runs that found the lock held, each ended `locked`
        _run(
            store,
            f"20261128T12{minute:02d}00000000Z-scheduled-cccc00{minute:02d}",
            Mode.SCHEDULED,
            None,
            [],
            RunStatus.LOCKED,
            "another run held the lock",
        )
    assert [run.run_id for run in load_page_data(store).runs] == [busy]


def test_a_page_render_overtaken_by_a_newer_write_is_made_again_not_stored(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = results(stack)
    first, later = (
        "20261128T120000000000Z-scheduled-dddd0001",
        "20261128T121000000000Z-scheduled-dddd0002",
    )
    _run(store, first, Mode.SCHEDULED, 1300, [{"name": "alpha", "status": "submitted"}])
    rendered = report_page.render_report_page
    overtaken: list[str] = []

    def overtaken_once(results: Results) -> str:
        page = rendered(results)
        if not overtaken:  # another run finishes and writes its page while this one renders
            overtaken.append(later)
            _run(store, later, Mode.SCHEDULED, 1301, [{"name": "alpha", "status": "submitted"}])
            write_report_page(store)
        return page

    monkeypatch.setattr(report_page, "render_report_page", overtaken_once)
    write_report_page(store)
    page = store.page.read()
    assert page is not None and first in page and later in page


def test_test_runs_that_failed_keep_the_rounds_scheduled_outcome_in_view(
    stack: LocalStack,
) -> None:
    store = results(stack)
    _run(
        store,
        "20261128T120000000000Z-scheduled-eeee0001",
        Mode.SCHEDULED,
        1300,
        [{"name": "alpha", "status": "submitted"}, {"name": "beta", "status": "predicted"}],
    )
    for minute in range(1, 31):  # a participant iterating on the models with test runs
        _run(
            store,
            f"20261128T12{minute:02d}00000000Z-test-eeee00{minute:02d}",
            Mode.TEST,
            1300,
            [
                {"name": "alpha", "status": "failed", "error": "model 'alpha': broke"},
                {"name": "beta", "status": "failed", "error": "model 'beta': broke"},
            ],
            RunStatus.FAILED,
        )
    page = report_page.render_report_page(store)
    for model, scheduled in (("alpha", "submitted"), ("beta", "predicted")):
        cell = re.search(
            rf'<td class="cell s-(\w+)"[^>]*data-model="{model}"[^>]*>(.*?)</td>', page
        )
        assert cell is not None, page
        assert cell.group(1) == scheduled  # the scheduled outcome colours the cell
        assert re.sub(r"<[^>]+>", " ", cell.group(2)).split() == [scheduled, "test:", "failed"]
