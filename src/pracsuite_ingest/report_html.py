"""The report as a page a person reads: one self-contained HTML file, no external assets.

Top to bottom: a verdict, the totals, timings, a table per client, then every item
that is not validated, grouped by status, each with why and what to do about it.
Everything is computed from the report document (`report.build`); nothing else.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pracsuite_ingest.models import Status
from pracsuite_ingest.plural import counted, plural
from pracsuite_ingest.visible import visible

STATUSES = [s.value for s in Status]
ATTENTION = ("failed", "missing", "invalid", "pending")  # in the order a person fixes them

GROUP_ADVICE = {
    "failed": "PracSuite or S3 refused these, or retries ran out. Fix what each error says "
              "and run again: validated files are skipped, so only these are sent.",
    "missing": "S3 accepted these, but PracSuite had not shown a record by the deadline. "
               "Run <code>pracsuite-ingest reconcile</code> later to look again.",
    "invalid": "Nothing was sent for these: the row or the file is unusable. Fix them and "
               "run again.",
    "pending": "The run stopped before these finished (interrupted, or a dry run). Run again "
               "with the same state file to send them.",
}

# (status, a phrase in the error, what to do): the first that matches wins.
_ADVICE: tuple[tuple[str, str, str], ...] = (
    ("failed", "does not know this client", "Check the client id in PracSuite, correct the "
     "row, and run again."),
    ("failed", "UNAUTHORIZED", "Check the API keys (`pracsuite-ingest check`), then run again."),
    ("failed", "expired", "Check the network speed, or lower "
     "upload.concurrency; then run again."),
    ("failed", "EntityTooLarge", "Make the file smaller than 100 MB, then run again."),
    ("failed", "changed while being sent", "Nothing was stored. Leave the file as it is now "
     "and run again: it is checked and sent then."),
    ("failed", "", "Fix what the error says, then run again (only unsent files are sent)."),
    ("missing", "lost", "Nothing yet: the next run checks PracSuite once more, then sends it "
     "again if there is still no record."),
    ("missing", "reconcile.verify", "Let the bytes decide: set reconcile.verify = "
     "\"ambiguous\" and run `pracsuite-ingest reconcile`."),
    ("missing", "", "Run `pracsuite-ingest reconcile` later. If it stays missing, look for it "
     "in PracSuite before running again."),
    ("invalid", "file not found", "Check the path (a relative path is relative to the "
     "manifest's folder)."),
    ("invalid", "accepts at most", "Split or compress the file to at most 104,857,600 bytes."),
    ("invalid", "extension", "Give the file name an extension, e.g. .pdf (file_name column)."),
    ("invalid", "client_id", "Fill in the row's client_id."),
    ("invalid", "not readable", "Let the user running pracsuite-ingest read the file."),
    ("invalid", "line ", "Fix the manifest line named in the error."),
    ("invalid", "", "Fix the row or the file, then run again."),
    ("pending", "would be reconciled", "A real run first asks PracSuite about the earlier "
     "upload; it is not sent twice."),
    ("pending", "", "Run again with the same state file (without --dry-run) to send it."),
    ("skipped", "same client, file name and content", "Nothing: the same file as an earlier "
     "row, sent once."),
    ("skipped", "", "Nothing: it is already in PracSuite."),
)


def what_to_do(item: Mapping[str, Any]) -> str:
    """The next step for one item, from its status and the words of its error."""
    error = str(item.get("error") or "")
    for status, phrase, advice in _ADVICE:
        if item.get("status") == status and phrase in error:
            return advice
    return ""


def _when(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _moment(value: Any, missing: str) -> str:
    when = _when(value)
    if when is None:
        return str(value) if value else missing
    zone = "UTC" if when.utcoffset() is not None and not when.utcoffset() else when.strftime("%z")
    return f"{when:%Y-%m-%d %H:%M:%S} {zone}".strip()


def duration_text(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def size_text(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{n:,} bytes" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1000
    return f"{n:,} bytes"  # pragma: no cover - the loop always returns


def _client_key(client: str) -> tuple[int, int, str]:
    return (0, int(client), "") if client.isdigit() else (1, 0, client)


def per_client(items: Iterable[Mapping[str, Any]]) -> dict[str, tuple[Counter[str], int]]:
    """client id -> (items per status, bytes validated), in client order."""
    out: dict[str, tuple[Counter[str], int]] = {}
    for it in items:
        client = str(it.get("client_id") or "(none)")
        counts, size = out.get(client, (Counter(), 0))
        counts[it["status"]] += 1
        if it["status"] == "validated":
            size += int(it.get("size") or 0)
        out[client] = (counts, size)
    return dict(sorted(out.items(), key=lambda kv: _client_key(kv[0])))


def verdict(summary: Mapping[str, int]) -> tuple[str, str]:
    """(css class, sentence) for the banner at the top."""
    total = summary.get("total", 0)
    bad = sum(summary.get(s, 0) for s in ATTENTION)
    if total == 0:
        return "warn", "No items: the input had no rows (or every row was filtered out)."
    if bad == 0:
        proof = (f" {summary['verified']:,} of them proven by their bytes."
                 if summary.get("verified") else "")
        every = "All " if total != 1 else "The "
        return "ok", (f"{every}{counted(total, 'item')} {plural('is', total)} in PracSuite: "
                      f"{summary.get('validated', 0):,} "
                      f"validated now, {summary.get('skipped', 0):,} already there.{proof}")
    parts = ", ".join(f"{summary[s]:,} {s}" for s in ATTENTION if summary.get(s))
    return "bad", (f"{bad:,} of {counted(total, 'item')} need{'s' if bad == 1 else ''} "
                   f"attention ({parts}); see below.")


_CSS = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 color:#1f2328;background:#f6f8fa}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}
h3{font-size:16px;margin:20px 0 4px}
.sub{color:#59636e;margin:0 0 16px}
.banner{padding:12px 16px;border-radius:8px;font-weight:600;margin:12px 0 18px}
.banner.ok{background:#dafbe1;color:#116329;border:1px solid #4ac26b}
.banner.bad{background:#ffebe9;color:#a40e26;border:1px solid #ff8182}
.banner.warn{background:#fff8c5;color:#7d4e00;border:1px solid #d4a72c}
.tiles{display:flex;flex-wrap:wrap;gap:10px}
.tile{background:#fff;border:1px solid #d1d9e0;border-radius:8px;padding:10px 16px;
 min-width:112px;border-top:4px solid #d1d9e0}
.tile b{display:block;font-size:26px;font-variant-numeric:tabular-nums}
.tile span{color:#59636e;font-size:13px}
.tile.zero{opacity:.55}
.s-validated{border-top-color:#1a7f37}.s-skipped{border-top-color:#8c959f}
.s-missing,.s-pending{border-top-color:#bf8700}.s-failed,.s-invalid{border-top-color:#cf222e}
.s-total{border-top-color:#0969da}.s-verified{border-top-color:#116329}
dl.times{display:grid;grid-template-columns:max-content auto;gap:2px 16px;margin:8px 0}
dl.times dt{color:#59636e}dl.times dd{margin:0;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;width:100%;background:#fff;margin:6px 0 10px;font-size:14px}
th,td{border:1px solid #d1d9e0;padding:5px 9px;text-align:left;vertical-align:top}
th{background:#eef1f4;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums}td.z{color:#b0b7be}
tr:nth-child(even) td{background:#fafbfc}
td.bad{color:#a40e26;font-weight:600}
.path{color:#59636e;font-size:12px;word-break:break-all}
.advice{color:#59636e;margin:2px 0 6px}
code{background:#eef1f4;padding:1px 4px;border-radius:4px}
details{margin:10px 0}summary{cursor:pointer;font-weight:600}
footer{color:#59636e;font-size:12px;margin-top:32px}
@media print{body{background:#fff}main{padding:0}}
"""


def _num(n: int, cls: str = "") -> str:
    extra = " z" if n == 0 else (f" {cls}" if cls else "")
    return f"<td class='n{extra}'>{n:,}</td>"


def _with_code(text: str) -> str:
    """`text` escaped, with `backquoted` commands shown as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _esc(text))


def _esc(text: str) -> str:
    """`text` for the page: HTML-escaped, and a control or bidi character from the input
    shown as an escape, so that a name reads as what it is."""
    return html.escape(visible(text))


def _item_rows(items: Iterable[tuple[int, Mapping[str, Any]]]) -> str:
    esc = _esc
    rows = []
    for number, it in items:
        rows.append(
            f"<tr><td class='n'>{number}</td><td>{esc(str(it.get('client_id') or ''))}</td>"
            f"<td>{esc(str(it.get('file_name') or ''))}"
            f"<div class='path'>{esc(str(it.get('path') or ''))}</div></td>"
            f"<td>{_with_code(str(it.get('error') or ''))}</td>"
            f"<td>{_with_code(what_to_do(it))}</td></tr>")
    head = ("<tr><th title='the row&#39;s place in this run&#39;s input'>row</th>"
            "<th>client</th><th>file</th><th>why</th><th>what to do</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


LISTED = 2000  # rows shown per group; the CSV beside the page holds every row
SHOWN = ("client_id", "file_name", "path", "error", "status")  # what a listed row keeps


def _one_pass(items: Iterable[Mapping[str, Any]]) -> tuple[
        dict[str, tuple[Counter[str], int]], int, dict[str, list[tuple[int, Mapping[str, Any]]]]]:
    clients: dict[str, tuple[Counter[str], int]] = {}
    validated_bytes = 0
    groups: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
    for number, it in enumerate(items, start=1):
        status = it["status"]
        client = str(it.get("client_id") or "(none)")
        counts, size = clients.get(client, (Counter(), 0))
        counts[status] += 1
        if status == "validated":
            size += int(it.get("size") or 0)
            validated_bytes += int(it.get("size") or 0)
        clients[client] = (counts, size)
        if status != "validated":
            group = groups.setdefault(status, [])
            if len(group) < LISTED:
                group.append((number, {k: it.get(k) for k in SHOWN}))
    ordered = dict(sorted(clients.items(), key=lambda kv: _client_key(kv[0])))
    return ordered, validated_bytes, groups


def _more(total: int, shown: int) -> str:
    if total <= shown:
        return ""
    return (f"<p class='advice'>… and {total - shown:,} more: the CSV beside this page "
            "lists every row.</p>")


def render(doc: Mapping[str, Any], extra_sections: str = "", charts: str = "") -> str:
    """The page for report `doc`; `extra_sections` is trusted HTML put before the clients,
    `charts` trusted HTML (report_charts.py) after the timings."""
    esc = html.escape
    s: Mapping[str, int] = doc["summary"]
    # One pass over the items (they may be streamed from the state file): per-client
    # totals, and the first LISTED rows of each group to show; the CSV has them all.
    clients, validated_bytes, groups = _one_pass(doc["items"])
    banner_class, banner = verdict(s)

    tiles = "".join(
        f"<div class='tile s-{k}{' zero' if not s.get(k) else ''}'><b>{s.get(k, 0):,}</b>"
        f"<span>{esc(k)}</span></div>" for k in ["total", *STATUSES])
    tiles += (f"<div class='tile s-verified{' zero' if not s.get('verified') else ''}' "
              f"title='validated items whose record&#39;s bytes were downloaded and equal "
              f"the file&#39;s (reconcile.verify)'><b>{s.get('verified', 0):,}</b>"
              "<span>verified by bytes</span></div>")

    started, finished = _when(doc.get("started_at")), _when(doc.get("finished_at"))
    times = [("Started", esc(_moment(doc.get("started_at"), "—"))),
             ("Finished", esc(_moment(doc.get("finished_at"), "— (not finished)")))]
    if started and finished:
        took = (finished - started).total_seconds()
        times.append(("Took", duration_text(took)))
        if took > 0 and validated_bytes:
            times.append(("Validated data",
                          f"{size_text(validated_bytes)} ({size_text(int(validated_bytes / took))}"
                          "/s over the whole run)"))
    elif validated_bytes:
        times.append(("Validated data", size_text(validated_bytes)))
    timing = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in times)

    client_head = "".join(f"<th>{esc(x)}</th>" for x in ["client", "total", *STATUSES,
                                                         "validated data"])
    client_rows = "".join(
        f"<tr><td>{_esc(c)}</td>{_num(sum(n.values()))}"
        + "".join(_num(n[x], "bad" if x in ATTENTION else "") for x in STATUSES)
        + f"<td class='n'>{size_text(size) if size else ''}</td></tr>"
        for c, (n, size) in clients.items())

    sections = []
    for status in ATTENTION:
        group = groups.get(status, [])
        if group:
            sections.append(f"<h3>{s.get(status, len(group)):,} {status}</h3>"
                            f"<p class='advice'>{GROUP_ADVICE[status]}</p>"
                            + _item_rows(group) + _more(s.get(status, 0), len(group)))
    attention = "".join(sections) or "<p>Nothing: every item is validated or skipped.</p>"
    skipped = groups.get("skipped", [])
    skipped_html = (f"<details><summary>{s.get('skipped', 0):,} skipped: nothing to do"
                    "</summary>" + _item_rows(skipped) + _more(s.get("skipped", 0), len(skipped))
                    + "</details>") if skipped else ""

    run_id = esc(str(doc.get("run_id") or ""))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pracsuite-ingest report {run_id}</title>
<style>{_CSS}</style></head><body><main>
<h1>PracSuite upload report</h1>
<p class="sub">Run <code>{run_id}</code> · {len(clients):,} client{'s' if len(clients) != 1 else ''}
· the JSON and CSV beside this file hold the same items</p>
<div class="banner {banner_class}" id="verdict">{esc(banner)}</div>
<section class="tiles" id="totals">{tiles}</section>
<h2>Timings</h2><dl class="times">{timing}</dl>
{charts}<h2>Needs attention</h2>
{attention}
{extra_sections}<h2>Per client</h2>
<table id="clients"><tr>{client_head}</tr>{client_rows}</table>
{skipped_html}
<footer>Written by pracsuite-ingest. Patient file names are health data: keep this page
where the practice's records are kept.</footer>
</main></body></html>
"""
