"""Start and stop the sandbox: the PracSuite API and the S3 stand-in on two ports.

`Sandbox` is an async context manager for tests and the demo; `serve_forever` is
the `sandbox` command. The two servers are separate so that a client that sends its
API keys to S3, or S3 fields to the API, fails as it would in production. With
`options.external_s3` set only the API runs: presigns point at that S3, and
`external.StoreWatcher` finds the uploads there (HEAD) for validation.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import aiohttp
from aiohttp import web

from .api import ApiContext, PresignTarget, build_api_app
from .config_text import api_block, whole_config, write_config
from .external import HeadLookup, SeenSizes, StoreWatcher, presign_get, put_object
from .faults import FaultPlan, Faults
from .ledger import Ledger
from .options import SandboxOptions
from .recorder import RecordedExchange
from .s3 import S3Context, build_s3_app
from .sigv4 import Credentials
from .stats import Stats
from .store import LocalStore, ObjectLookup
from .validation import Validator

_ANY_ADDRESS = ("", "0.0.0.0", "::")  # noqa: S104 -- recognised, not bound
_SHUTDOWN_GRACE_S = 2.0  # how long in-flight requests may take to finish on exit


class Sandbox:
    """`async with Sandbox(options) as sb:` runs both servers until the block ends.

    On exit, validations still waiting are cancelled, both servers stop, and a temp
    data dir is removed. Attributes are valid inside the block only.
    """

    base_url: str
    """The API base, ending in /v1: what the worker's `api.base_url` should be."""
    s3_url: str
    """The S3 endpoint's root (the POST URL handed out is `<s3_url>/<bucket>`)."""
    admin_url: str
    """`<api root>/_sandbox`: GET stats, POST reset-faults."""
    _store: LocalStore | None
    stop_hooks: ClassVar[list[Callable[[Sandbox], None]]] = []
    """Called with each sandbox whose block ends without an error, before it stops
    (the test suite checks every recorded request against the API contract here)."""

    def __init__(self, options: SandboxOptions | None = None) -> None:
        self.options = options if options is not None else SandboxOptions()
        self.stats_counters = Stats()
        self.faults = Faults(self.options.fault_plan(), seed=self.options.seed)
        self._runners: list[web.AppRunner] = []
        self._temp_dir: tempfile.TemporaryDirectory[str] | None = None
        self._validator: Validator | None = None
        self._ledger: Ledger | None = None
        self._store = None
        self._watcher: StoreWatcher | None = None
        self._session: aiohttp.ClientSession | None = None
        self.api_requests: list[RecordedExchange] = []
        """Every `/v1` request and its answer, in order (when `options.record_requests`)."""

    @property
    def vendor_key(self) -> str:
        return self.options.vendor_key

    @property
    def practice_key(self) -> str:
        return self.options.practice_key

    @property
    def bucket(self) -> str:
        external = self.options.external_s3
        return external.bucket if external is not None else self.options.bucket

    @property
    def s3_credentials(self) -> Credentials:
        """The keys presigns are signed with (for tests that presign by hand)."""
        o = self.options
        if o.external_s3 is not None:
            return o.external_s3.credentials
        return Credentials(o.s3_access_key, o.s3_secret_key, o.session_token)

    @property
    def data_dir(self) -> Path:
        """Where objects are stored: `<data_dir>/<bucket>/<key>` (not in external mode)."""
        if self._store is None:
            raise RuntimeError("no local S3: the sandbox runs against an external S3")
        return self._store.root

    def stats(self) -> dict[str, Any]:
        """The same JSON as GET /_sandbox/stats, as a dict."""
        if self._ledger is None or self._validator is None:
            raise RuntimeError("the sandbox is not running")
        snapshot = self.stats_counters.snapshot(
            self._ledger, validations_pending=self._validator.pending_count
        )
        snapshot["usage"] = self.stats_counters.usage.snapshot(self.faults.plan.rate_budget)
        if self._watcher is not None:
            snapshot["external_s3"] = {
                "url": self.s3_url,
                "watching": self._watcher.watching,
                "found": self._watcher.found,
                "heads": self._watcher.heads,
                "errors": list(self._watcher.errors),
            }
        return snapshot

    def set_faults(self, plan: FaultPlan) -> None:
        """Replace the fault knobs while running (the RNG keeps its state)."""
        self.faults.plan = plan

    def reset_faults(self) -> None:
        self.faults.reset()

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is None:
                for hook in list(Sandbox.stop_hooks):
                    hook(self)
        finally:
            await self._stop()

    async def _start(self) -> None:
        o = self.options
        ledger = Ledger(
            clients=o.clients,
            tenant_id=o.tenant_id,
            user_id=o.user_id,
            description_mode=o.description_mode,
        )
        self._ledger = ledger
        seeded = ledger.seed_existing(
            o.existing_records_per_client, random.Random(o.seed), date.today()
        )
        lookup, put, get_signer = self._storage([r.key for r in seeded])
        self._validator = Validator(
            ledger=ledger,
            lookup=lookup,
            bucket=self.bucket,
            stats=self.stats_counters,
            delay_s=o.validation_delay_s,
            max_bytes=o.max_file_bytes,
            reject_names=o.reject_pattern(),
            accept_empty=o.accept_empty_files,
            others_rate=o.others_rate,
            others_after=o.others_after,
            others_lead_s=o.others_lead_s,
            put_object=put,
            rng=random.Random(o.seed),
        )
        on_presigned = await self._start_s3(lookup)
        creds = self.s3_credentials
        target = PresignTarget(
            url=f"{self.s3_url}/{self.bucket}",
            object_url=f"{self.s3_url}/{self.bucket}",
            bucket=self.bucket,
            region=o.external_s3.region if o.external_s3 is not None else o.region,
            credentials=creds,
            lifetime_s=o.policy_lifetime_s,
            max_bytes=o.max_file_bytes,
            get_signer=get_signer,
        )
        api_app = build_api_app(
            ApiContext(
                vendor_key=o.vendor_key,
                practice_key=o.practice_key,
                practice_keys=o.practice_keys,
                list_key=o.list_key,
                target=target,
                ledger=ledger,
                faults=self.faults,
                stats=self.stats_counters,
                admin_stats=self.stats,
                on_presigned=on_presigned,
                error_detail_suffix=o.error_detail_suffix,
                presign_key_name=o.presign_key_name,
                record_links=o.record_links,
                on_request=self.api_requests.append if o.record_requests else None,
            )
        )
        api_root = await self._serve(api_app, o.api_port)
        self.base_url = f"{api_root}/v1"
        self.admin_url = f"{api_root}/_sandbox"

    def _storage(self, seeded_keys: list[str]) -> tuple[
            ObjectLookup, Callable[[str, str, bytes], Awaitable[None]],
            Callable[[str], str] | None]:
        """The objects' storage: a real S3 (`external_s3`) or the sandbox's own, seeded
        with the pre-existing records' objects. Returns how validation looks an object
        up, how a lookalike's object is written, and how a record's GET is presigned
        (None: the sandbox's own S3 signs it)."""
        o = self.options
        if o.external_s3 is not None:
            # Pre-existing records have no object there: nothing reads their content.
            ext = o.external_s3
            session = self._session = aiohttp.ClientSession()

            async def put_external(bucket: str, key: str, data: bytes) -> None:
                await put_object(ext, session, key, data)

            def get_signer(key: str) -> str:
                return presign_get(ext, key, datetime.now(UTC))

            return SeenSizes(HeadLookup(ext, session)), put_external, get_signer
        store = self._store = self._open_store()
        store.seed(o.bucket, seeded_keys, b"%PDF-1.4\n% pre-existing\n")

        async def put_local(bucket: str, key: str, data: bytes) -> None:
            await asyncio.to_thread(store.put_bytes, bucket, key, data)

        return store, put_local, None

    def _open_store(self) -> LocalStore:
        if self.options.data_dir is None:
            self._temp_dir = tempfile.TemporaryDirectory(prefix="pracsuite-sandbox-")
            return LocalStore(Path(self._temp_dir.name))
        return LocalStore(self.options.data_dir)

    async def _start_s3(self, lookup: ObjectLookup) -> Callable[[str], None]:
        """Serve the local S3, or watch the external one; what to call on each presign."""
        o = self.options
        assert self._validator is not None
        validator = self._validator
        if o.external_s3 is not None:
            assert isinstance(lookup, SeenSizes)
            seen = lookup
            self.s3_url = o.external_s3.url

            def found(bucket: str, key: str, size: int) -> None:
                self.stats_counters.uploads_stored += 1
                seen.saw(bucket, key, size)
                validator.object_stored(bucket, key, size)

            self._watcher = StoreWatcher(o.external_s3, seen.head,
                                         lifetime_s=o.policy_lifetime_s, on_stored=found)
            self._watcher.start()
            return self._watcher.watch
        assert self._store is not None
        creds = self.s3_credentials
        s3_app = build_s3_app(
            S3Context(
                store=self._store,
                buckets=frozenset({o.bucket}),
                secrets_by_access_key={creds.access_key: creds.secret_key},
                session_tokens={creds.access_key: creds.session_token}
                if creds.session_token is not None
                else {},
                faults=self.faults,
                stats=self.stats_counters,
                on_stored=validator.object_stored,
                etag=o.object_etag,
                honour_range=o.honour_range,
            )
        )
        self.s3_url = await self._serve(s3_app, o.s3_port)
        return lambda key: None

    async def _serve(self, app: web.Application, port: int) -> str:
        # access_log None: the worker's tests read stderr, and a line per request is noise.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_GRACE_S)
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, self.options.host, port).start()
        bound_port = runner.addresses[0][1]
        host = self.options.host
        host = "127.0.0.1" if host in _ANY_ADDRESS else host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{bound_port}"

    async def _stop(self) -> None:
        # Stop taking requests (in-flight ones get a grace period), then cancel the
        # validations still waiting, then remove a temp data dir.
        try:
            for runner in reversed(self._runners):
                await runner.cleanup()
            self._runners.clear()
        finally:
            try:
                if self._watcher is not None:
                    await self._watcher.aclose()
                if self._validator is not None:
                    await self._validator.aclose()
                if self._session is not None:
                    await self._session.close()
                    self._session = None
            finally:
                if self._temp_dir is not None:
                    self._temp_dir.cleanup()
                    self._temp_dir = None


async def serve_forever(options: SandboxOptions, config_out: Path | None = None) -> None:
    """Run the sandbox until SIGINT or SIGTERM; print the `[api]` block to paste into a
    config.

    The block is TOML the worker accepts as it is (`base_url`, `vendor_api_key`,
    `practice_api_key`, and the S3 URL as a comment: it is not a config key, the worker
    gets it from each presign). With `config_out`, a whole config is written there too
    (0600; `ConfigOutRefused` for a file the sandbox did not write). The signals are
    handled from before the first line is printed, so a caller that stops the sandbox
    as soon as it has read the block always stops it cleanly.
    """
    with _stop_on_signals() as stop:
        async with Sandbox(options) as sandbox:
            args = (sandbox.base_url, sandbox.vendor_key, sandbox.practice_key,
                    sandbox.s3_url)
            if config_out is not None:
                write_config(config_out, whole_config(*args, options.validation_delay_s))
            print(api_block(*args), end="")
            print("# paste the lines above into your config; `pracsuite-ingest check "
                  "--config FILE` tries them")
            if config_out is not None:
                print(f"# a whole config is in {config_out}: fill in its [input], then "
                      f"`pracsuite-ingest check --config {config_out}`")
            print("# the sandbox runs until Ctrl-C", flush=True)
            await stop.wait()


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set at SIGINT or SIGTERM, for as long as the block runs.

    Handled on the loop rather than left to Python's KeyboardInterrupt: a process started
    in the background by a non-interactive shell inherits SIGINT *ignored*, and then
    Python installs no handler of its own, so Ctrl-C would never stop the sandbox; a
    container's stop is a SIGTERM, which would otherwise end it without cleaning up.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
