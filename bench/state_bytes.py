"""Where a real run's state writes go: bytes a file to the WAL, to the state file (the
checkpoints) and to the send log, and the WAL's frames and the checkpoints' pages by
table and index.

    .venv/bin/python bench/state_bytes.py --rows 10000     # needs strace (Debian: strace)

The run is `bench/scale.py`'s real run (1 KB files, 20 clients, the sandbox), under
`strace -f -e trace=write,pwrite64 -y -xx -s 8`: each WAL frame's 24-byte header
starts with its page number, a checkpoint's pwrite's offset gives the page, and the
finished state file's `dbstat` names the table or index owning each page. strace slows
the run, so its `written` (ru_oublock, what bench-scale reports) is not comparable with
an untraced run's; the syscall bytes are. Writes JSON to bench/results/. Not part of the
test suite.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import sqlite3
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale  # the bench folder is not a package

CALL = re.compile(r"^\d+\s+(\w+)\((\d+)<([^>]*)>,.*?= (\d+)$")
OFFSET = re.compile(r", (\d+)\) = \d+$")
HEADER = re.compile(r'"((?:\\x[0-9a-f]{2}){4})((?:\\x[0-9a-f]{2}){4})?')
PAGE = 1024  # state_schema.PAGE_SIZE


def _path(text: str) -> str:
    """strace -xx writes the path in hex escapes too."""
    return bytes.fromhex(text.replace("\\x", "")).decode() if text.startswith("\\x") else text


def parse(trace: Path) -> dict[str, Any]:
    """Bytes per file name; WAL frames and checkpointed pages by page number."""
    by_file: collections.Counter[str] = collections.Counter()
    wal: collections.Counter[int] = collections.Counter()
    db: collections.Counter[int] = collections.Counter()
    commits = 0  # a commit's last frame gives the file's size after it (nonzero)
    for line in trace.read_text(errors="replace").splitlines():
        m = CALL.match(line)
        if not m:
            continue
        call, _, raw, count = m.groups()
        name, n = Path(_path(raw)).name, int(count)
        by_file[name] += n
        if call != "pwrite64":
            continue
        if name.endswith("-wal") and n == 24:
            header = HEADER.search(line)
            if header:
                wal[int(header.group(1).replace("\\x", ""), 16)] += 1
                size = header.group(2)
                commits += bool(size and int(size.replace("\\x", ""), 16))
        elif name == "state.db" and (off := OFFSET.search(line)):
            db[int(off.group(1)) // PAGE + 1] += 1
    return {"by_file": by_file, "wal": wal, "db": db, "commits": commits}


def by_owner(pages: collections.Counter[int], owner: dict[int, str]) -> dict[str, int]:
    out: collections.Counter[str] = collections.Counter()
    for page, n in pages.items():
        out[owner.get(page, "(freed or moved)")] += n
    return dict(out.most_common())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=10000)
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "bench-scale"))
    args = p.parse_args()
    strace = shutil.which("strace")
    if strace is None:
        sys.exit("strace is not installed (Debian: apt-get install strace)")
    work = Path(args.workdir)
    trace = work / f"state-bytes-{args.rows}.trace"
    measured = scale.run_measured

    def traced(argv: list[str], **kw: Any) -> Any:
        return measured([strace, "-f", "-qq", "-o", str(trace), "-e",
                         "trace=write,pwrite64", "-y", "-xx", "-s", "8", *argv], **kw)

    scale.run_measured = traced
    run = scale.real_run(work, None, "traced", args.rows)
    state = work / f"real-{args.rows}-traced" / "state.db"
    con = sqlite3.connect(state)
    owner = dict(con.execute("SELECT pageno, name FROM dbstat"))
    con.close()
    seen = parse(trace)
    rows = args.rows
    files = {name: round(n / rows / 1e3, 3) for name, n in seen["by_file"].items()
             if name.startswith("state.db")}
    doc = {"rows": rows, "summary": run["summary"], "kb_per_file_by_file": files,
           "wal_frames_by_owner": by_owner(seen["wal"], owner),
           "checkpoint_pages_by_owner": by_owner(seen["db"], owner),
           "distinct_pages": {"wal": len(seen["wal"]), "db": len(seen["db"])},
           "commits": seen["commits"], "wall_s": run["wall_s"]}
    for title, key in (("WAL frames", "wal_frames_by_owner"),
                       ("checkpointed pages", "checkpoint_pages_by_owner")):
        print(f"{title}:")
        for name, n in doc[key].items():
            print(f"  {name:32s} {n:8d}  {n * (PAGE + 24) / rows / 1e3:6.2f} KB a file")
    print("KB a file by file:", json.dumps(files))
    print(f"commits: {seen['commits']} in {run['wall_s']:.0f} s (traced)")
    out = Path(__file__).resolve().parent / "results" / (
        datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ") + "-state-bytes.json")
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"written: {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    trace.unlink()


if __name__ == "__main__":
    main()
