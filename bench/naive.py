"""The baseline a user would write from PracSuite's guide: one file at a time.

For each file: presign, POST to S3, and at the end poll each client's list until as
many new records appeared as files were sent. No concurrency, no state, no retries.
Used by the benchmark as the "naive" column; not part of the product.

    python bench/naive.py BASE_URL VENDOR_KEY PRACTICE_KEY MANIFEST.csv
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
import time
from pathlib import Path

import aiohttp


async def naive(base_url: str, vendor: str, practice: str, manifest: Path) -> dict[str, float]:
    headers = {"x-api-key": vendor, "a-api-key": practice}
    rows = list(csv.DictReader(manifest.open(newline="", encoding="utf-8")))
    started = time.perf_counter()
    async with aiohttp.ClientSession(headers=None) as session:
        before: dict[str, int] = {}
        for client in {r["client_id"] for r in rows}:
            before[client] = await count(session, base_url, client, headers)
        for r in rows:
            path = manifest.parent / r["path"]
            name = r.get("file_name") or path.name
            url = f"{base_url}/patient/{r['client_id']}/patient_attachment"
            async with session.post(url, json={"file_name": name}, headers=headers) as resp:
                presigned = await resp.json()
            form = aiohttp.FormData()
            for k, v in presigned["fields"].items():
                form.add_field(k, v)
            with path.open("rb") as fh:
                form.add_field("file", fh, filename=name)
                async with session.post(presigned["url"], data=form) as resp:
                    if resp.status != 204:
                        raise SystemExit(f"upload failed: {resp.status}")
        uploaded = time.perf_counter()
        want = {c: before[c] + sum(1 for r in rows if r["client_id"] == c) for c in before}
        while True:
            done = [await count(session, base_url, c, headers) >= n for c, n in want.items()]
            if all(done):
                break
            await asyncio.sleep(1.0)
    end = time.perf_counter()
    return {"files": len(rows), "upload_s": uploaded - started, "total_s": end - started}


async def count(session: aiohttp.ClientSession, base_url: str, client: str,
                headers: dict[str, str]) -> int:
    url = f"{base_url}/patient/{client}/patient_attachment?page=1&page_size=1"
    async with session.get(url, headers=headers) as resp:
        body = await resp.json()
    return int(body.get("total_entries", 0)) if isinstance(body, dict) else len(body)


if __name__ == "__main__":
    base, vendor, practice, manifest = sys.argv[1:5]
    print(json.dumps(asyncio.run(naive(base, vendor, practice, Path(manifest)))))
