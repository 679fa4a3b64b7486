"""The HTML report as a person sees it: rendered by a real headless Chromium, offline.

Needs Debian's `chromium` (installed by .ci/run). Without it the test skips with the
reason, except in CI (env CI set), where it fails.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from needs import program
from pracsuite_ingest import report
from pracsuite_ingest.report import summarise

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]

pytestmark = pytest.mark.slow


@pytest.fixture
def chromium() -> str:
    return program("chromium", "chromium-browser",
                   package="--no-install-recommends chromium")


def item(n: int, client: str, status: str, error: str | None = None) -> dict[str, Any]:
    name = ["Referral letter.pdf", "Pathology, FBC.pdf", "心电图.png", "Scan <final>.jpg"][n % 4]
    return {"client_id": client, "path": f"/mnt/practice/scans/{client}/{n:04d} {name}",
            "file_name": f"{n:04d} {name}", "size": 180_000 + n * 1000, "sha256": "ab" * 32,
            "status": status, "attachment_id": str(9000 + n) if status == "validated" else None,
            "key": None, "error": error, "attempts": 1, "extra": {}}


def sample_report() -> dict[str, Any]:
    items = [item(n, str(1001 + n % 5), "validated") for n in range(40)]
    items += [
        item(40, "1001", "failed", "PracSuite 404 NOT_FOUND: Patient not found (request_id "
                                   "7f3c-aa10): PracSuite does not know this client_id"),
        item(41, "1002", "missing", "S3 accepted the upload but no PracSuite record appeared "
                                    "within 900s; run `pracsuite-ingest reconcile` later"),
        item(42, "1003", "invalid", "file not found"),
        item(43, "1003", "invalid", "file is 104,857,601 bytes; PracSuite accepts at most "
                                    "104,857,600 bytes (100 MB)"),
        item(44, "1004", "skipped", "already validated by run 2026-11-24T02-00-00Z-1a2b "
                                    "(attachment 8812)"),
    ]
    return {"run_id": "2026-11-25T02-00-00Z-3f9a", "started_at": "2026-11-25T02:00:00Z",
            "finished_at": "2026-11-25T02:17:42Z",
            "summary": summarise(it["status"] for it in items), "items": items}


def png_pixels_vary(png: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the image data). A page of one colour
    has a handful of distinct values whatever the PNG filters; text has hundreds."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, width, height, data = 8, 0, 0, b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        body = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            data += body
        pos += 12 + length
    return width, height, len(set(zlib.decompress(data)))


def run_chromium(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "profile"
    return subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "HOME": str(tmp_path)})


def test_the_html_report_renders_in_a_real_browser(chromium: str, tmp_path: Path) -> None:
    doc = sample_report()
    report.write(doc, tmp_path / "reports")
    page = (tmp_path / "reports" / "latest.html").resolve()
    shot = tmp_path / "report.png"

    drawn = run_chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,900",
                         page.as_uri())
    assert shot.is_file(), drawn.stderr[-2000:]
    width, height, distinct = png_pixels_vary(shot.read_bytes())
    assert (width, height) == (1280, 900)
    assert distinct > 64, "the screenshot is (nearly) one colour: nothing was drawn"
    keep = os.environ.get("PRACSUITE_KEEP_SCREENSHOT")
    if keep:  # to look at it: PRACSUITE_KEEP_SCREENSHOT=/tmp/report.png pytest -k browser
        shutil.copy(shot, keep)

    dom = run_chromium(chromium, tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    assert "4 of 45 items need attention" in text
    for total in ("<b>45</b><span>total</span>", "<b>40</b><span>validated</span>",
                  "<b>2</b><span>invalid</span>", "<b>1</b><span>skipped</span>"):
        assert total in text, total
    assert "17 min 42 s" in text  # timings
    assert "Check the client id in PracSuite" in text
    assert "Scan &lt;final&gt;.jpg" in text  # a file name is text, never markup


def test_the_report_s_charts_render_as_svg_in_a_real_browser(chromium: str,
                                                             tmp_path: Path) -> None:
    from pracsuite_ingest.report_charts import Timeline, charts_html
    from pracsuite_ingest.report_html import render

    # 300 files over 20 minutes; PracSuite took 2-40 s to show each one's record
    started = 1_790_000_000.0
    times = [(started + 4 * n, started + 4 * n + 2 + (n * 7919) % 38) for n in range(300)]
    charts = charts_html(Timeline.of(started, times))
    doc = sample_report()
    doc["items"][42]["file_name"] = "<svg onload=alert(1)>.pdf"  # an invalid row: listed
    page = tmp_path / "report.html"
    page.write_text(render(doc, charts=charts), encoding="utf-8")

    dom = run_chromium(chromium, tmp_path, "--dump-dom", page.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    # parsed as SVG elements inside the page, not text: the browser's own serialisation
    assert text.count('<svg class="chart"') == 2
    assert text.count('<rect class="bar"') >= 5 and '<polyline class="line"' in text
    assert "300 files validated over 20 min" in text
    assert "&lt;svg onload=alert(1)&gt;.pdf" in text and "<svg onload" not in text

    # Each chart alone, drawn: a page with the SVG differs from the same page without it.
    drawn = {}
    for name, body in (("charts", charts), ("blank", "")):
        alone = tmp_path / f"{name}.html"
        alone.write_text(f"<!doctype html><meta charset='utf-8'><body style='margin:0;"
                         f"background:#fff'>{body}</body>", encoding="utf-8")
        shot = tmp_path / f"{name}.png"
        run_chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1400,300",
                     alone.resolve().as_uri())
        assert shot.is_file(), name
        drawn[name] = png_pixels_vary(shot.read_bytes())
    assert drawn["blank"][2] < 16  # one colour
    assert drawn["charts"][2] > 64, "the charts drew (nearly) nothing"
