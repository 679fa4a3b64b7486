"""A local PracSuite API and S3 presigned-POST endpoint that enforce what the real ones do.

A separate program in the same package: it imports nothing from the worker, and the
worker never imports it. Modules, in the order data flows:

- `sigv4`: presign and verify S3 POST policies (pure; also presigns for a real S3).
- `ledger`: clients, presigns, records, and the API's rules (pure).
- `faults`: the fault knobs and their seeded draws.
- `store`: objects on disk; `ObjectLookup` is all validation needs from storage.
- `external`: presign for a real S3 instead (`SandboxOptions.external_s3`), find the
  uploads there by signed HEAD, validate from it.
- `s3`, `api`: the two aiohttp apps; `validation`: records after upload.
- `stats`, `usage`: what `/_sandbox/stats` counts (`usage`: each practice key's calls
  granted and throttled by the vendor key's budget, per second).
- `options`: every knob and its CLI flag; `server`: `Sandbox` and `serve_forever`.

`GET /_sandbox/stats` (and `Sandbox.stats()`) answers::

    {"requests": {"presign": {"200": 3, "429": 1}, "list": {}, "record": {},
                  "presign_url": {}, "content": {}, "unknown": {},
                  "s3_post": {"204": 2, "dropped": 1}, "s3_get": {}, "s3_head": {}},
     "requests_by_status": {"200": 3, "429": 1, "204": 2, "dropped": 1},
     "faults": {"api_429": 1, "s3_drop_after": 1},
     "presigned": 3, "uploads_stored": 3,
     "records_created": {"7": {"count": 1, "records": [
         {"id": "1154", "file_name": "a.pdf", "key": "temp/1/7/1/1/<uuid>/a.pdf"}]}},
     "records_created_total": 1,
     "validation_failures": [{"client_id": "7", "file_name": "b.pdf", "key": "...",
                              "size": 0, "reason": "the file is empty"}],
     "validations_pending": 0, "validation_errors": [],
     "usage": {"rate_budget": 16.0, "practice_keys": {"0": {
         "granted": 3, "throttled": 1, "from_s": 0,
         "granted_per_s": [2, 1], "throttled_per_s": [1, 0]}}}}

(`usage`: the API calls each practice key was granted and refused with a 429, in all and
per second since the sandbox started; keys named by position, see `usage.py`)

plus, against an external S3 only, ``"external_s3": {"url": ..., "watching": 2,
"found": 3, "heads": 4, "errors": []}`` (keys still looked for, uploads found, HEADs
sent, failed HEADs).
"""

from .faults import FaultPlan, ThrottleStyle
from .ledger import DescriptionMode
from .options import SandboxOptions, add_arguments, options_from_args
from .server import Sandbox, serve_forever
from .sigv4 import Credentials, Refusal, presign_post, verify_post

__all__ = [
    "Credentials",
    "DescriptionMode",
    "FaultPlan",
    "Refusal",
    "Sandbox",
    "SandboxOptions",
    "ThrottleStyle",
    "add_arguments",
    "options_from_args",
    "presign_post",
    "serve_forever",
    "verify_post",
]
