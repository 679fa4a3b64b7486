"""Sharding (docs/contract.md, "Sharding"): which rows a shard takes, and where its files go.

A practice's rows are split between N processes by a stable hash of the client id, so
one client's uploads and its reconciliation always stay in one process. Shard I of N
(1 <= I <= N) keeps its own state file `<state.path>.shard-I-of-N`, writes its reports
to `<report.dir>/shard-I-of-N/`, and gets 1/N of `api.requests_per_second`, which is
the practice's total.

The shard comes from `run --shard I/N`, or else from Kubernetes' `JOB_COMPLETION_INDEX`
(0-based) together with `PRACSUITE_INGEST_SHARD__COUNT`. Everything here is pure except
`existing_layouts`, which lists the state files beside `state.path`.
"""

from __future__ import annotations

import glob
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pracsuite_ingest.errors import ConfigError
from pracsuite_ingest.models import Row
from pracsuite_ingest.settings import Settings

ENV_COUNT = "PRACSUITE_INGEST_SHARD__COUNT"
ENV_INDEX = "JOB_COMPLETION_INDEX"
ENV_PREFIX = "PRACSUITE_INGEST_SHARD__"
MAX_SHARDS = 1000
_LABEL = re.compile(r"\.shard-(\d+)-of-(\d+)$")


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` (1-based) of `count`."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ValueError(f"the shard count must be 1 to {MAX_SHARDS}, not {self.count}")
        if not 1 <= self.index <= self.count:
            raise ValueError(f"the shard must be 1 to {self.count}, not {self.index}")

    @property
    def label(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def owns(self, client_id: str) -> bool:
        return shard_of(client_id, self.count) == self.index


def shard_of(client_id: str, count: int) -> int:
    """The 1-based shard of `client_id` among `count`: the same in every process and
    Python version (sha256, not `hash()`, which is salted per process)."""
    digest = hashlib.sha256(client_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def parse(text: str) -> Shard:
    """ "I/N" -> Shard(I, N); ValueError saying what is wrong."""
    index, slash, count = text.strip().partition("/")
    if not slash or not index.strip().isdigit() or not count.strip().isdigit():
        raise ValueError(f"expected I/N such as 2/5, not {text!r}")
    return Shard(int(index), int(count))


def resolve(flag: str | None, environ: Mapping[str, str]) -> Shard | None:
    """The shard of this process: `--shard I/N`, else the environment, else None.

    From the environment, `PRACSUITE_INGEST_SHARD__COUNT` turns sharding on and
    `JOB_COMPLETION_INDEX` (0-based, set by an Indexed Job) must then be set too;
    `JOB_COMPLETION_INDEX` alone is ignored (an Indexed Job that does not shard).
    Raises `ConfigError` naming the flag or variable.
    """
    unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k != ENV_COUNT)
    if unknown:
        raise ConfigError(f"unknown configuration variable(s): {', '.join(unknown)} "
                          f"(the only shard variable is {ENV_COUNT})")
    if flag is not None:
        try:
            return parse(flag)
        except ValueError as exc:
            raise ConfigError(f"--shard: {exc}") from None
    count_text = environ.get(ENV_COUNT, "").strip()
    if not count_text:
        return None
    index_text = environ.get(ENV_INDEX, "").strip()
    if not count_text.isdigit():
        raise ConfigError(f"{ENV_COUNT}: expected a whole number, not {count_text!r}")
    if not index_text:
        raise ConfigError(f"{ENV_COUNT} is set but {ENV_INDEX} is not: run as an Indexed "
                          "Job, or pass --shard I/N")
    if not index_text.isdigit():
        raise ConfigError(f"{ENV_INDEX}: expected a whole number, not {index_text!r}")
    try:
        return Shard(int(index_text) + 1, int(count_text))
    except ValueError as exc:
        raise ConfigError(f"{ENV_INDEX}={index_text} with {ENV_COUNT}={count_text}: {exc} "
                          f"({ENV_INDEX} counts from 0)") from None


def only_mine(rows: Iterable[Row], shard: Shard | None) -> Iterator[Row]:
    """The rows this shard takes (all of them when not sharded), in input order."""
    return iter(rows) if shard is None else (r for r in rows if shard.owns(r.client_id))


def state_path(base: str, shard: Shard) -> str:
    return f"{base}.{shard.label}"


def apply(settings: Settings, shard: Shard) -> Settings:
    """The shard's settings: its own state file and report folder, 1/N of the rate and
    of the bandwidth cap."""
    return settings.model_copy(update={
        "state": settings.state.model_copy(update={"path": state_path(settings.state.path,
                                                                      shard)}),
        "report": settings.report.model_copy(
            update={"dir": str(Path(settings.report.dir) / shard.label)}),
        "api": settings.api.model_copy(update=_shard_rate(settings, shard.count)),
        "upload": settings.upload.model_copy(update={
            "max_bytes_per_second": settings.upload.max_bytes_per_second // shard.count}),
    })


def _shard_rate(settings: Settings, count: int) -> dict[str, object]:
    """A shard's share of the rate: 1/N of a fixed one; "auto" adapts within 1/N of the
    maximum (each shard finds its own pace; together they stay under PracSuite's). With
    api.shared_limit the rate is already the whole fleet's, in Redis: not divided."""
    rps = settings.api.requests_per_second
    if settings.api.shared_limit:
        return {}
    if isinstance(rps, str):
        return {"max_requests_per_second": settings.api.max_requests_per_second / count}
    return {"requests_per_second": rps / count}


def layout_conflict(base: str, shard: Shard | None, existing: Iterable[Path]) -> str | None:
    """Why this run must not start, or None.

    A client's earlier uploads are known only to the state file of the shard it fell
    in. Run with another shard count (or unsharded after sharded, or the reverse) and
    the client lands in a state file that has never seen them: every file would be sent
    again. `existing` are the state files found beside `base` (`existing_layouts`).
    """
    counts = set()
    for path in existing:
        m = _LABEL.search(path.name)
        counts.add(int(m.group(2)) if m else None)
    wanted = None if shard is None else shard.count
    others = counts - {wanted}
    if not others:
        return None
    found = ", ".join(sorted("unsharded" if c is None else f"{c} shards" for c in others))
    now = "unsharded" if shard is None else f"with {shard.count} shards"
    return (f"state.path {base} already has state files for another layout ({found}); "
            f"running {now} would send again every file those runs validated. Keep the "
            "practice's shard count (PRACSUITE_INGEST_SHARD__COUNT, --shard I/N) as it was")


def existing_layouts(base: str) -> list[Path]:
    """The state files of `base`: itself and any `<base>.shard-I-of-N`."""
    path = Path(base)
    found = [path] if path.is_file() else []
    if path.parent.is_dir():
        found += [p for p in path.parent.glob(f"{glob.escape(path.name)}.shard-*-of-*")
                  if _LABEL.search(p.name)]
    return found
