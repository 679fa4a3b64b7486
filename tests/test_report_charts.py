"""The HTML report's charts (report_charts.py), as pure functions of numbers, and from a
real run's state file."""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path

import pytest

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest.report_charts import (
    MAX_POINTS,
    Timeline,
    charts_html,
    cumulative_points,
    delay_histogram_svg,
    histogram,
    quantile,
    validated_over_time_svg,
)
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions

BAR = re.compile(r"<rect class='bar'[^>]*><title>([^<]*): ([\d,]+) files</title>")


def test_the_timeline_measures_from_the_run_start_and_the_upload() -> None:
    t = Timeline.of(1000.0, [(1001.0, 1003.5), (None, 1010.0), (1004.0, 1002.0)])
    assert t.validated_s == (2.0, 3.5, 10.0)
    assert t.delays_s == (2.5, 0.0)  # a record seen "before" the upload ended: clock steps


def test_every_delay_falls_in_one_bin() -> None:
    values = [0.0, 0.3, 0.5, 0.7, 1.2, 2.9, 2.9]
    width, counts = histogram(values)
    assert width == 0.5 and sum(counts) == len(values)
    assert counts[0] == 2 and counts[-1] == 2  # 0 and 0.3; the two at the top
    assert quantile(sorted(values), 0.5) == 0.7 and quantile(sorted(values), 0.95) == 2.9


def test_a_long_run_is_drawn_with_a_bounded_number_of_steps() -> None:
    points = cumulative_points([i / 10 for i in range(100_000)])
    assert len(points) <= MAX_POINTS + 1
    assert points[-1] == (99_999 / 10, 100_000)
    assert all(a[1] < b[1] and a[0] <= b[0] for a, b in pairwise(points))


def test_the_charts_are_svg_with_numbers_only_and_nothing_without_data() -> None:
    assert charts_html(Timeline((), ())) == ""
    svg = delay_histogram_svg([0.2, 0.4, 0.4, 1.1])
    assert svg.startswith("<svg") and "<script" not in svg and "href" not in svg
    assert sum(int(n) for _, n in BAR.findall(svg)) == 4
    assert "median 0.4 s" in svg
    over = validated_over_time_svg([1.0, 2.0, 30.0])
    assert "3 files validated over 30 s" in over
    html = charts_html(Timeline((1.0, 2.0), ()))
    assert "chart-validated" in html and "chart-delay" not in html  # no upload times known


@pytest.mark.slow
async def test_a_run_s_html_report_has_both_charts_from_its_state(tmp_path: Path) -> None:
    async with Sandbox(SandboxOptions(validation_delay_s=0.2)) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, 9, ["8", "9"]))
        cfg = config(tmp_path, sb)
        run = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                            cwd=tmp_path)
    assert run.code == 0, run.stderr[-2000:]
    page = (tmp_path / "reports" / "latest.html").read_text()
    assert page.count("<svg class='chart'") == 2
    assert "9 files validated over" in page
    bars = BAR.findall(page)
    assert sum(int(n) for _, n in bars) == 9  # every validated upload has its delay
    assert "validation delay of 9 files, at most: from the upload&#x27;s end to the " \
           "record&#x27;s first sighting by a poll" in page
    # it measures until a poll looked (an upper bound on PracSuite's time), and says so
    assert ("Validation delay, at most: from the upload&#x27;s end to the record&#x27;s first "
            "sighting by a poll, not PracSuite&#x27;s own time; polls every 0.3 s at first, "
            "growing to at most 60 s while nothing appears") in page
    assert re.search(r"at most: median [^<]*, 95% within [^<]* \(until a poll saw it\)", page)
