"""Prometheus metrics for schedulers, at the end of a `run` or `reconcile`.

When `metrics.textfile` is set, the metrics are written there (atomically) for
node-exporter's textfile collector; when `metrics.pushgateway_url` is set, they are
pushed to that Pushgateway under `metrics.job`. Either, both or neither.

`pracsuite_ingest_last_success_timestamp_seconds` is when a command last ended with
exit 0 (every item validated or skipped). A command that did not succeed leaves it as
it was: the textfile carries the previous value over, and the push leaves it out
(a Pushgateway POST replaces only the metrics it sends).

A failure to write or push metrics is logged and never changes the exit code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from pracsuite_ingest.models import Status

PREFIX = "pracsuite_ingest"
LAST_SUCCESS = f"{PREFIX}_last_success_timestamp_seconds"
PUSH_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one command did, as the metrics tell it."""

    summary: Mapping[str, int]
    exit_code: int
    bytes_uploaded: int
    bytes_validated: int
    retries: int
    duration_s: float
    finished_at: float  # unix time
    api: Mapping[str, Any] | None = None  # rate_gate.Pace.as_dict() of the command


def outcome_of(doc: Mapping[str, Any], *, exit_code: int, bytes_uploaded: int, retries: int,
               duration_s: float, finished_at: float) -> Outcome:
    """What the report `doc` and the command's numbers say (the API's pace: `doc["api"]`)."""
    validated = sum(int(it.get("size") or 0) for it in doc["items"]
                    if it["status"] == Status.VALIDATED)
    return Outcome(doc["summary"], exit_code, bytes_uploaded, validated, retries, duration_s,
                   finished_at, doc.get("api"))


def registry_for(o: Outcome, *, labels: Mapping[str, str],
                 previous_success: float | None) -> CollectorRegistry:
    """The metrics of `o`; `labels` go on every sample (e.g. the shard)."""
    reg = CollectorRegistry()
    names = sorted(labels)

    def gauge(name: str, doc: str, value: float, extra: Mapping[str, str] | None = None) -> None:
        g = Gauge(f"{PREFIX}_{name}", doc, [*names, *(extra or {})], registry=reg)
        (g.labels(**labels, **(extra or {})) if names or extra else g).set(value)

    items = Gauge(f"{PREFIX}_items", "Items of the last run or reconcile, per report status",
                  [*names, "status"], registry=reg)
    for status in Status:
        items.labels(**labels, status=status.value).set(o.summary.get(status.value, 0))
    gauge("uploaded_bytes", "Bytes uploaded to S3 by the last command", o.bytes_uploaded)
    gauge("validated_bytes", "Bytes of the last run's items that PracSuite validated",
          o.bytes_validated)
    gauge("retries", "Requests retried by the last command (429, 5xx, resets)", o.retries)
    gauge("duration_seconds", "How long the last command took", o.duration_s)
    gauge("exit_code", "Exit code of the last command (0 ok, 1 some item not validated, "
          "3 stopped, 130 interrupted)", o.exit_code)
    gauge("last_run_timestamp_seconds", "When the last command finished", o.finished_at)
    if o.api is not None:
        gauge("api_requests_per_second", "The API rate the last command ended at (with "
              "requests_per_second = \"auto\": where it settled)", o.api["requests_per_second"])
        gauge("api_calls", "PracSuite API calls made by the last command", o.api["calls"])
        gauge("api_throttled", "PracSuite API calls answered 429 in the last command",
              o.api["throttled"])
    success = o.finished_at if o.exit_code == 0 else previous_success
    if success is not None:
        gauge("last_success_timestamp_seconds",
              "When a command last ended with every item validated or skipped", success)
    return reg


def previous_success(text: str, labels: Mapping[str, str]) -> float | None:
    """The last-success timestamp in an earlier textfile with these labels, if any."""
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and sample.labels == dict(labels):
                    return float(sample.value)
    except ValueError:  # a file someone edited by hand: start afresh
        return None
    return None


def textfile_path(configured: str, shard_label: str | None) -> Path:
    """Each shard writes its own file: node-exporter refuses one metric in two files."""
    path = Path(configured)
    if shard_label is None:
        return path
    return path.with_name(f"{path.stem}.{shard_label}{path.suffix}")


def export(o: Outcome, *, textfile: str, pushgateway_url: str, job: str,
           shard_label: str | None, log: Any) -> None:
    """Write the textfile and/or push, as configured; log (never raise) what failed."""
    labels = {"shard": shard_label} if shard_label else {}
    if textfile:
        path = textfile_path(textfile, shard_label)
        try:
            before = path.read_text(encoding="utf-8") if path.is_file() else ""
            reg = registry_for(o, labels=labels, previous_success=previous_success(before, labels))
            path.parent.mkdir(parents=True, exist_ok=True)
            write_to_textfile(str(path), reg)
            log.debug("metrics written", textfile=str(path))
        except OSError as exc:
            log.warning("metrics textfile not written; check metrics.textfile",
                        textfile=str(path), error=exc.strerror or str(exc))
    if pushgateway_url:
        reg = registry_for(o, labels={}, previous_success=None)
        try:
            pushadd_to_gateway(pushgateway_url, job=job, registry=reg, grouping_key=labels,
                               timeout=PUSH_TIMEOUT_S)
            log.debug("metrics pushed", pushgateway=pushgateway_url)
        except Exception as exc:  # urllib raises many kinds; none may end the run
            log.warning("metrics not pushed; check metrics.pushgateway_url and that the "
                        "Pushgateway is up", pushgateway=pushgateway_url, error=str(exc))
