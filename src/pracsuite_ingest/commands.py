"""The commands behind the command line (`cli.py` parses and dispatches): `run`,
`reconcile`, `status`, `check`, and the report and summary each ends with.

Each returns its exit code (`exit_codes.py`, docs/contract.md). Every process imports this
module, so each command imports what it uses where it starts (`status` no aiohttp, a
`run` no sandbox).
"""

from __future__ import annotations

import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pracsuite_ingest.errors import Fatal, Retryable, as_fatal
from pracsuite_ingest.exit_codes import EXIT_CONFIG, EXIT_FATAL, EXIT_OK
from pracsuite_ingest.visible import visible

if TYPE_CHECKING:
    import asyncio
    import threading

    from pracsuite_ingest import shard as sharding
    from pracsuite_ingest.settings import Settings
    from pracsuite_ingest.state import State
    from pracsuite_ingest.watch import Watch


def say(message: str) -> None:
    """A message for the operator on stderr: whatever it quotes (a manifest value, a
    server's error text) is shown, never obeyed by the terminal."""
    print(f"pracsuite-ingest: {visible(message, keep_lines=True)}", file=sys.stderr)


def _install_signal_handlers(shutdown: asyncio.Event) -> None:
    """First SIGINT/SIGTERM: stop taking files, finish what is in flight. Second: stop now."""
    import asyncio

    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()

    def on_signal() -> None:
        if shutdown.is_set() and main_task is not None:
            main_task.cancel()
        shutdown.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)


async def cmd_run(settings: Settings, *, dry_run: bool,
                  shard: sharding.Shard | None = None, watch: Watch | None = None) -> int:
    import asyncio

    from pracsuite_ingest.connection import make_client, make_session
    from pracsuite_ingest.logs import bind_context, get_logger
    from pracsuite_ingest.pipeline import Run, new_run_id, utc_now
    from pracsuite_ingest.practice_lease import lease_for
    from pracsuite_ingest.report_task import write_off_loop
    from pracsuite_ingest.state import State
    from pracsuite_ingest.watch import Watch

    watch = watch or Watch()
    shutdown = asyncio.Event()
    _install_signal_handlers(shutdown)
    state = State.open(Path(settings.state.path))
    run_id = new_run_id(datetime.now(UTC))
    bind_context(run_id=run_id)  # every log line of this run, whichever module writes it
    log = get_logger(run_id=run_id)
    interrupted = False
    run: Run | None = None
    try:
        state.new_run(run_id, utc_now())
        log.info("run started", dry_run=dry_run)
        try:
            if dry_run:
                run = watch(Run(settings, state, None, None, dry_run=True, shutdown=shutdown,
                                run_id=run_id, shard=shard))
                await run.upload_all()
            else:
                async with make_session(settings) as session:
                    api = make_client(settings, session)
                    run = watch(Run(settings, state, api, session, dry_run=False,
                                    shutdown=shutdown, run_id=run_id, shard=shard))
                    try:
                        async with lease_for(settings, run_id,
                                             shard.label if shard is not None else "", log):
                            await run.execute()
                    finally:
                        await api.gate.aclose()  # api.shared_limit's connection
            interrupted = shutdown.is_set()
        except asyncio.CancelledError:
            # A second signal: stop at once. Every stage written so far stands; an
            # upload cut mid-way stays `uploading` and is reconciled by the next run.
            # The rows not read yet are recorded `pending`, so each row has its status.
            interrupted = True
            if run is not None:
                run.record_unread()
        except Exception as exc:  # a bug must still end with the report and exit 3
            fatal = as_fatal(exc)
            if fatal is not exc:
                log.exception("unexpected error")
            raise fatal from exc
    except* Fatal:
        # Stop early, but leave the report of what was done: state is saved.
        state.finish_run(run_id, utc_now(), "stopped")
        write_report(state, settings, run_id, interrupted=True, dry_run=dry_run, watch=watch,
                     fatal=True)
        raise
    else:
        outcome = "interrupted" if interrupted else ("dry-run" if dry_run else "finished")
        state.finish_run(run_id, utc_now(), outcome)
        watch.stop_display()  # on the loop, before the report's thread prints
        return await write_off_loop(write_report, state, settings, run_id,
                                    interrupted=interrupted, dry_run=dry_run, watch=watch)
    finally:
        watch.stop_display()
        state.close()


def write_report(state: State, settings: Settings, run_id: str, *, interrupted: bool,
                 dry_run: bool = False, watch: Watch | None = None, fatal: bool = False,
                 stop: threading.Event | None = None) -> int:
    """The report files, the summary on stdout, the metrics; the exit code. `stop`: set
    from another thread, the report stops at its next row (`report.ReportStopped`)."""
    from pracsuite_ingest import report as rpt
    from pracsuite_ingest.hints import resume_text
    from pracsuite_ingest.logs import get_logger
    from pracsuite_ingest.plan import plan_text, planned_rate
    from pracsuite_ingest.watch import Watch

    watch = watch or Watch()
    watch.stop_display()  # stdout is the summary's from here on
    doc = rpt.build(state, run_id, rpt.practice_of(settings), stop)
    pace = watch.counters.pace() if watch.counters.pace is not None else None
    if pace is not None:  # how this command used the API (not kept in the state file)
        doc["api"] = pace.as_dict()
    doc["poll_interval_s"] = settings.reconcile.poll_interval_s  # the delay chart's grain
    try:
        path = rpt.write(doc, Path(settings.report.dir),
                         alias=rpt.DRY_RUN if dry_run else rpt.LATEST)
    except OSError as exc:
        raise Fatal(f"cannot write the report to {settings.report.dir}: {exc.strerror}; "
                    "the state file holds every result, run `reconcile` to write it again"
                    ) from None
    if dry_run:
        print(plan_text(doc, settings.upload.max_bytes_per_second, planned_rate(settings)))
    if watch.note():
        print(visible(watch.note() or ""))
    print(rpt.summary_text(doc, path))
    if pace is not None:
        print(pace.text())
    if interrupted and not fatal:
        print(resume_text(doc["summary"].get("pending", 0)))
    log = get_logger(run_id=run_id)
    log.info("run finished", **doc["summary"])
    code = EXIT_FATAL if fatal else rpt.exit_code(doc["summary"], interrupted=interrupted,
                                                   dry_run=dry_run)
    if not dry_run:
        watch.export_metrics(settings, doc, code, log)
    return code


async def cmd_reconcile(settings: Settings, run_id: str | None,
                        watch: Watch | None = None) -> int:
    import asyncio

    from pracsuite_ingest.allocator import keep_big_blocks_mapped
    from pracsuite_ingest.connection import make_client, make_session
    from pracsuite_ingest.logs import bind_context, get_logger
    from pracsuite_ingest.reconcile.reconciler import reconcile_run
    from pracsuite_ingest.report_task import write_off_loop
    from pracsuite_ingest.state import State
    from pracsuite_ingest.state_commits import GroupCommits
    from pracsuite_ingest.watch import Watch

    watch = watch or Watch()
    shutdown = asyncio.Event()
    _install_signal_handlers(shutdown)
    state = State.open(Path(settings.state.path))
    try:
        run_id = run_id or state.latest_run_id()
        if run_id is None or state.run_info(run_id) is None:
            say(f"no run {run_id or ''} in {settings.state.path}; `pracsuite-ingest "
                 "status` lists the runs it holds (check --state and --run-id)")
            return EXIT_CONFIG
        bind_context(run_id=run_id)
        log = get_logger(run_id=run_id)
        try:
            async with make_session(settings) as session:
                api = make_client(settings, session)
                counters = watch.reconciling()
                counters.pace = api.gate.pace
                commits = GroupCommits(state)  # claims committed as they come, every 5 s
                commits.start()
                keep_big_blocks_mapped()  # as a run does: a big poll's peak (allocator.py)
                try:
                    await reconcile_run(state, api, settings, run_id,
                                        settings.reconcile.deadline_s, shutdown, log, counters)
                finally:
                    await api.gate.aclose()  # api.shared_limit's connection
                    commits.close()
                log.info("api pace", **api.gate.pace().as_dict())
        except Exception as exc:  # a bug must still end with the report and exit 3
            fatal = as_fatal(exc)
            if fatal is not exc:
                log.exception("unexpected error")
            write_report(state, settings, run_id, interrupted=True, watch=watch, fatal=True)
            raise fatal from exc
        watch.stop_display()  # on the loop, before the report's thread prints
        return await write_off_loop(write_report, state, settings, run_id,
                                    interrupted=shutdown.is_set(), watch=watch)
    finally:
        watch.stop_display()
        state.close()


def cmd_status(settings: Settings, *, as_json: bool = False) -> int:
    from pracsuite_ingest.status_read import runs_now
    from pracsuite_ingest.status_view import print_status

    path = Path(settings.state.path)
    if not path.exists():
        if as_json:
            print_status(str(path), [], as_json=True, out=sys.stdout)
        else:
            print(f"no state file at {path}: nothing has run yet")
        return EXIT_OK
    runs = runs_now(path)
    print_status(str(path), runs, as_json=as_json, out=sys.stdout)
    return EXIT_OK


async def cmd_check(settings: Settings, *, client: str | None = None,
                    as_json: bool = False) -> int:
    from pracsuite_ingest.connection import make_client, make_session
    from pracsuite_ingest.localfs import private_dir
    from pracsuite_ingest.plan import limits_text

    out = sys.stderr if as_json else sys.stdout  # --json: stdout holds the JSON only
    problems = []
    for label, folder in (("state.path", Path(settings.state.path).parent),
                          ("report.dir", Path(settings.report.dir))):
        try:
            private_dir(folder)  # 0700 if created here, as a run would
            probe = folder / ".pracsuite-ingest-check"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            problems.append(f"{label}: {folder} is not writable ({exc.strerror}); fix its "
                            f"permissions or set another {label}")
        else:
            print(f"ok: {label}: {folder} is writable", file=out)
    if problems:
        for p in problems:
            say(p)
        return EXIT_FATAL
    from pracsuite_ingest.own_files import root_unset_warning
    from pracsuite_ingest.proxy import describe

    print(root_unset_warning(settings.input.root)
          or f"ok: input.root: {settings.input.root}", file=out)
    print(f"ok: {describe(settings.api.base_url)}", file=out)
    try:
        async with make_session(settings) as session:
            api = make_client(settings, session)
            await api.probe()
            print(f"ok: api: PracSuite at {settings.api.base_url} accepted both keys "
                  "(api.vendor_api_key, api.practice_api_key)", file=out)
            print("pace: " + limits_text(settings.api.requests_per_second,
                                         settings.api.max_requests_per_second,
                                         settings.upload.max_bytes_per_second), file=out)
            if client is not None:
                return await _first_contact(api, settings, client, as_json)
    except Retryable as exc:
        say(f"cannot reach PracSuite at {settings.api.base_url}: {exc}; "
             "check api.base_url and the network")
        return EXIT_FATAL
    print("all checks passed: the configuration is valid; try `run --dry-run` next", file=out)
    return EXIT_OK


async def _first_contact(api: Any, settings: Settings, client: str, as_json: bool) -> int:
    """`check --client`: what one patient's attachment list shows (discovery.py)."""
    import json

    from pracsuite_ingest.discovery import discover, render

    findings = await discover(api, client)
    if as_json:
        print(json.dumps(findings.to_json(), indent=1))
    else:
        print(render(findings, settings.api.base_url), end="")
    if findings.list_read:
        return EXIT_OK
    # a patient PracSuite does not know is a wrong argument; anything else stops here
    return EXIT_CONFIG if findings.list_status == 404 else EXIT_FATAL
