"""Every sandbox knob, with its default, and the command-line flags that set them."""

from __future__ import annotations

import argparse
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .external import ExternalS3
from .faults import FaultKnobs, FaultPlan, ThrottleStyle
from .ledger import DescriptionMode
from .sigv4 import Credentials

MAX_FILE_BYTES = 104_857_600  # PracSuite's limit; the same number as the worker's
DEFAULT_CLIENTS = (*(str(n) for n in range(1, 51)), "1001")
DEFAULT_API_PORT = 8700
SECRET_ENV = "SANDBOX_EXTERNAL_S3_SECRET_KEY"  # noqa: S105 - a variable's name
TOKEN_ENV = "SANDBOX_EXTERNAL_S3_SESSION_TOKEN"  # noqa: S105 - a variable's name


def _token() -> str:
    return secrets.token_hex(16)


@dataclass
class SandboxOptions(FaultKnobs):
    """How the sandbox runs and behaves. Defaults are the friendly, fault-free case
    except `description_mode`, which defaults to the hard case (empty descriptions).

    Ports 0 are ephemeral. `data_dir` None means a temp dir removed on exit. Keys
    and S3 secrets are random unless given. `session_token` None presigns without
    `x-amz-security-token` (PracSuite always sends one, so the default has one).
    `external_s3` set: no S3 of its own; presign for, and validate from, that S3
    (`bucket`, `region`, the S3 keys and the S3 fault knobs then do not apply).
    `record_links` False: records carry no `links` (the reference says they do; off,
    the worker must build the documented paths itself). `record_requests`: keep every
    API request and answer (`Sandbox.api_requests`) for the test suite's contract check;
    the `sandbox` command, which runs until stopped, keeps none. The fault knobs
    (`fail_rate_429`, ..., `rate_budget`) are `FaultKnobs`' (faults.py).
    """

    host: str = "127.0.0.1"
    api_port: int = 0
    s3_port: int = 0
    data_dir: Path | None = None
    vendor_key: str = field(default_factory=_token)
    practice_key: str = field(default_factory=_token)
    # more practices' keys accepted with the same vendor key; `rate_budget` is the vendor
    # key's (API Gateway throttles per key): all of them draw from the one budget
    practice_keys: tuple[str, ...] = ()
    bucket: str = "pracsuite-sandbox"
    region: str = "ap-southeast-2"
    s3_access_key: str = "SANDBOXACCESSKEY"
    s3_secret_key: str = field(default_factory=_token, repr=False)
    session_token: str | None = field(default_factory=_token, repr=False)
    tenant_id: int = 1
    user_id: int = 1
    clients: tuple[str, ...] = DEFAULT_CLIENTS
    existing_records_per_client: int = 3
    list_key: str = "patient_attachments"
    description_mode: DescriptionMode = DescriptionMode.EMPTY
    record_links: bool = True
    record_requests: bool = True
    validation_delay_s: float = 0.5
    policy_lifetime_s: float = 3600.0
    max_file_bytes: int = MAX_FILE_BYTES
    reject_names: str | None = None
    accept_empty_files: bool = False
    """Whether PracSuite's validation takes a 0-byte upload (unknown: nothing says so
    either way); the default plays the refusal, which leaves such an upload `missing`."""
    seed: int | None = None
    external_s3: ExternalS3 | None = None
    error_detail_suffix: str = ""
    presign_key_name: str | None = None
    others_rate: float = 0.0
    """The share of validated uploads for which someone else (the front desk, another
    integration) also uploads a file of the same name and size for the same patient,
    with other bytes, during the run: its record appears just before ours."""
    others_after: bool = False
    """The lookalike's record appears just after ours instead (a higher id)."""
    others_lead_s: float = 0.0
    """The lookalike's record appears this long before ours (alone at a poll between):
    the case no rule over the list alone can tell from ours (docs/proof.md)."""
    object_etag: str = "md5"
    """What the sandbox's S3 says as a GET's `ETag`: "md5" (S3's, quoted), "none" (no
    ETag) or "multipart" (`"<md5>-2"`, a multipart upload's: says nothing of the MD5).
    Not applied with `external_s3` (the external S3 answers for itself)."""
    honour_range: bool = True
    """Whether the sandbox's S3 answers a `Range` GET with 206 and the range (S3 does);
    False: a 200 with the whole object."""

    def fault_plan(self) -> FaultPlan:
        """The fault knobs, validated (ValueError when out of range)."""
        return FaultPlan.of(self)

    def reject_pattern(self) -> re.Pattern[str] | None:
        return re.compile(self.reject_names) if self.reject_names else None


def parse_clients(text: str) -> tuple[str, ...]:
    """ "1-50,1001" -> ("1", ..., "50", "1001"); non-numeric ids are taken as they are."""
    clients: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        low, dash, high = item.partition("-")
        if dash and low.isdigit() and high.isdigit():
            clients.extend(str(n) for n in range(int(low), int(high) + 1))
        elif item:
            clients.append(item)
    if not clients:
        raise argparse.ArgumentTypeError("give at least one client id")
    return tuple(clients)


def parse_latency(text: str) -> tuple[int, int]:
    """ "MIN,MAX" milliseconds (or one number for both)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("expected MIN,MAX in milliseconds") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or not 0 <= values[0] <= values[1]:
        raise argparse.ArgumentTypeError("expected MIN,MAX with 0 <= MIN <= MAX")
    return values[0], values[1]


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a rate is between 0 and 1")
    return value


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """`--help` shows each flag's default: "(default: X)" is added to a flag's help
    unless the help already names its default or there is none (None, off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if ("default" in text or not action.option_strings
                or any(action.default is off for off in (None, False, argparse.SUPPRESS))):
            return text
        return f"{text} (default: %(default)s)".strip()


def _add_service(parser: argparse.ArgumentParser) -> None:
    """Where the sandbox listens, the keys it accepts, the clients it knows."""
    d = SandboxOptions
    add = parser.add_argument
    add("--config-out", type=Path, default=None, metavar="FILE",
        help="also write a whole worker config for this sandbox to FILE (mode 0600; only "
             "[input] is left to fill in); a file the sandbox did not write is never "
             "overwritten")
    add("--host", default=d.host, help="address to bind")
    add("--port", type=int, default=DEFAULT_API_PORT, help="API port (0: any free port)")
    add("--s3-port", type=int, default=None, help="S3 port (default: --port + 1)")
    add("--data-dir", type=Path, default=None, help="where S3 objects go (default: temp dir)")
    add("--vendor-key", default=None, help="x-api-key to accept (default: random)")
    add("--practice-key", default=None, help="a-api-key to accept (default: random)")
    add("--more-practice-key", action="append", default=[], metavar="KEY",
        help="another practice's a-api-key to accept with the same vendor key (repeat); "
             "--rate-budget is the vendor key's, shared by every practice key")
    add("--bucket", default=d.bucket, help="the S3 bucket presigns name")
    add("--region", default=d.region, help="the S3 region presigns sign for")
    add("--no-session-token", action="store_true",
        help="presign without x-amz-security-token (PracSuite sends one)")
    add("--clients", type=parse_clients, default=DEFAULT_CLIENTS,
        help='client ids PracSuite knows, e.g. "1-50,1001" (default: 1-50,1001)')


def _add_reference(parser: argparse.ArgumentParser) -> None:
    """PracSuite's unknowns, each a knob: records, links, validation."""
    d = SandboxOptions
    add = parser.add_argument
    add(
        "--existing-records",
        type=int,
        default=d.existing_records_per_client,
        help="records each client holds before any upload",
    )
    add(
        "--list-key",
        default=d.list_key,
        help='list envelope key, or "bare" for a bare array',
    )
    add(
        "--description-mode",
        type=DescriptionMode,
        choices=list(DescriptionMode),
        default=d.description_mode,
        help="what a record's description holds",
    )
    add("--no-record-links", action="store_true",
        help="records carry no links.* (PracSuite's reference says they do)")
    add("--validation-delay", type=float, default=d.validation_delay_s, metavar="SECONDS",
        help="time from an upload to its record")
    add("--policy-lifetime", type=float, default=d.policy_lifetime_s, metavar="SECONDS",
        help="how long a presigned POST stays valid")
    add("--max-file-bytes", type=int, default=d.max_file_bytes,
        help="largest file S3 takes (PracSuite's limit)")
    add("--reject-names", default=None, metavar="REGEX",
        help="file names that fail validation (default: none)")
    add("--accept-empty-files", action="store_true",
        help="validation takes 0-byte uploads (PracSuite's behaviour is unknown; by "
             "default they are refused and get no record)")


def _add_faults(parser: argparse.ArgumentParser) -> None:
    """Faults to play: throttling, a spent quota, errors, drops, latency."""
    d = SandboxOptions
    add = parser.add_argument
    add("--seed", type=int, default=None, help="seed for fault draws (default: random)")
    add("--fail-429", type=_rate, default=0.0, metavar="RATE",
        help="share of API calls answered 429")
    add(
        "--throttle-style",
        type=ThrottleStyle,
        choices=list(ThrottleStyle),
        default=d.throttle_style,
        help="how a 429 says when to come back",
    )
    add("--retry-after", type=int, default=d.retry_after_s, metavar="SECONDS",
        help="the wait a 429 asks for")
    add("--throttle-value", default=None, metavar="TEXT",
        help="send TEXT verbatim as a 429's Retry-After (or X-RateLimit-Reset with "
             "--throttle-style ratelimit_reset), e.g. 1000000000, nan, inf, -5")
    add("--quota-after", type=int, default=None, metavar="N",
        help="a spent usage-plan quota: after N API calls every call is answered 429 "
             "{\"message\": \"Limit Exceeded\"} with no Retry-After (API Gateway's answer)")
    add("--quota-message", default=d.quota_message, metavar="TEXT",
        help="the message of the quota's 429 (default: Limit Exceeded)")
    add("--quota-retry-after", default=None, metavar="SECONDS",
        help="a Retry-After sent verbatim with the quota's 429, e.g. 1000000000")
    add("--fail-500", type=_rate, default=0.0, metavar="RATE",
        help="share of API calls answered 500")
    add("--s3-slowdown", type=_rate, default=0.0, metavar="RATE",
        help="share of uploads answered 503 SlowDown")
    add("--s3-drop-before", type=_rate, default=0.0, metavar="RATE",
        help="share of uploads whose connection drops before the object is stored")
    add("--s3-drop-after", type=_rate, default=0.0, metavar="RATE",
        help="share of uploads whose connection drops after the object is stored")
    add("--latency-ms", type=parse_latency, default=None, metavar="MIN,MAX",
        help="added latency per API request (default: none)")


def _add_others(parser: argparse.ArgumentParser) -> None:
    """Someone else's lookalikes, the storage's answers, the rate budget, hostile text."""
    d = SandboxOptions
    add = parser.add_argument
    add("--others-rate", type=_rate, default=0.0, metavar="RATE",
        help="share of uploads for which someone else uploads the same name and size "
             "(other bytes) for the same patient during the run")
    add("--others-after", action="store_true",
        help="the lookalike's record (--others-rate) appears just after ours, not before")
    add("--others-lead", type=float, default=0.0, metavar="SECONDS", dest="others_lead_s",
        help="the lookalike's record appears this long before ours")
    add("--object-etag", choices=["md5", "none", "multipart"], default=d.object_etag,
        help="the ETag the sandbox's S3 gives a GET: the object's MD5, none, or a "
             "multipart-looking one")
    add("--ignore-range", action="store_true",
        help="the sandbox's S3 answers a Range GET with the whole object (200)")
    add("--rate-budget", type=float, default=0.0, metavar="PER_SECOND",
        help="play a rate limit: API requests/s accepted, 429 above (0 = none)")
    add("--error-detail-suffix", default="", metavar="TEXT",
        help="append TEXT to every API error's detail (e.g. escape sequences)")
    add("--presign-key-name", default=None, metavar="NAME",
        help="presign every key ending in NAME instead of the requested file name")


def _add_external(parser: argparse.ArgumentParser) -> None:
    """Presigning for a real S3 instead of the sandbox's own."""
    ext = parser.add_argument_group(
        "external S3", "presign for a real S3 (e.g. Ceph radosgw) instead of the sandbox's own; "
        "uploads are validated by HEAD on it. The secret and token may also come from the "
        f"environment: {SECRET_ENV}, {TOKEN_ENV}.")
    ext.add_argument("--external-s3-url", default=None, metavar="URL",
                     help="endpoint root, e.g. http://127.0.0.1:7480")
    ext.add_argument("--external-s3-bucket", default=None, metavar="BUCKET")
    ext.add_argument("--external-s3-region", default="us-east-1", metavar="REGION",
                     help="region to sign for (default %(default)s)")
    ext.add_argument("--external-s3-access-key", default=None, metavar="KEY")
    ext.add_argument("--external-s3-secret-key", default=None, metavar="SECRET")
    ext.add_argument("--external-s3-session-token", default=None, metavar="TOKEN",
                     help="STS session token of temporary credentials (optional)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `sandbox` command's flags; `options_from_args` reads them back."""
    for group in (_add_service, _add_reference, _add_faults, _add_others, _add_external):
        group(parser)


def external_from_args(ns: argparse.Namespace,
                       environ: Mapping[str, str] | None = None) -> ExternalS3 | None:
    """The external S3 from the flags (secret and token may come from `environ`)."""
    env = os.environ if environ is None else environ
    if not ns.external_s3_url:
        return None
    secret = ns.external_s3_secret_key or env.get(SECRET_ENV)
    missing = [flag for flag, value in (("--external-s3-bucket", ns.external_s3_bucket),
                                        ("--external-s3-access-key", ns.external_s3_access_key),
                                        ("--external-s3-secret-key", secret)) if not value]
    if missing or secret is None:
        raise ValueError(f"--external-s3-url also needs {', '.join(missing)}")
    token = ns.external_s3_session_token or env.get(TOKEN_ENV) or None
    return ExternalS3(url=ns.external_s3_url.rstrip("/"), bucket=ns.external_s3_bucket,
                      region=ns.external_s3_region,
                      credentials=Credentials(ns.external_s3_access_key, secret, token))


def options_from_args(ns: argparse.Namespace) -> SandboxOptions:
    """SandboxOptions from flags added by `add_arguments`."""
    options = SandboxOptions(
        host=ns.host,
        api_port=ns.port,
        s3_port=ns.s3_port if ns.s3_port is not None else (ns.port + 1 if ns.port else 0),
        data_dir=ns.data_dir,
        bucket=ns.bucket,
        region=ns.region,
        clients=ns.clients,
        existing_records_per_client=ns.existing_records,
        list_key=ns.list_key,
        description_mode=ns.description_mode,
        record_links=not ns.no_record_links,
        record_requests=False,
        validation_delay_s=ns.validation_delay,
        policy_lifetime_s=ns.policy_lifetime,
        max_file_bytes=ns.max_file_bytes,
        reject_names=ns.reject_names,
        accept_empty_files=ns.accept_empty_files,
        seed=ns.seed,
        fail_rate_429=ns.fail_429,
        throttle_style=ns.throttle_style,
        retry_after_s=ns.retry_after,
        throttle_value=ns.throttle_value,
        fail_rate_500=ns.fail_500,
        s3_slowdown_rate=ns.s3_slowdown,
        s3_drop_before_rate=ns.s3_drop_before,
        s3_drop_after_rate=ns.s3_drop_after,
        latency_ms=ns.latency_ms,
        others_rate=ns.others_rate,
        others_after=ns.others_after,
        others_lead_s=ns.others_lead_s,
        object_etag=ns.object_etag,
        honour_range=not ns.ignore_range,
        rate_budget=ns.rate_budget,
        quota_after=ns.quota_after,
        quota_message=ns.quota_message,
        quota_retry_after=ns.quota_retry_after,
        external_s3=external_from_args(ns),
        error_detail_suffix=ns.error_detail_suffix,
        presign_key_name=ns.presign_key_name,
    )
    if ns.vendor_key:
        options.vendor_key = ns.vendor_key
    if ns.practice_key:
        options.practice_key = ns.practice_key
    options.practice_keys = tuple(ns.more_practice_key)
    if ns.no_session_token:
        options.session_token = None
    return options
