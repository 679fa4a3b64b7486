"""The "Running in a container" lines (docs/container.md) agree with the image and the
CLI: the migration's `docker run` and `podman run` mount what the Dockerfile expects (input and
keys read-only, state and reports writable), run hardened, and every command given to
them parses. (`make container-test` runs the image itself; it needs podman.)"""

from __future__ import annotations

import re
import shlex
from itertools import pairwise
from pathlib import Path

import pytest

import pracsuite_ingest
from pracsuite_ingest.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
CONTAINER = (ROOT / "docs" / "container.md").read_text()
SECTION = CONTAINER[CONTAINER.index("## Running in a container"):
                    CONTAINER.index("## Base images")]
IMAGE = f"pracsuite-ingest:{pracsuite_ingest.__version__}"
KEYS = "/run/secrets/pracsuite"


def blocks() -> list[str]:
    return [b.replace("\\\n", " ") for b in re.findall(r"```sh\n(.*?)```", SECTION, re.S)]


def runner(engine: str) -> list[str]:
    """The `ENGINE run ...` line of the `pracsuite()` function, as argv."""
    [line] = [ln for b in blocks() for ln in b.splitlines() if f"{engine} run --rm --init" in ln]
    return shlex.split(line.strip())


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_the_migration_line_mounts_what_the_image_expects_hardened(engine: str) -> None:
    argv = runner(engine)
    assert argv[-2:] == [IMAGE, "$@"]
    for flag in ("--read-only", "--init", "--rm"):
        assert flag in argv
    assert ("--cap-drop", "ALL") in pairwise(argv)
    assert ("--security-opt", "no-new-privileges") in pairwise(argv)
    assert ("--stop-timeout", "60") in pairwise(argv)
    mounts = {}
    for flag, value in pairwise(argv):
        if flag == "-v":
            _, target, *mode = value.split(":")
            mounts[target] = mode[0] if mode else "rw"
    secrets = {}
    for flag, value in pairwise(argv):
        if flag == "--secret":
            name, *options = value.split(",")
            secrets[name] = dict(o.split("=", 1) for o in options)
    if engine == "docker":
        assert mounts == {"/data/input": "ro", KEYS: "ro", "/data/state": "rw",
                          "/data/reports": "rw"}
    else:  # the keys as Podman secrets, where the image reads them, for its user only
        assert mounts == {"/data/input": "ro", "/data/state": "rw", "/data/reports": "rw"}
        assert {s["target"] for s in secrets.values()} == {
            f"{KEYS}/vendor_api_key", f"{KEYS}/practice_api_key"}
        assert all(s["uid"] == "10001" and s["mode"] == "0400" for s in secrets.values())
        for name in secrets:
            assert f"podman secret create {name} " in SECTION
    assert not any(a.startswith("PRACSUITE_VENDOR") or "API_KEY=" in a for a in argv)


def test_every_command_in_the_section_parses() -> None:
    parser = build_parser()
    seen = 0
    for block in blocks():
        for line in block.splitlines():
            words = shlex.split(line.split("#")[0])
            if words[:1] == ["pracsuite"]:
                argv = words[1:]
            elif IMAGE in words and words[:2] != ["docker", "build"]:
                argv = words[words.index(IMAGE) + 1:]
            else:
                continue
            seen += 1
            if argv in ([], ["--version"], ["$@"]):
                continue
            parser.parse_args(argv)  # SystemExit (2) on a flag the CLI does not have
    assert seen >= 8
