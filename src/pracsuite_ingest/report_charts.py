"""Two charts for the HTML report, as inline SVG: no external assets, no script.

- files validated over the run (cumulative), from each item's validation time;
- the distribution of PracSuite's validation delay (upload finished -> record seen by a
  reconcile poll) as a histogram. The delay is measured to the poll that saw the
  record, so it is at most one poll interval longer than PracSuite's own.

Pure functions of numbers: every label is computed here and escaped anyway.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pracsuite_ingest.plural import counted
from pracsuite_ingest.scheduling import INTERVAL_CAP_S as MAX_POLL_INTERVAL_S

W, H = 640, 220  # the drawing, in SVG units (it scales to the page's width)
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 14, 40
MAX_POINTS = 400  # a cumulative curve of 100,000 files is drawn with at most this many steps


@dataclass(frozen=True)
class Timeline:
    """What the charts are drawn from: when each file was validated (seconds since the
    run started) and each one's validation delay (seconds; None where the upload's end
    is unknown, e.g. an answer lost and reconciled)."""

    validated_s: tuple[float, ...]
    delays_s: tuple[float, ...]

    @classmethod
    def of(cls, started: float, times: Iterable[tuple[float | None, float]]) -> Timeline:
        """From (uploaded_at, validated_at) epoch seconds and the run's start."""
        validated: list[float] = []
        delays: list[float] = []
        for uploaded_at, validated_at in times:
            validated.append(max(0.0, validated_at - started))
            if uploaded_at is not None:
                delays.append(max(0.0, validated_at - uploaded_at))
        return cls(tuple(sorted(validated)), tuple(delays))


def seconds_text(seconds: float) -> str:
    """A short duration for an axis: 0.4 s, 12 s, 3 min, 2.5 h."""
    if seconds < 10:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def nice_step(span: float, parts: int) -> float:
    """A round bin or tick width (1, 2 or 5 times a power of ten) near span / parts."""
    raw = max(span / parts, 1e-3)
    power = 10.0 ** math.floor(math.log10(raw))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def histogram(values: Sequence[float], bins: int = 12) -> tuple[float, list[int]]:
    """(bin width, counts) over [0, max]: every value falls in one bin."""
    width = nice_step(max(values, default=0.0) or 1.0, bins)
    counts = [0] * max(1, math.floor(max(values, default=0.0) / width) + 1)
    for v in values:
        counts[min(len(counts) - 1, int(v // width))] += 1
    return width, counts


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank) of values already sorted."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1)]


def cumulative_points(validated_s: Sequence[float]) -> list[tuple[float, int]]:
    """(seconds, files validated by then) steps of the sorted times, at most MAX_POINTS."""
    n = len(validated_s)
    if n == 0:
        return []
    stride = max(1, math.ceil(n / MAX_POINTS))
    points = [(validated_s[i - 1], i) for i in range(stride, n + 1, stride)]
    if points[-1][1] != n:
        points.append((validated_s[-1], n))
    return points


def _svg(label: str, body: str) -> str:
    esc = html.escape
    return (f"<svg class='chart' viewBox='0 0 {W} {H}' width='{W}' height='{H}' role='img' "
            f"aria-label='{esc(label)}' xmlns='http://www.w3.org/2000/svg'>"
            f"<title>{esc(label)}</title>{body}</svg>")


def _axes(x_labels: Iterable[tuple[float, str]], y_max: int, y_name: str) -> str:
    esc = html.escape
    x0, y0, x1, y1 = LEFT, H - BOTTOM, W - RIGHT, TOP
    out = [f"<line x1='{x0}' y1='{y0}' x2='{x1}' y2='{y0}' class='axis'/>",
           f"<line x1='{x0}' y1='{y0}' x2='{x0}' y2='{y1}' class='axis'/>",
           f"<text x='{x0 - 6}' y='{y1 + 4}' text-anchor='end'>{y_max:,}</text>",
           f"<text x='{x0 - 6}' y='{y0}' text-anchor='end'>0</text>",
           f"<text x='{x0 - 6}' y='{(y0 + y1) / 2:.0f}' text-anchor='end'>{esc(y_name)}</text>"]
    for x, text in x_labels:
        anchor = "end" if x > x1 - 20 else "middle"  # the last label stays inside the box
        out.append(f"<text x='{x:.1f}' y='{y0 + 16}' text-anchor='{anchor}'>{esc(text)}</text>")
    return "".join(out)


def validated_over_time_svg(validated_s: Sequence[float]) -> str:
    """Files validated since the run started: a step line rising to the total."""
    points = cumulative_points(validated_s)
    if not points:
        return ""
    total = points[-1][1]
    span = max(points[-1][0], 1.0)
    x0, y0, plot_w, plot_h = LEFT, H - BOTTOM, W - LEFT - RIGHT, H - TOP - BOTTOM

    def xy(t: float, n: int) -> str:
        return f"{x0 + t / span * plot_w:.1f},{y0 - n / total * plot_h:.1f}"

    path = [f"{x0},{y0}"]
    previous = 0
    for t, n in points:
        path += [xy(t, previous), xy(t, n)]
        previous = n
    line = "<polyline class='line' points='" + " ".join(path) + "'/>"
    ticks = [(x0 + f * plot_w, seconds_text(f * span)) for f in (0, 0.25, 0.5, 0.75, 1)]
    caption = (f"<text x='{W / 2:.0f}' y='{H - 6}' text-anchor='middle' class='cap'>time since "
               "the run started</text>")
    label = f"{counted(total, 'file')} validated over {seconds_text(span)}"
    return _svg(label, _axes(ticks, total, "files") + line + caption)


def delay_histogram_svg(delays_s: Sequence[float]) -> str:
    """How long PracSuite took to show each upload's record: files per delay bin."""
    if not delays_s:
        return ""
    width, counts = histogram(delays_s)
    top = max(counts)
    x0, y0, plot_w, plot_h = LEFT, H - BOTTOM, W - LEFT - RIGHT, H - TOP - BOTTOM
    bar_w = plot_w / len(counts)
    bars = []
    for i, n in enumerate(counts):
        h = n / top * plot_h
        bars.append(f"<rect class='bar' x='{x0 + i * bar_w + 1:.1f}' y='{y0 - h:.1f}' "
                    f"width='{max(bar_w - 2, 1):.1f}' height='{h:.1f}'>"
                    f"<title>{html.escape(seconds_text(i * width))} to "
                    f"{html.escape(seconds_text((i + 1) * width))}: {counted(n, 'file')}"
                    "</title></rect>")
    every = max(1, math.ceil(len(counts) / 6))
    ticks = [(x0 + i * bar_w, seconds_text(i * width)) for i in range(0, len(counts) + 1, every)]
    ordered = sorted(delays_s)
    caption = (f"<text x='{W / 2:.0f}' y='{H - 6}' text-anchor='middle' class='cap'>at most: "
               f"median {html.escape(seconds_text(quantile(ordered, 0.5)))}, 95% within "
               f"{html.escape(seconds_text(quantile(ordered, 0.95)))} (until a poll saw it)"
               "</text>")
    label = (f"validation delay of {counted(len(delays_s), 'file')}, at most: from the upload's "
             "end to the record's first sighting by a poll")
    return _svg(label, _axes(ticks, top, "files") + "".join(bars) + caption)


CSS = """
svg.chart{max-width:100%;height:auto;background:#fff;border:1px solid #d1d9e0;border-radius:8px}
svg.chart text{font:12px system-ui,sans-serif;fill:#59636e}
svg.chart .axis{stroke:#8c959f;stroke-width:1}
svg.chart .line{fill:none;stroke:#1a7f37;stroke-width:2}
svg.chart .bar{fill:#0969da}
.charts{display:flex;flex-wrap:wrap;gap:16px}.charts figure{margin:0}
.charts figcaption{color:#59636e;font-size:13px;margin:4px 0}
"""


def delay_caption(poll_interval_s: float | None) -> str:
    """What the delay chart measures: until WE looked, so an upper bound on PracSuite's
    own validation time, as coarse as the polls."""
    polls = (f"; polls every {seconds_text(poll_interval_s)} at first, growing to at most "
             f"{seconds_text(MAX_POLL_INTERVAL_S)} while nothing appears"
             if poll_interval_s else "")
    return ("Validation delay, at most: from the upload's end to the record's first sighting "
            f"by a poll, not PracSuite's own time{polls}")


def charts_html(timeline: Timeline, poll_interval_s: float | None = None) -> str:
    """The report's charts section (trusted HTML: numbers only), or "" with nothing to draw.
    `poll_interval_s` is reconcile.poll_interval_s, shown with the delay chart."""
    over_time = validated_over_time_svg(timeline.validated_s)
    delays = delay_histogram_svg(timeline.delays_s)
    if not over_time and not delays:
        return ""
    figures = []
    if over_time:
        figures.append("<figure id='chart-validated'><figcaption>Files validated over time"
                       "</figcaption>" + over_time + "</figure>")
    if delays:
        figures.append("<figure id='chart-delay'><figcaption>"
                       + html.escape(delay_caption(poll_interval_s)) + "</figcaption>"
                       + delays + "</figure>")
    return (f"<style>{CSS}</style><h2>Charts</h2><section class='charts'>"
            + "".join(figures) + "</section>\n")
