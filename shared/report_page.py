"""The report page: `reports/index.html` in the results container, made from the stored run reports.

One self-contained HTML file (inline CSS and SVG, no script, nothing fetched when it is viewed),
so that it reads the same from Blob Storage, from `GET /api/report` or from a downloaded copy.
It covers the last MAX_RUNS scheduled runs and the last MAX_RUNS test runs (at one run a round, a
month or more; counted apart, so that test runs never push a round's scheduled run off the page):

- a grid of rounds × models, each cell what became of the model in that round;
- each model's correlation with the benchmark across those rounds, as a small line chart;
- the prediction histograms of the latest run that has predictions;
- the runs themselves, with their status and reason, so that a run that never reached a round shows too.

Reports are read as plain JSON, not through RunReport, so that a status or field this version does
not know (a newer app's) is shown rather than breaking the page. Every text taken from a report is
escaped: a model's error may hold anything, `<script>` included.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

from shared.errors import AppError, ReportPageError, StorageError
from shared.report import utc_now
from shared.settings import load_settings
from shared.storage import Results
from shared.storage.page import REPORT_PAGE

log = logging.getLogger(__name__)

MAX_RUNS = 30
# Runs that had nothing to do (the healing schedule's firings once a round is submitted) and runs
# that found the run lock held (webhook calls at once, a timer beside them) did nothing and add
# nothing to the page: they are passed over, looking back at most this many reports.
MAX_SCANNED = 400
UNEVENTFUL = frozenset({"nothing_to_do", "locked"})
# A live round is about 7,000 rows of some 30 bytes: this reads it whole with room to spare.
MAX_PREDICTION_BYTES = 4 * 1024 * 1024
BINS = 20
# Renders of the page before a writer gives up to the others writing it at the same time.
PAGE_WRITE_TRIES = 3
# No script runs and nothing is fetched, whatever a report holds: in the page, and as a header of
# GET /api/report (which a browser applies before it parses anything).
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'"
# Sent with every answer of GET /api/report; nosniff keeps a browser from reading it as anything else.
PAGE_HEADERS = {"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"}

# A round's cell shows the first of these that any scheduled run of the window reached for the model
# (any test run, where no scheduled run did): what became of the submission matters more than the
# order of the runs. Statuses not listed come after these.
PRECEDENCE = (
    "submitted",
    "already_submitted",
    "gated",
    "missed",
    "failed",
    "predicted",
    "skipped",
    "validated",
)
# A test run's outcome worth showing beside the scheduled one's.
UNSUCCESSFUL = frozenset({"failed", "gated", "missed"})
_LABELS = {"already_submitted": "already submitted", "validated": "validated (test)"}


@dataclass(frozen=True)
class Line:
    """One model's line in one run, as far as the page needs it."""

    run_id: str
    mode: str
    name: str
    status: str
    error: str | None
    benchmark_corr: float | None
    predictions_blob: str | None
    output: tuple[str, ...] = ()  # a failed model's last printed lines


@dataclass(frozen=True)
class Run:
    """One stored run report, as far as the page needs it."""

    run_id: str
    mode: str
    status: str
    round_number: int | None
    reason: str | None
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class Histogram:
    """A model's predictions counted into BINS equal bins of [0, 1]."""

    counts: tuple[int, ...]
    rows: int
    cut: bool  # only the first MAX_PREDICTION_BYTES were read


@dataclass(frozen=True)
class PageData:
    """Everything the page shows."""

    runs: list[Run]  # oldest first
    unreadable: list[str]  # messages about reports that could not be read
    histograms: dict[str, Histogram | str]  # by model; a text says why there is none
    histogram_run: str | None  # the run the histograms are of


def parse_run(run_id: str, text: str) -> Run:
    """A run report's JSON as the page needs it; ReportPageError if it is not a run report."""
    try:
        raw = json.loads(text)
        mode = str(raw["mode"])
        lines = tuple(_parse_line(run_id, mode, m) for m in raw.get("models") or [])
        round_number = raw.get("round_number")
        return Run(
            run_id,
            mode,
            str(raw["status"]),
            round_number if type(round_number) is int else None,
            _text(raw.get("reason")),
            lines,
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ReportPageError(
            f"report 'reports/{run_id}.json' is not a run report ({type(exc).__name__}: "
            f"{str(exc)[:200]}); the page leaves it out"
        ) from exc


def _parse_line(run_id: str, mode: str, raw: Mapping[str, object]) -> Line:
    corr = raw.get("benchmark_corr")
    finite = isinstance(corr, (int, float)) and not isinstance(corr, bool) and math.isfinite(corr)
    return Line(
        run_id,
        mode,
        str(raw["name"]),
        str(raw.get("status", "")),
        _text(raw.get("error")),
        float(corr) if finite else None,
        _text(raw.get("predictions_blob")),
        tuple(map(str, output)) if isinstance(output := raw.get("output"), list) else (),
    )


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def load_page_data(results: Results, limit: int = MAX_RUNS) -> PageData:
    """Read the last `limit` reports and the predictions of the latest run that has any."""
    runs: list[Run] = []
    unreadable: list[str] = []
    left = {"scheduled": limit, "test": limit}  # a newer version's mode counts as a test run
    for run_id in reversed(results.runs.report_ids()[-MAX_SCANNED:]):
        if not any(left.values()):
            break
        try:
            run = parse_run(run_id, results.runs.read_report(run_id))
        except ReportPageError as exc:
            log.warning("%s", exc)
            unreadable.append(str(exc))
            continue
        kind = "scheduled" if run.mode == "scheduled" else "test"
        if run.status not in UNEVENTFUL and left[kind]:
            left[kind] -= 1
            runs.append(run)
    runs.reverse()  # oldest first, as the page shows them
    latest = next(
        (r for r in reversed(runs) if any(line.predictions_blob for line in r.lines)), None
    )
    histograms = (
        {} if latest is None else {line.name: _histogram_of(results, line) for line in latest.lines}
    )
    return PageData(runs, unreadable, histograms, latest.run_id if latest else None)


def _histogram_of(results: Results, line: Line) -> Histogram | str:
    if not line.predictions_blob:
        return f"no predictions ({_label(line.status)})"
    try:
        text, cut = results.archive.read_head(line.predictions_blob, MAX_PREDICTION_BYTES)
        return histogram(text, cut)
    except (StorageError, ReportPageError) as exc:
        log.warning("report page: no histogram for model %s: %s", line.name, exc)
        return str(exc)


def histogram(csv_text: str, cut: bool = False) -> Histogram:
    """Count a predictions CSV's `prediction` column into BINS bins of [0, 1].

    `cut` says the text is only the file's beginning: its last, perhaps partial, line is dropped.
    """
    lines = csv_text.splitlines()
    if cut:
        lines = lines[:-1]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    if "prediction" not in (reader.fieldnames or []):
        raise ReportPageError(
            f"the predictions have no 'prediction' column (columns: {reader.fieldnames})"
        )
    counts = [0] * BINS
    rows = 0
    for row in reader:
        try:
            value = float(row["prediction"])
        except (TypeError, ValueError):
            continue  # validation keeps these out of archived predictions; a stray one is not worth a failure
        counts[min(max(int(value * BINS), 0), BINS - 1)] += 1
        rows += 1
    return Histogram(tuple(counts), rows, cut)


def render_report_page(results: Results) -> str:
    """The report page as HTML, from what the results container holds now."""
    return render_page(load_page_data(results), utc_now())


def refresh_report_page(results: Results) -> None:
    """Rewrite the page after a run; a page that cannot be written never fails the run (it is logged)."""
    try:
        write_report_page(results)
    except Exception:  # the page only shows the reports, which are saved; the run's outcome stands
        log.warning("the report page %s could not be written", REPORT_PAGE, exc_info=True)


def write_report_page(results: Results) -> str:
    """Render the report page and store it as `reports/index.html`; returns the blob name.

    Stored only over the page that was there when the render began: two runs finishing together
    may render in one order and write in the other, and the older render must not stand. The
    loser renders again; ReportPageError if it lost every try.
    """
    for _ in range(PAGE_WRITE_TRIES):
        seen = results.page.version()
        if results.page.write_if_unchanged(render_report_page(results), seen):
            return REPORT_PAGE
        log.info("the report page changed while it was rendered; rendering it again")
    raise ReportPageError(
        f"the report page {REPORT_PAGE} changed during each of {PAGE_WRITE_TRIES} renders; "
        "the runs that changed it wrote their pages"
    )


def settings_results(environ: Mapping[str, str] | None = None) -> Results:
    """The results container the app's settings name (from `environ`, default the process's)."""
    return Results.from_settings(load_settings(environ))


def page_response(environ: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """`GET /api/report`: (status code, content type, body): the stored page, or one made now if none is stored.

    Errors of ours (settings, storage) are answered 500 with their message as text.
    """
    try:
        results = settings_results(environ)
        page = results.page.read()
        return 200, "text/html", page if page is not None else render_report_page(results)
    except AppError as exc:
        log.error("the report page could not be served: %s", exc)
        return 500, "text/plain", f"the report page could not be served: {exc}"


# ---- rendering: every text from a report goes through _esc ----

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.8em}
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f3f3f3;font-weight:600;white-space:nowrap}td.cell{text-align:center;white-space:nowrap;cursor:default}
.s-submitted{background:#c8e6c9}.s-already_submitted{background:#e8f5e9}.s-validated{background:#d6e6fa}
.s-failed{background:#f7c5c5}.s-missed{background:#f7c5c5}.s-gated{background:#ffe0b2}
.s-skipped{background:#eee;color:#666}.s-predicted{background:#eee;color:#666}
.s-other{background:#eadcf5}.s-none{background:#fff;color:#bbb}
.charts{display:flex;flex-wrap:wrap;gap:14px}figure{margin:0;border:1px solid #ddd;padding:6px}
figcaption{font-weight:600;margin-bottom:2px}svg text{font:10px sans-serif;fill:#555}
.note{color:#666}.error{color:#a00}td.reason{max-width:40em;overflow-wrap:anywhere}td.run{white-space:nowrap}
"""
_KNOWN_CLASSES = {
    "submitted",
    "already_submitted",
    "validated",
    "failed",
    "gated",
    "missed",
    "predicted",
    "skipped",
}
_W, _H, _LEFT, _BOTTOM, _TOP = 260, 90, 34, 16, 6


def render_page(data: PageData, generated_at: str) -> str:
    """The whole page as HTML."""
    with_round = [r for r in data.runs if r.round_number is not None]
    rounds = sorted({r.round_number for r in with_round if r.round_number is not None})
    models = sorted({line.name for r in with_round for line in r.lines})
    body = [
        f"<h1>Numerai submissions: the last {len(data.runs)} runs</h1>",
        (
            f'<p class="note">Made {_esc(generated_at)} from the last {MAX_RUNS} scheduled and '
            f"{MAX_RUNS} test run reports at most. A cell shows the scheduled runs' outcome, and a "
            "test run's failure beside it. Hover over a cell for each run's status and error, and "
            "the last lines a failed model printed.</p>"
        ),
        *(f'<p class="error">{_esc(message)}</p>' for message in data.unreadable),
        "<h2>Rounds × models</h2>",
        _grid(with_round, rounds, models)
        if rounds
        else '<p class="note">No run has reached a round yet.</p>',
        "<h2>Correlation with the benchmark</h2>",
        _charts(with_round, rounds, models),
        "<h2>Predictions of the latest run</h2>",
        _histograms(data),
        "<h2>Runs</h2>",
        _runs_table(data.runs),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{PAGE_CSP}">'
        f"<title>Numerai submissions</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _grid(runs: list[Run], rounds: list[int], models: list[str]) -> str:
    head = "".join(f"<th>{_esc(m)}</th>" for m in models)
    rows = []
    for round_number in reversed(rounds):
        lines = [line for r in runs if r.round_number == round_number for line in r.lines]
        cells = "".join(_cell(round_number, m, [x for x in lines if x.name == m]) for m in models)
        rows.append(f'<tr><th scope="row">round {round_number}</th>{cells}</tr>')
    return f'<table id="grid"><thead><tr><th>round</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _cell(round_number: int, model: str, lines: list[Line]) -> str:
    where = f'data-round="{round_number}" data-model="{_esc(model)}"'
    if not lines:
        return f'<td class="cell s-none" {where} data-status="">–</td>'
    # The scheduled runs' outcome is the round's; test runs only speak where none ran.
    scheduled = [line.status for line in lines if line.mode == "scheduled"]
    tested = [line.status for line in lines if line.mode != "scheduled"]
    status = cell_status(scheduled or tested)
    css = status if status in _KNOWN_CLASSES else "other"
    title = "\n".join(
        f"{x.run_id} ({x.mode}): {_label(x.status)}"
        + (f": {x.error}" if x.error else "")
        + "".join(f"\n  | {printed}" for printed in x.output)
        for x in lines
    )
    text = _esc(_label(status))
    test_status = cell_status(tested) if scheduled and tested else None
    if test_status in UNSUCCESSFUL and test_status != status:
        # A test run that failed after the round's scheduled run is shown beside it, not over it.
        where += f' data-test-status="{_esc(test_status)}"'
        text += f'<br><span class="s-{test_status}">test: {_esc(_label(test_status))}</span>'
    return (
        f'<td class="cell s-{css}" {where} data-status="{_esc(status)}" title="{_esc(title)}">'
        f"{text}</td>"
    )


def cell_status(statuses: list[str]) -> str:
    """The status a round's cell shows, of the statuses the model had in that round's runs."""
    return min(statuses, key=lambda s: PRECEDENCE.index(s) if s in PRECEDENCE else len(PRECEDENCE))


def _label(status: str) -> str:
    return _LABELS.get(status, status or "(no status)")


def _charts(runs: list[Run], rounds: list[int], models: list[str]) -> str:
    if not models:
        return '<p class="note">No models yet.</p>'
    figures = []
    for model in models:
        points = [
            (i, v)
            for i, r in enumerate(rounds)
            if (v := _corr_in_round(runs, r, model)) is not None
        ]
        chart = _line_chart(points, rounds) if points else '<p class="note">no data</p>'
        figures.append(
            f'<figure class="corr" data-model="{_esc(model)}"><figcaption>{_esc(model)}</figcaption>'
            f"{chart}</figure>"
        )
    return f'<div class="charts">{"".join(figures)}</div>'


def _corr_in_round(runs: list[Run], round_number: int, model: str) -> float | None:
    """The model's benchmark correlation from the round's latest run that has one."""
    values = [
        line.benchmark_corr
        for r in runs
        if r.round_number == round_number
        for line in r.lines
        if line.name == model and line.benchmark_corr is not None
    ]
    return values[-1] if values else None


def _line_chart(points: list[tuple[int, float]], rounds: list[int]) -> str:
    values = [v for _, v in points]
    low = min(0.0, min(values))
    high = max(max(values), low + 0.1)
    span_x = max(len(rounds) - 1, 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return (
            _LEFT + (_W - _LEFT - 6) * i / span_x,
            _TOP + (_H - _TOP - _BOTTOM) * (high - v) / (high - low),
        )

    coords = [xy(i, v) for i, v in points]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="#1565c0"><title>round {rounds[i]}: {v:.3f}'
        "</title></circle>"
        for (x, y), (i, v) in zip(coords, points, strict=True)
    )
    zero = xy(0, 0.0)[1]
    return (
        f'<svg width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" role="img">'
        f'<line x1="{_LEFT}" y1="{zero:.1f}" x2="{_W - 6}" y2="{zero:.1f}" stroke="#ccc"/>'
        f'<text x="2" y="{_TOP + 8}">{high:.2f}</text><text x="2" y="{_H - _BOTTOM}">{low:.2f}</text>'
        f'<text x="{_LEFT}" y="{_H - 3}">{rounds[0]}</text>'
        f'<text x="{_W - 6}" y="{_H - 3}" text-anchor="end">{rounds[-1]}</text>'
        f'<polyline points="{path}" fill="none" stroke="#1565c0" stroke-width="1.5"/>{dots}</svg>'
    )


def _histograms(data: PageData) -> str:
    if data.histogram_run is None:
        return '<p class="note">No run has predictions yet.</p>'
    figures = []
    for model, result in sorted(data.histograms.items()):
        if isinstance(result, Histogram):
            note = f"{result.rows:,} rows" + (" (the file's beginning only)" if result.cut else "")
            chart = _bar_chart(result.counts)
        else:
            note, chart = "", f'<p class="note">{_esc(result)}</p>'
        figures.append(
            f'<figure class="hist" data-model="{_esc(model)}"><figcaption>{_esc(model)} '
            f'<span class="note">{note}</span></figcaption>{chart}</figure>'
        )
    return (
        f'<p class="note">Run {_esc(data.histogram_run)}; {BINS} bins of [0, 1].</p>'
        f'<div class="charts">{"".join(figures)}</div>'
    )


def _bar_chart(counts: tuple[int, ...]) -> str:
    tallest = max(max(counts), 1)
    width = (_W - _LEFT - 6) / len(counts)
    bars = "".join(
        _bar(i, n, (_H - _TOP - _BOTTOM) * n / tallest, width) for i, n in enumerate(counts)
    )
    return (
        f'<svg width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" role="img">'
        f'<text x="2" y="{_TOP + 8}">{tallest}</text>'
        f'<text x="{_LEFT}" y="{_H - 3}">0</text><text x="{_W - 6}" y="{_H - 3}" text-anchor="end">1</text>'
        f'<line x1="{_LEFT}" y1="{_H - _BOTTOM}" x2="{_W - 6}" y2="{_H - _BOTTOM}" stroke="#999"/>{bars}</svg>'
    )


def _bar(i: int, count: int, height: float, width: float) -> str:
    return (
        f'<rect x="{_LEFT + i * width:.1f}" y="{_H - _BOTTOM - height:.1f}" width="{width - 1:.1f}" '
        f'height="{height:.1f}" fill="#5c8fc7"><title>{i / BINS:.2f}–{(i + 1) / BINS:.2f}: {count}</title></rect>'
    )


def _runs_table(runs: list[Run]) -> str:
    if not runs:
        return '<p class="note">No runs yet.</p>'
    rows = "".join(
        f'<tr><td class="run">{_esc(r.run_id)}</td><td>{_esc(r.mode)}</td><td>{_or_blank(r.round_number)}'
        f'</td><td class="s-{_esc(r.status)}">{_esc(r.status)}</td><td class="reason">{_esc(r.reason or "")}</td></tr>'
        for r in reversed(runs)
    )
    return (
        '<table id="runs"><thead><tr><th>run</th><th>mode</th><th>round</th><th>status</th><th>reason</th></tr>'
        f"</thead><tbody>{rows}</tbody></table>"
    )


def _or_blank(number: int | None) -> str:
    return "" if number is None else str(number)


def _esc(text: str) -> str:
    return html.escape(text, quote=True)
