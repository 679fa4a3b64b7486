"""atheris (libFuzzer) harness for the manifest readers; run by
tests/test_hostile_manifests.py as `python fuzz_manifest.py -runs=N`.

The first input byte picks CSV or JSON Lines, a UTF-16 BOM and `input.encoding =
cp1252`; the rest is the manifest; every row read
must satisfy `manifest_invariants.check_rows`. Any exception is a crash.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from manifest_invariants import check_rows, physical_lines
    from pracsuite_ingest.scan import read_rows

WORK = Path(tempfile.mkdtemp(prefix="fuzz-manifest-"))


def one_input(data: bytes) -> None:
    if not data:
        return
    name = "m.jsonl" if data[0] & 1 else "m.csv"
    body = data[1:]
    if data[0] & 2 and name == "m.csv":
        body = b"client_id,path,file_name\n" + body
    if data[0] & 4:  # Excel's "Unicode Text": a UTF-16 BOM, tab-separated
        body = b"\xff\xfe" + body
    manifest = WORK / name
    manifest.write_bytes(body)
    encoding = "cp1252" if data[0] & 8 else ""  # an older Windows export
    check_rows(read_rows(manifest, None, encoding=encoding), physical_lines(body))


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
