"""A py-spy raw profile (`record -f raw`: one collapsed stack and its sample count a line)
summed up: the top functions by own and by cumulative samples, and the samples grouped
by what they were doing (issue 23's buckets), as Markdown.

    .venv/bin/python bench/profile_summary.py PROFILE.txt [--top 20] > summary.md

A sample's group: the first of CONCERNS that some frame of its stack matches, else the
LAYER of the frame nearest its leaf that one names. py-spy samples wall time: on a
loaded machine a thread preempted while running counts as running (shares hold, but
not absolute times); uvloop's C code (callbacks' C part and its epoll wait) shows as
its caller, `Runner.run`.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# A concern anywhere in the stack decides first (a JSON dump inside a log call is
# logging; the thread hand-off aiohttp makes to read the proxy settings is request setup).
CONCERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("start-up imports", ("<frozen importlib._bootstrap>",)),
    ("aiohttp request setup (trust_env: proxy/netrc)",
     ("get_env_proxy_for_url", "proxies_from_env", "netrc_from_env", "_get_netrc_auth",
      "proxy_bypass", "getproxies", "netrc.py")),
    ("SQLite", ("sqlite3", "pracsuite_ingest/state.py")),
    ("logging/structlog", ("structlog/", "pracsuite_ingest/logs.py", "logging/__init__.py")),
)
# Else the frame nearest the leaf that one of these names (a stdlib call made by our
# code is our code's; a callback run by the loop is the callback's).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("JSON", ("json/", "pydantic")),
    ("multipart/form body", ("pracsuite_ingest/formbody.py", "aiohttp/multipart.py",
                             "aiohttp/formdata.py", "aiohttp/payload.py")),
    ("aiohttp/yarl other (HTTP client and server protocol)",
     ("aiohttp/", "yarl/", "multidict/")),
    ("own code", ("pracsuite_ingest/",)),
    ("event loop and thread hand-offs (incl. uvloop's C code)",
     ("asyncio/", "uvloop", "selectors.py", "threading.py", "concurrent/futures")),
)
# A thread-pool worker waiting for work (py-spy counts it as active on this machine).
IDLE_LEAVES = ("_worker (concurrent/futures/thread.py",)


def parse(path: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    file = m["file"]
    for cut in ("site-packages/", "src/", "lib/python3"):
        if cut in file:
            file = file.split(cut, 1)[1]
            break
    return f"{m['func']} ({file})"


def group_of(stack: list[str]) -> str:
    for name, marks in CONCERNS:
        if any(mark in frame for frame in stack for mark in marks):
            return name
    for frame in reversed(stack):
        for name, marks in LAYERS:
            if any(mark in frame for mark in marks):
                return name
    return "other"


def summary(samples: list[tuple[list[str], int]], top: int) -> str:
    total = sum(n for _, n in samples)
    own: Counter[str] = Counter()
    cum: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    idle = sum(n for stack, n in samples if stack[-1].startswith(IDLE_LEAVES))
    samples = [(stack, n) for stack, n in samples if not stack[-1].startswith(IDLE_LEAVES)]
    total = sum(n for _, n in samples)
    for stack, n in samples:
        own[short(stack[-1])] += n
        for f in {short(f) for f in stack}:
            cum[f] += n
        groups[group_of(stack)] += n
    lines = [f"{total} samples (py-spy, all threads; {idle} more of idle thread-pool "
             "workers left out)\n",
             "| group | samples | share |", "|---|---:|---:|"]
    lines += [f"| {g} | {n} | {n / total:.1%} |" for g, n in groups.most_common()]
    for title, counter in (("own", own), ("cumulative", cum)):
        lines += ["", f"Top {top} by {title} samples:", "",
                  f"| function | {title} | share |", "|---|---:|---:|"]
        lines += [f"| `{f}` | {n} | {n / total:.1%} |" for f, n in counter.most_common(top)]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args()
    print(summary(parse(args.profile), args.top), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
