"""The install steps agree with what they install: the container's quick-start `docker run`
line (docs/container.md, "Quick start", where the README's install section points) with
the Dockerfile (paths, user, secrets), and every command shown in the README and docs/
with the CLI.

(The pipx / `pip install --user` steps themselves were run in a throwaway HOME; see the
README. Building the image needs a container engine, which CI does not have.)"""

from __future__ import annotations

import re
import shlex
from itertools import pairwise
from pathlib import Path

import pracsuite_ingest
from pracsuite_ingest.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CONTAINER = (ROOT / "docs" / "container.md").read_text()
DOCS = [README] + [p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def install_section() -> str:
    """The container's install steps: docs/container.md, "Quick start"."""
    start, end = CONTAINER.index("## Quick start"), CONTAINER.index("## Running in a container")
    return CONTAINER[start:end]


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def docker_run() -> list[str]:
    block = next(b for b in shell_blocks(install_section()) if "docker run" in b)
    line = block[block.index("docker run"):].replace("\\\n", " ").splitlines()[0]
    return shlex.split(line)


def test_the_docker_run_line_mounts_what_the_image_expects() -> None:
    argv = docker_run()
    mounts = {}
    for flag, value in pairwise(argv):
        if flag == "-v":
            _, target, *mode = value.split(":")
            mounts[target] = mode[0] if mode else "rw"
    assert mounts == {"/data/input": "ro", "/run/secrets/pracsuite": "ro",
                      "/data/state": "rw", "/data/reports": "rw"}
    volumes = re.search(r'VOLUME \[(.*)\]', DOCKERFILE)
    assert volumes is not None
    assert set(re.findall(r'"([^"]+)"', volumes.group(1))) == {
        "/data/input", "/data/state", "/data/reports"}
    assert "PRACSUITE_INGEST_SECRETS_DIR=/run/secrets/pracsuite" in DOCKERFILE
    assert "PRACSUITE_INGEST_STATE__PATH=/data/state/" in DOCKERFILE
    assert "PRACSUITE_INGEST_REPORT__DIR=/data/reports" in DOCKERFILE
    assert "USER 10001:10001" in DOCKERFILE and "WORKDIR /app" in DOCKERFILE
    # the key files the quick start writes are the ones the secrets folder is read for
    for name in ("vendor_api_key", "practice_api_key"):
        assert f"> secrets/{name}" in install_section()
    # and the README's install section sends an operator there
    readme_install = README[README.index("## Install (for operators)"):README.index("## What it")]
    assert "(docs/container.md)" in readme_install


def test_the_image_tag_is_the_version_and_the_command_parses() -> None:
    argv = docker_run()
    image = next(a for a in argv if a.startswith("pracsuite-ingest:"))
    assert image == f"pracsuite-ingest:{pracsuite_ingest.__version__}"
    assert f"docker build -t {image} ." in install_section()
    args = build_parser().parse_args(argv[argv.index(image) + 1:])
    assert args.command == "run" and args.source_dir == "/data/input"


def test_every_pracsuite_ingest_command_in_the_readme_parses() -> None:
    parser = build_parser()
    for block in (b for doc in DOCS for b in shell_blocks(doc)):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#")[0].strip()
            if not line.startswith("pracsuite-ingest "):
                continue
            argv = shlex.split(line)[1:]
            if argv == ["--version"]:
                continue
            if argv[:2] == ["report", "merge"]:  # shell globs, expanded by the shell
                continue
            parser.parse_args(argv)  # SystemExit (2) on a flag the CLI does not have
