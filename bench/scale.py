"""Scale: dry runs, `report merge` and real runs at many rows; memory and disk per row.

    make bench-scale                 # or: .venv/bin/python bench/scale.py [options]
    .venv/bin/python bench/scale.py --before 1aecac5      # the same cases on that commit too
    .venv/bin/python bench/scale.py --dry 10000 --merge 100000 --real 1000

Cases (issue 22): `run --dry-run` over 10^4 and 10^5 rows of 1 KB files, `report merge`
of 10^5 and 10^6 rows (four shards of one practice, written here as a run writes them),
and real runs of 10^3 and 10^4 1 KB files against the sandbox (its own S3 stand-in, a
separate process, validation delay 0). Each is the CLI as a child process: wall, CPU ms
per row, peak RSS and bytes written to disk (ru_oublock). The state file lives on disk;
reports and logs go to /dev/shm (tmpfs writes count nothing), so a run's `written` is
its state file and WAL; `net` is what of it reached the disk (less the pages dropped
while still dirty: the send log emptied at each commit, the WAL deleted at the end), and
`reads` the read calls a row (each a syscall, whether the page cache held the page or
not). `--before REV` also runs every case on the code of REV (`git archive` into the
work folder, put first on PYTHONPATH), side by side in one table.
Writes bench/results/<time>-scale.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import run
from measure import run_measured
from servers import PYTHON, REPO

SHM = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
STATUSES = ("validated", "validated", "validated", "skipped", "missing", "failed", "invalid")


def sizes(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


# ----------------------------------------------------------------------------- inputs
def make_files(root: Path, count: int) -> Path:
    """`count` 1 KB files of 20 clients and their manifest (kept between runs)."""
    return run.make_files(root, count, 1024, 20)


def make_parts(root: Path, rows: int, shards: int = 4) -> list[Path]:
    """`shards` report folders of one practice holding `rows` items in all, each a
    latest.json as `report.write` lays it out (a line per item)."""
    folders = [root / f"parts-{rows}" / "clinic" / f"shard-{i}-of-{shards}"
               for i in range(1, shards + 1)]
    if all((f / "latest.json").is_file() for f in folders):
        return folders
    for n, folder in enumerate(folders):
        folder.mkdir(parents=True, exist_ok=True)
        count = rows // shards + (1 if n < rows % shards else 0)
        summary = {"total": count}
        with (folder / "latest.json").open("w", encoding="utf-8") as fh:
            fh.write(f'{{\n "run_id": "r{n}",\n "started_at": "2026-12-01T01:00:00+00:00",\n'
                     ' "finished_at": "2026-12-01T05:00:00+00:00",\n'
                     f' "summary": {json.dumps(summary)},\n "items": [')
            for i in range(count):
                status = STATUSES[i % len(STATUSES)]
                item = {"client_id": str(i % 997 + n * 1000), "path": f"/in/{n}/{i:07d}.pdf",
                        "file_name": f"{i:07d} scan.pdf", "size": 1024,
                        "sha256": secrets.token_hex(32), "status": status,
                        "attachment_id": str(i) if status in ("validated", "skipped") else None,
                        "key": f"temp/u/{secrets.token_hex(8)}/{i:07d} scan.pdf",
                        "error": None if status == "validated" else "why: " + status,
                        "attempts": 1, "verified": None, "extra": {"note": f"n{i}"}}
                fh.write(("," if i else "") + "\n  " + json.dumps(item, ensure_ascii=False))
            fh.write("\n ]\n}\n")
    return folders


# ------------------------------------------------------------------------------ cases
def env_for(code: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
    if code is not None:
        env["PYTHONPATH"] = str(code / "src")
    return env


def config(path: Path, out: Path, sandbox: dict[str, str] | None) -> Path:
    lines = ["[api]"]
    if sandbox:
        lines += [f"{k} = {json.dumps(v)}" for k, v in sandbox.items()]
    lines += ["requests_per_second = 1000", "[reconcile]", "deadline_s = 600",
              "poll_interval_s = 1", "[state]", f'path = "{out / "state.db"}"', "[report]",
              f'dir = "{SHM / out.name / "reports"}"', "[log]", 'format = "json"']
    path.write_text("\n".join(lines) + "\n")
    return path


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    shutil.rmtree(SHM / path.name, ignore_errors=True)
    (SHM / path.name).mkdir(parents=True)
    return path


def figures(m: Any, rows: int) -> dict[str, Any]:
    d: dict[str, Any] = m.as_dict()
    d["cpu_ms_per_row"] = round(m.cpu_s / rows * 1e3, 3)
    d["written_kb_per_row"] = round(m.written_mb * 1e3 / rows, 2)
    # of it, what reached the disk: less the pages dropped dirty (the send log emptied
    # at each commit, the WAL deleted at the end); its read calls
    d["net_written_kb_per_row"] = round((m.written_mb - m.cancelled_mb) * 1e3 / rows, 2)
    d["read_calls_per_row"] = round(m.read_calls / rows, 1)
    return d


def dry_run(work: Path, code: Path | None, tag: str, rows: int) -> dict[str, Any]:
    manifest = make_files(work / "files", rows)
    out = fresh(work / f"dry-{rows}-{tag}")
    cfg = config(out / "config.toml", out, None)
    m = run_measured([PYTHON, "-m", "pracsuite_ingest", "run", "--dry-run", "--config",
                      str(cfg), "--manifest", str(manifest)], env=env_for(code),
                     cwd=manifest.parent, log=SHM / out.name / "worker.log")
    return {**figures(m, rows), "state_mb": state_mb(out)}


def merge(work: Path, code: Path | None, tag: str, rows: int) -> dict[str, Any]:
    parts = make_parts(work, rows)
    out = fresh(work / f"merged-{rows}-{tag}")
    m = run_measured([PYTHON, "-m", "pracsuite_ingest", "report", "merge", *map(str, parts),
                      "--out", str(out / "all")], env=env_for(code), cwd=work,
                     log=out / "merge.log")
    if m.code not in (0, 1):
        raise RuntimeError(f"merge of {rows} rows exited {m.code}: "
                           f"{(out / 'merge.log').read_text()[-2000:]}")
    return figures(m, rows)


def real_run(work: Path, code: Path | None, tag: str, rows: int) -> dict[str, Any]:
    manifest = make_files(work / "files", rows)
    out = fresh(work / f"real-{rows}-{tag}")
    sandbox = subprocess.Popen(
        [PYTHON, "-m", "pracsuite_ingest", "sandbox", "--port", "0", "--clients", "1-20",
         "--validation-delay", "0"], env=env_for(None), stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    try:
        assert sandbox.stdout is not None
        lines = [sandbox.stdout.readline() for _ in range(4)]
        keys = {k.strip(): json.loads(v) for k, _, v in (x.partition("=") for x in lines[1:])}
        cfg = config(out / "config.toml", out, keys)
        m = run_measured([PYTHON, "-m", "pracsuite_ingest", "run", "--config", str(cfg),
                          "--manifest", str(manifest)], env=env_for(code),
                         cwd=manifest.parent, log=SHM / out.name / "worker.log")
    finally:
        sandbox.kill()  # nothing of it is measured; a loaded machine took > 30 s on SIGTERM
        sandbox.wait()
    report = json.loads((SHM / out.name / "reports" / "latest.json").read_text())
    return {**figures(m, rows), "state_mb": state_mb(out), "summary": report["summary"]}


POLL_CHILD = """
import json, sys, tempfile, time
from pathlib import Path
from pracsuite_ingest.models import LocalFile, Row, Stage
from pracsuite_ingest.state import State
rows = int(sys.argv[1])
state = State.open(Path(tempfile.mkdtemp(dir=sys.argv[2])) / "state.db")
state.new_run("r", "t")
for i in range(rows):
    row = Row(i, str(i % 500), f"files/{i:07d}.pdf", f"{i:07d}.pdf")
    item = state.add_item("r", i, row, LocalFile(row, Path(row.path), 1024, f"{i:064x}"),
                          Stage.SEEN, snapshot_run="r")
    state._db.execute("UPDATE items SET stage = ? WHERE id = ?",
                      ("uploaded" if i % 1000 == 0 else "validated", item))
state.commit()
calls = 200
started = time.process_time()
for n in range(calls):
    state.awaiting("r", str(n % 500))
    state.awaiting_since("r")
took = time.process_time() - started
print(json.dumps({"ms_per_poll_look_ups": round(took / calls * 1e3, 3)}))
"""


def poll(work: Path, code: Path | None, tag: str, rows: int) -> dict[str, Any]:
    """CPU of a poll's look-ups (`awaiting` of one client, `awaiting_since`) on a state
    of `rows` items, one in 1,000 awaiting a record."""
    out = fresh(work / f"poll-{rows}-{tag}")
    m = run_measured([PYTHON, "-c", POLL_CHILD, str(rows), str(out)], env=env_for(code),
                     cwd=out)
    return {**figures(m, rows), **json.loads(m.stdout)}


def state_mb(out: Path) -> float:
    return round(sum(p.stat().st_size for p in out.glob("state.db*")) / 1e6, 3)


def checkout(rev: str, work: Path) -> Path:
    """The code of `rev`, extracted once into the work folder."""
    dest = work / f"code-{rev}"
    if not (dest / "src").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


CASES = {"dry": dry_run, "merge": merge, "real": real_run, "poll": poll}


def results_doc(before: str | None, **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A results file's document (when, this checkout's revision, the machine) and the
    `results` mapping inside it, for a bench comparing `before` with this checkout."""
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False).stdout.strip()
    results: dict[str, Any] = {}
    doc = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "head": head,
           "before": before, "cpus": os.cpu_count(), "python": sys.version.split()[0],
           **extra, "results": results}
    return doc, results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry", default="10000,100000", help="dry-run row counts")
    p.add_argument("--merge", default="100000,1000000", help="merged row counts")
    p.add_argument("--real", default="1000",
                   help="real-run file counts (1 KB each); 10000 took 12 min at load 8-10")
    p.add_argument("--poll", default="100000", help="state rows under the poll look-ups")
    p.add_argument("--before", help="a git revision to run beside this checkout's code")
    p.add_argument("--only-before", action="store_true", help="run the --before code only")
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "bench-scale"))
    args = p.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    codes: list[tuple[str, Path | None]] = []
    if args.before:
        codes.append((f"before {args.before}", checkout(args.before, work)))
    if not args.only_before:
        codes.append(("this checkout", None))
    doc, results = results_doc(args.before)
    out = REPO / "bench" / "results" / f"{datetime.now(UTC):%Y-%m-%dT%H-%M-%SZ}-scale.json"
    for case, counts in (("dry", sizes(args.dry)), ("merge", sizes(args.merge)),
                         ("real", sizes(args.real)), ("poll", sizes(args.poll))):
        for rows in counts:
            for label, code in codes:
                tag = "before" if code is not None else "after"
                r = CASES[case](work, code, tag, rows)
                results.setdefault(f"{case} {rows}", {})[label] = r
                print(f"{case:5} {rows:>9,} {label:<22} exit {r['code']}  "
                      f"wall {r['wall_s']:8.1f} s  cpu {r['cpu_ms_per_row']:7.3f} ms/row  "
                      f"peak {r['peak_rss_mb']:7.1f} MB  written "
                      f"{r['written_kb_per_row']:7.2f} KB/row  (net "
                      f"{r['net_written_kb_per_row']:.2f})  reads {r['read_calls_per_row']}/row"
                      + (f"  poll look-ups {r['ms_per_poll_look_ups']} ms"
                         if "ms_per_poll_look_ups" in r else ""), flush=True)
                r["load_after"] = [round(x, 1) for x in os.getloadavg()]
                out.write_text(json.dumps(doc, indent=1) + "\n")  # case by case
    print(f"written: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
