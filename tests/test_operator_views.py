"""What an operator sees, in pure parts: progress numbers, filters, the plan, the HTML
page, metrics, log processors and the help text."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from pracsuite_ingest import metrics, progress, progress_live
from pracsuite_ingest.cli import build_parser, main
from pracsuite_ingest.counters import Counters
from pracsuite_ingest.filters import RowFilter
from pracsuite_ingest.logs import add_request_id, configure, get_logger
from pracsuite_ingest.models import Row, Stage
from pracsuite_ingest.plan import limits_text, plan_text
from pracsuite_ingest.rate_gate import Pace
from pracsuite_ingest.report import summarise
from pracsuite_ingest.report_html import render, what_to_do

ANSI = re.compile(r"\x1b\[")


def rows(*clients: str) -> list[Row]:
    return [Row(i + 2, c, f"/f/{i}.pdf", f"{i}.pdf") for i, c in enumerate(clients)]


# ------------------------------------------------------------------------ filters
def test_client_filter_keeps_only_the_named_clients_in_order() -> None:
    f = RowFilter(frozenset({"1", "3"}))
    assert [r.client_id for r in f.apply(rows("1", "2", "3", "1"))] == ["1", "3", "1"]


def test_limit_counts_rows_after_the_client_filter_and_stops_reading() -> None:
    def endless() -> Iterator[Row]:
        n = 0
        while True:
            n += 1
            yield Row(n, "1" if n % 2 else "2", f"/f/{n}", f"{n}.pdf")
            if n > 100:
                raise AssertionError("read past the limit")

    taken = list(RowFilter(frozenset({"2"}), limit=3).apply(endless()))
    assert [r.line for r in taken] == [2, 4, 6]
    assert RowFilter(frozenset({"2"}), limit=3).describe() == "client 2; first 3 rows"
    assert not RowFilter().active and list(RowFilter().apply(rows("1", "2"))) == rows("1", "2")


# ----------------------------------------------------------------------- progress
def counters(**stages: int) -> Counters:
    c = Counters()
    for name, n in stages.items():
        c.tally(Stage(name), n)
    return c


def test_progress_is_off_unless_a_person_watches_a_terminal_without_json_logs() -> None:
    on = {"quiet": False, "log_format": "auto", "stdout_tty": True, "stderr_tty": True}
    assert progress.wanted(**on)
    assert progress.wanted(**{**on, "log_format": "console"})
    for change in ({"quiet": True}, {"log_format": "json"}, {"stdout_tty": False},
                   {"stderr_tty": False}):
        assert not progress.wanted(**{**on, **change}), change


def test_progress_numbers_come_from_the_counters() -> None:
    c = counters(invalid=2, skipped=3, failed=1, uploaded=10, uploading=1)
    c.presigning, c.in_flight, c.retries = 4, 8, 5
    assert progress.files_done(c) == 17
    assert progress.awaiting_validation(c) == 11
    line = progress.status_line(c)
    for part in ("presigning 4", "uploading 8", "awaiting validation 11", "validated 0",
                 "failed 1", "invalid 2", "skipped 3", "retries 5"):
        assert part in line
    assert progress.reconcile_line(c, time.time()) is None
    c.tally(Stage.VALIDATED, 4)
    c.awaiting, c.reconcile_until = 7, time.time() + 125
    assert progress.awaiting_validation(c) == 7
    rec = progress.reconcile_line(c, c.reconcile_until - 125)
    gives_up = datetime.fromtimestamp(c.reconcile_until).strftime("%H:%M")  # local time
    assert rec == (f"reconcile: 7 awaited · 4 validated so far · gives up at {gives_up} if "
                   "PracSuite has not shown them by then")
    assert "left" not in rec and "eta" not in rec  # a deadline, not an estimate
    c.reconcile_end, c.awaiting = "done", 2
    assert progress.reconcile_line(c, 0) == (
        "reconcile: done: 4 validated, 2 not shown by PracSuite in time (missing: "
        "`reconcile` looks again)")
    c.awaiting = 0
    assert progress.reconcile_line(c, 0) == "reconcile: done: every upload validated (4 this run)"
    c.reconcile_end, c.awaiting = "stopped", 3
    assert "stopped: 4 validated, 3 still awaited" in (progress.reconcile_line(c, 0) or "")


def test_the_eta_is_the_send_phase_s_and_never_reads_zero_while_the_run_goes_on() -> None:
    c = counters(uploaded=3)
    assert progress.eta_text(c, 10, 125.2) == "eta 0:02:06"
    assert progress.eta_text(c, 10, 0.01) == "eta 0:00:01"  # not 0:00:00: files remain
    assert progress.eta_text(c, 10, 3 * 3600 + 1) == "eta 3:00:01"
    assert progress.eta_text(c, None, None) == "eta -:--:--"
    assert progress.eta_text(c, 3, 0.0) == ""  # every file sent: the reconcile line follows
    c.reconcile_until = time.time() + 60
    assert progress.eta_text(c, 10, 0.0) == ""


def test_progress_shows_the_api_pace_where_auto_stands() -> None:
    c = counters()
    assert progress.pace_line(c) is None  # no gate yet (a dry run has none)
    c.pace = lambda: Pace(mode="auto", requests_per_second=7.25, calls=1200, throttled=30)
    assert progress.pace_line(c) == (
        "api: 7.2 requests/s now (auto) · 1,200 calls · 30 throttled (2.5%)")
    c.pace = lambda: Pace(mode="fixed", requests_per_second=3.0, calls=0, throttled=0)
    assert progress.pace_line(c) == "api: 3.0 requests/s limit (fixed) · 0 calls · 0 throttled"


def test_a_dry_run_shows_what_it_would_send() -> None:
    assert progress.status_line(counters(seen=9)).startswith("would send 9")


def test_the_row_count_runs_beside_the_run_and_tolerates_a_bad_input() -> None:
    count = progress.RowCount(lambda: iter(rows("1", "2", "3")))
    count._thread.join(5)
    assert count.total == 3

    def broken() -> Iterator[Row]:
        raise OSError("gone")

    bad = progress.RowCount(broken)
    bad._thread.join(5)
    assert bad.total is None


def test_a_disabled_display_does_nothing() -> None:
    display = progress.TerminalProgress(enabled=False)
    display.attach(Counters(), lambda: iter(()))
    display.close()
    assert display._live is None


def test_the_display_renders_from_counters_without_a_terminal() -> None:
    from rich.console import Console

    c = counters(uploaded=3, failed=1)
    c.bytes_sent, c.bytes_to_send = 3_000_000, 9_000_000
    count = progress.RowCount(lambda: iter(rows("1", "2", "3", "4", "5")))
    count._thread.join(5)
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(progress_live._View(c, count))
    text = out.getvalue()
    assert "4/5" in text and "bytes" in text and "awaiting validation 3" in text


def frame(c: Counters, total: int) -> str:
    """One frame of the display, as text (what rich draws on each refresh)."""
    from rich.console import Console

    count = progress.RowCount(lambda: iter(rows(*[str(n) for n in range(total)])))
    count._thread.join(5)
    out = io.StringIO()
    Console(file=out, width=150, color_system=None).print(progress_live._View(c, count))
    return out.getvalue()


def test_frames_through_the_reconcile_phase() -> None:
    sending = counters(uploaded=3, skipped=1)
    assert "eta " in frame(sending, 10) and "reconcile" not in frame(sending, 10)

    c = counters(uploaded=10)
    c.tally(Stage.VALIDATED, 4)
    c.awaiting, c.reconcile_until = 6, time.time() + 900
    shown = frame(c, 10)
    gives_up = datetime.fromtimestamp(c.reconcile_until).strftime("%H:%M")
    assert "10/10" in shown
    assert f"reconcile: 6 awaited · 4 validated so far · gives up at {gives_up}" in shown
    assert "eta" not in shown  # not "eta 0:00:00" while reconcile runs

    c.tally(Stage.VALIDATED, 6)
    c.awaiting, c.reconcile_end = 0, "done"
    last = frame(c, 10)
    assert "reconcile: done: every upload validated (10 this run)" in last
    assert "validated 10" in last and "gives up" not in last and "eta" not in last


# ---------------------------------------------------------------------- the plan
def item(client: str, status: str, size: int = 100, error: str | None = None,
         name: str = "a.pdf") -> dict[str, Any]:
    return {"client_id": client, "path": f"/data/{name}", "file_name": name, "size": size,
            "sha256": "x", "status": status, "attachment_id": None, "key": None,
            "error": error, "attempts": 0, "extra": {}}


def doc_of(items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"run_id": "2026-01-01T00-00-00Z-abcd", "started_at": "2026-01-01T00:00:00Z",
            "finished_at": "2026-01-01T00:04:10Z",
            "summary": summarise(it["status"] for it in items), "items": items, **extra}


def test_the_dry_run_plan_counts_what_a_real_run_would_do() -> None:
    items = [item("1", "pending", 2_000_000), item("1", "pending", 500_000),
             item("2", "pending", 1000, "dry run: would be reconciled"),
             item("2", "skipped", error="already validated by run r0 (attachment 9)"),
             item("2", "skipped", error="same client, file name and content as line 2"),
             item("3", "invalid", None, "file not found")]
    text = plan_text(doc_of(items))
    assert "nothing was sent" in text
    assert re.search(r"send\s+2 files, 2\.5 MB, for 1 client\b", text)
    assert re.search(r"skip\s+1 file already validated", text)
    assert re.search(r"skip\s+1 row repeating", text)
    assert re.search(r"reconcile\s+1 file an earlier", text)
    assert re.search(r"refuse\s+1 invalid", text)
    assert re.search(r"^\s+1\s+2\s+2\.5 MB\s+0\s+0\s+0$", text, re.M)
    assert "max_bytes_per_second" not in text  # no cap, nothing to say
    # with a bandwidth cap the plan says how long the uploads take at least
    capped = plan_text(doc_of(items), 250_000)
    assert "at upload.max_bytes_per_second = 250.0 KB/s the uploads take at least 10 s" \
        in capped, capped


def test_the_pace_line_names_the_rate_and_the_bandwidth_cap() -> None:
    assert limits_text(3.0, 20.0, 0) == (
        "api.requests_per_second = 3/s; upload.max_bytes_per_second = no cap "
        "(all uploads together)")
    assert limits_text("auto", 20.0, 2_000_000).startswith(
        "api.requests_per_second = auto (from 3/s, at most 20/s); "
        "upload.max_bytes_per_second = 2.0 MB/s")


# ---------------------------------------------------------------------- HTML page
def test_the_page_has_totals_clients_and_every_problem_with_a_next_step() -> None:
    items = [item("1", "validated", 1_000_000), item("1", "validated"),
             item("2", "failed", error="PracSuite 404 NOT_FOUND: PracSuite does not know "
                                      "this client_id (request_id r-1)"),
             item("2", "invalid", None, "file not found", name="<script>x</script>.pdf"),
             item("3", "missing", error="S3 accepted the upload but no PracSuite record"),
             item("3", "skipped", error="already validated by run r0")]
    page = render(doc_of(items))
    assert "4 min 10 s" in page and "2026-01-01 00:04:10 UTC" in page
    assert "3 of 6 items need attention" in page
    assert "<script>x" not in page and "&lt;script&gt;" in page
    assert "Check the client id in PracSuite" in page
    assert "Check the path" in page and "reconcile" in page
    assert "1 skipped: nothing to do" in page
    for marker in ("http://", "https://", "<link", "<img", "<script", "@import", "url("):
        assert marker not in page, marker


def test_an_all_good_run_says_so() -> None:
    page = render(doc_of([item("1", "validated"), item("1", "skipped")]))
    assert "All 2 items are in PracSuite" in page and "Nothing: every item" in page


@pytest.mark.parametrize(("status", "error", "advice"), [
    ("failed", "the presigned POST expired before the upload finished", "network speed"),
    ("invalid", "file is 104,857,601 bytes; PracSuite accepts at most", "104,857,600"),
    ("invalid", "file name has no extension (PracSuite requires one, e.g. .pdf)", "extension"),
    ("invalid", "line 7: missing client_id", "client_id"),
    ("missing", "S3's answer to the upload was lost and no PracSuite record", "next run"),
    ("pending", None, "Run again"),
    ("skipped", "same client, file name and content as line 3", "earlier row"),
])
def test_each_problem_gets_its_own_next_step(status: str, error: str | None,
                                             advice: str) -> None:
    assert advice in what_to_do(item("1", status, error=error))


# ------------------------------------------------------------------------ metrics
def outcome(code: int = 0) -> metrics.Outcome:
    return metrics.outcome_of(doc_of([item("1", "validated", 300), item("1", "failed")]),
                              exit_code=code, bytes_uploaded=900, retries=2, duration_s=12.5,
                              finished_at=1_700_000_000.0)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_the_textfile_parses_and_keeps_the_last_success_through_a_failure(
        tmp_path: Path) -> None:
    log = get_logger()
    target = tmp_path / "tf" / "ingest.prom"
    metrics.export(outcome(0), textfile=str(target), pushgateway_url="", job="j",
                   shard_label=None, log=log)
    first = samples(target.read_text())
    assert first[("pracsuite_ingest_items", (("status", "validated"),))] == 1
    assert first[("pracsuite_ingest_items", (("status", "failed"),))] == 1
    assert first[("pracsuite_ingest_uploaded_bytes", ())] == 900
    assert first[("pracsuite_ingest_validated_bytes", ())] == 300
    assert first[("pracsuite_ingest_retries", ())] == 2
    assert first[("pracsuite_ingest_duration_seconds", ())] == 12.5
    assert first[(metrics.LAST_SUCCESS, ())] == 1_700_000_000.0
    failed = replace(outcome(1), finished_at=1_700_000_500.0)
    metrics.export(failed, textfile=str(target), pushgateway_url="", job="j",
                   shard_label=None, log=log)
    second = samples(target.read_text())
    assert second[("pracsuite_ingest_exit_code", ())] == 1
    assert second[("pracsuite_ingest_last_run_timestamp_seconds", ())] == 1_700_000_500.0
    assert second[(metrics.LAST_SUCCESS, ())] == 1_700_000_000.0  # kept


def test_a_shard_writes_its_own_labelled_textfile(tmp_path: Path) -> None:
    metrics.export(outcome(), textfile=str(tmp_path / "m.prom"), pushgateway_url="", job="j",
                   shard_label="shard-2-of-3", log=get_logger())
    got = samples((tmp_path / "m.shard-2-of-3.prom").read_text())
    assert got[("pracsuite_ingest_retries", (("shard", "shard-2-of-3"),))] == 2


class _Gateway(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append(("POST", self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def test_metrics_are_pushed_to_a_pushgateway_on_loopback() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        metrics.export(outcome(1), textfile="", pushgateway_url=url, job="nightly",
                       shard_label="shard-1-of-2", log=get_logger())
    finally:
        server.shutdown()
        server.server_close()
    method, path, body = _Gateway.received[-1]
    assert method == "POST" and path == "/metrics/job/nightly/shard/shard-1-of-2"
    got = samples(body.decode())
    assert got[("pracsuite_ingest_exit_code", ())] == 1
    assert (metrics.LAST_SUCCESS, ()) not in got  # a failure leaves the gateway's value


def test_an_unreachable_pushgateway_is_a_warning_not_a_failure() -> None:
    out = io.StringIO()
    configure("info", "json", stream=out)
    metrics.export(outcome(), textfile="", pushgateway_url="http://127.0.0.1:9", job="j",
                   shard_label=None, log=get_logger())
    line = json.loads(out.getvalue().splitlines()[-1])
    assert line["level"] == "warning" and "pushgateway_url" in line["event"]


# --------------------------------------------------------------------------- logs
def test_request_id_is_lifted_out_of_an_error_message() -> None:
    event = add_request_id(None, "warning", {"error": "PracSuite 500 SERVER_ERROR: x "
                                                      "(request_id 5f0e-aa)"})
    assert event["request_id"] == "5f0e-aa"
    assert "request_id" not in add_request_id(None, "info", {"error": "S3 503 SlowDown"})


def test_json_logs_carry_the_bound_context_and_no_colour_codes() -> None:
    out = io.StringIO()
    configure("debug", "auto", stream=out)  # a StringIO is not a terminal: JSON
    structlog.contextvars.clear_contextvars()
    try:
        structlog.contextvars.bind_contextvars(run_id="r1", client_id="42", item=7,
                                               stage="upload")
        get_logger().warning("retrying", attempt=2,
                             error="PracSuite 429 (request_id abc-1)", file_name="x.pdf")
    finally:
        structlog.contextvars.clear_contextvars()
    text = out.getvalue()
    assert not ANSI.search(text)
    event = json.loads(text)
    assert event | {"timestamp": None} == {
        "event": "retrying", "level": "warning", "run_id": "r1", "client_id": "42",
        "item": 7, "stage": "upload", "attempt": 2, "request_id": "abc-1",
        "error": "PracSuite 429 (request_id abc-1)", "timestamp": None}


# --------------------------------------------------------------------------- help
def subcommands() -> list[list[str]]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    choices: dict[str, Any] = action.choices  # type: ignore[assignment]
    out = []
    for name, sub in choices.items():
        out.append([name])
        for a in sub._actions:
            if isinstance(getattr(a, "choices", None), dict):
                out += [[name, child] for child in a.choices]
    return out


@pytest.mark.parametrize("command", subcommands(), ids=" ".join)
def test_every_command_help_has_an_example(command: list[str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "example:\n  pracsuite-ingest " in capsys.readouterr().out


def test_run_help_explains_the_trial_run_filters(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--client ID" in text and "--limit N" in text and "not in the report" in text
    assert "--quiet" in text


@pytest.mark.parametrize("argv", [["--version"], ["check", "--version"]])
def test_version(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert re.fullmatch(r"pracsuite-ingest \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def test_a_bad_limit_says_what_is_expected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--limit", "0"])
    assert exit_info.value.code == 2
    assert "at least 1, not '0'" in capsys.readouterr().err


@pytest.mark.parametrize(("key", "value"), [("textfile", "/var/lib/node/ingest.txt"),
                                            ("pushgateway_url", "pushgateway:9091"),
                                            ("job", "")])
def test_a_bad_metrics_setting_names_its_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             key: str, value: str) -> None:
    from pracsuite_ingest.errors import ConfigError
    from pracsuite_ingest.settings import load_settings

    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[metrics]\n{key} = {json.dumps(value)}\n")
    with pytest.raises(ConfigError, match=f"metrics.{key}"):
        load_settings(cfg, require_keys=False, require_input=False)
