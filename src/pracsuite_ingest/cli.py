"""Commands and exit codes (docs/contract.md). Settings are built before the loop starts
(aio.run)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pracsuite_ingest import __version__
from pracsuite_ingest.commands import say
from pracsuite_ingest.errors import ConfigError, Fatal
from pracsuite_ingest.exit_codes import (
    EXIT_CONFIG,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_ITEMS,
    EXIT_OK,
)

# Every process starts here, so each command imports what it uses where it branches
# off: `--version` loads no library, `status` no aiohttp, a `run` no sandbox, no
# metrics library unless metrics are on (watch.py), no rich.progress off a terminal.
if TYPE_CHECKING:

    from pracsuite_ingest import shard as sharding
    from pracsuite_ingest.settings import Settings
    from pracsuite_ingest.watch import Watch

__all__ = ["EXIT_CONFIG", "EXIT_FATAL", "EXIT_INTERRUPTED", "EXIT_ITEMS", "EXIT_OK", "main"]

SHARD_HELP = ("take only the clients of shard I of N (1-based); state and reports get "
              "their own paths, and api.requests_per_second is divided by N "
              "(default: JOB_COMPLETION_INDEX + 1 of PRACSUITE_INGEST_SHARD__COUNT)")

EPILOG_RUN = """example:
  pracsuite-ingest run --config practice.toml --manifest files.csv --dry-run   # the plan
  pracsuite-ingest run --config practice.toml --manifest files.csv --client 42 --limit 5
  pracsuite-ingest run --config practice.toml --manifest files.csv
  pracsuite-ingest run --source-dir /data/scans --dry-run

On a terminal a progress display shows files and bytes done, rates, the ETA and
what is presigning, uploading, awaiting validation; --quiet turns it off (it is
always off when output is not a terminal or logs are JSON).
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of rows, at least 1, not {text!r}")
    return value


QUIET_HELP = "no progress display on a terminal (logs and summary unchanged)"


def _command(parent: Any, name: str, help_text: str, example: str = "", *,
             epilog: str = "") -> argparse.ArgumentParser:
    """A subcommand whose --help ends with an example (or the given epilog)."""
    parser: argparse.ArgumentParser = parent.add_parser(
        name, help=help_text, epilog=epilog or f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def _with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags every command that reads the configuration takes."""
    sp.add_argument("--config", type=Path, help="TOML file (default ./pracsuite-ingest.toml)")
    sp.add_argument("--state", help="state file (state.path)")
    sp.add_argument("--report-dir", help="report folder (report.dir)")
    sp.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    sp.add_argument("--log-format", choices=["auto", "console", "json"])
    sp.add_argument("--version", action="version",
                    version=f"pracsuite-ingest {__version__}")  # SPEC: `check --version`
    return sp


def _add_run(sub: Any) -> None:
    run = _with_config(_command(sub, "run", "scan, presign, upload, reconcile, report",
                                epilog=EPILOG_RUN))
    src = run.add_mutually_exclusive_group()
    src.add_argument("--manifest", help="CSV or .jsonl manifest (input.manifest)")
    src.add_argument("--source-dir", help="folder of <client_id>/... (input.source_dir)")
    run.add_argument("--dry-run", action="store_true",
                     help="check every input, print the plan (files, bytes, per client, "
                          "what would be skipped) and write the report; send nothing")
    run.add_argument("--base-url", help="PracSuite API base URL (api.base_url)")
    run.add_argument("--concurrency", type=int, help="uploads in flight (upload.concurrency)")
    run.add_argument("--shard", metavar="I/N", help=SHARD_HELP)
    run.add_argument("--client", action="append", metavar="ID",
                     help="trial run: only this client's rows (repeat for more); the "
                          "other rows are not sent and not in the report")
    run.add_argument("--limit", type=_positive_int, metavar="N",
                     help="trial run: only the first N rows (after --client); the rows "
                          "after them are not read and not in the report")
    run.add_argument("--quiet", action="store_true", help=QUIET_HELP)


def _add_state_commands(sub: Any) -> None:
    """`reconcile`, `status` and `check`: the commands about an existing state file
    and configuration."""
    rec = _with_config(_command(
        sub, "reconcile", "poll again for a run's unconfirmed uploads and rewrite its report",
        "pracsuite-ingest reconcile --config practice.toml"))
    rec.add_argument("--run-id", help="the run to reconcile (default: the latest)")
    rec.add_argument("--shard", metavar="I/N", help=SHARD_HELP)
    rec.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    status = _with_config(_command(
        sub, "status", "runs and items per status in the state file",
        epilog="example:\n"
               "  pracsuite-ingest status --config practice.toml          # a table\n"
               "  pracsuite-ingest status --config practice.toml --json   # for scripts\n"))
    status.add_argument("--shard", metavar="I/N", help=SHARD_HELP)
    status.add_argument("--json", action="store_true",
                        help="print JSON: the runs, each with its items per stage (also "
                             "what is printed when stdout is not a terminal)")
    check = _with_config(_command(
        sub, "check", "configuration, writable paths, and one API call proving both keys",
        epilog="example:\n  pracsuite-ingest check --config practice.toml\n"
               "  pracsuite-ingest check --config practice.toml --client 42   # first contact"))
    check.add_argument("--client", metavar="ID",
                       help="also read this patient's attachment list (read-only) and say "
                            "what it shows about this PracSuite and which settings follow")
    check.add_argument("--json", action="store_true",
                       help="with --client: print the findings as JSON on stdout")


def _add_sandbox_and_demo(sub: Any, *, sandbox: bool) -> None:
    sb = _command(sub, "sandbox", "start the local PracSuite + S3 stand-in",
                  epilog="example:\n"
                         "  pracsuite-ingest sandbox --config-out sandbox.toml   # then: "
                         "check --config sandbox.toml\n"
                         "  pracsuite-ingest sandbox --port 8700 --fail-429 0.2\n\n"
                         "It prints an [api] block to paste into a config.")
    if sandbox:
        from pracsuite_ingest.sandbox import add_arguments
        from pracsuite_ingest.sandbox.options import DefaultsHelpFormatter

        sb.formatter_class = DefaultsHelpFormatter
        add_arguments(sb)
    demo = _command(sub, "demo", "a full migration against the built-in sandbox",
                    "pracsuite-ingest demo --files 200")
    demo.add_argument("--files", type=int, default=60, help="how many sample files (60)")
    demo.add_argument("--out", type=Path,
                      help="folder for samples, the sandbox's S3, state and reports: new, "
                           "empty, or the demo's own earlier output (replaced); default: the "
                           "first usable of ./demo-out, <report.dir>/demo, <tmp>/"
                           "pracsuite-ingest-demo. The configured state.path and report.dir "
                           "files are never used")


def _add_report(sub: Any) -> None:
    report = _command(sub, "report", "work with reports: `report merge`",
                      "pracsuite-ingest report merge reports/*/shard-* --out reports/all")
    report_sub = report.add_subparsers(dest="report_command", required=True, metavar="ACTION")
    merge = _command(report_sub, "merge", "combine shard and practice reports into one",
                     "pracsuite-ingest report merge reports/*/shard-* --out reports/all")
    merge.add_argument("report_dirs", nargs="+", type=Path, metavar="REPORT_DIR",
                       help="folders holding a latest.json")
    merge.add_argument("--out", type=Path, required=True, help="folder for the merged report")


def build_parser(*, sandbox: bool = True) -> argparse.ArgumentParser:
    """The whole command line; with `sandbox=False` the `sandbox` command takes no
    flags (so the sandbox's modules are not imported): for an argv without it."""
    p = argparse.ArgumentParser(
        prog="pracsuite-ingest",
        description="Upload a practice's documents to PracSuite as Patient Attachments "
                    "and prove which ones arrived.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="start with `pracsuite-ingest demo` (no account needed) or `run --help`.")
    p.add_argument("--version", action="version", version=f"pracsuite-ingest {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_state_commands(sub)
    _add_sandbox_and_demo(sub, sandbox=sandbox)
    _add_report(sub)
    return p


def overrides_from(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Command-line flags as settings overrides (they win over file and env)."""
    o: dict[str, dict[str, Any]] = {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            o.setdefault(section, {})[key] = value

    manifest = getattr(args, "manifest", None)
    source_dir = getattr(args, "source_dir", None)
    if manifest is not None:
        put("input", "manifest", manifest)
        put("input", "source_dir", "")
    if source_dir is not None:
        put("input", "source_dir", source_dir)
        put("input", "manifest", "")
    put("api", "base_url", getattr(args, "base_url", None))
    put("upload", "concurrency", getattr(args, "concurrency", None))
    put("state", "path", getattr(args, "state", None))
    put("report", "dir", getattr(args, "report_dir", None))
    put("log", "level", getattr(args, "log_level", None))
    put("log", "format", getattr(args, "log_format", None))
    return o


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(sandbox="sandbox" in argv).parse_args(argv)
    if args.command == "sandbox":
        from pracsuite_ingest import aio
        from pracsuite_ingest.sandbox import options_from_args, serve_forever
        from pracsuite_ingest.sandbox.config_text import ConfigOutRefused

        try:
            options = options_from_args(args)
        except ValueError as exc:
            print(f"pracsuite-ingest sandbox: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        try:
            aio.run(serve_forever(options, config_out=args.config_out))
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except ConfigOutRefused as exc:
            print(f"pracsuite-ingest sandbox: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        return EXIT_INTERRUPTED  # it serves until SIGINT or SIGTERM stops it
    if args.command == "demo":
        from pracsuite_ingest.demo import run_demo

        return run_demo(args.files, args.out)
    if args.command == "report":
        from pracsuite_ingest.merge import merge_command

        return merge_command(args.report_dirs, args.out)
    from pracsuite_ingest.logs import configure, register_secret, scrub
    from pracsuite_ingest.settings import load_settings

    needs = {"run": (not args.dry_run if args.command == "run" else True, True),
             "reconcile": (True, False), "status": (False, False), "check": (True, False)}
    require_keys, require_input = needs[args.command]
    try:
        settings = load_settings(args.config, overrides_from(args),
                                 require_keys=require_keys, require_input=require_input)
        settings, shard = _sharded(args, settings)
    except ConfigError as exc:
        say(f"configuration error: {exc}")
        return EXIT_CONFIG
    for secret in (settings.api.vendor_api_key, settings.api.practice_api_key):
        register_secret(secret.get_secret_value())
    from pracsuite_ingest.proxy import proxy_secrets

    for secret_text in proxy_secrets():  # a password in HTTPS_PROXY
        register_secret(secret_text)
    configure(settings.log.level, settings.log.format, file_names=settings.log.file_names)
    code = EXIT_FATAL
    try:
        code = _dispatch(args, settings, shard)
    except* Fatal as group:
        for err in _leaves(group):
            say(scrub(str(err)))
    return code


def _sharded(args: argparse.Namespace,
             settings: Settings) -> tuple[Settings, sharding.Shard | None]:
    """The shard of this process (`--shard`, or the Indexed Job's environment) and its
    settings; refuses a `run` whose shard count differs from the state files' already
    there (their clients' earlier uploads would be unknown to it: sent again)."""
    from pracsuite_ingest import shard as sharding
    from pracsuite_ingest.logs import bind_context

    if args.command not in ("run", "reconcile", "status"):
        return settings, None
    shard = sharding.resolve(getattr(args, "shard", None), os.environ)
    if args.command == "run":
        base = settings.state.path
        conflict = sharding.layout_conflict(base, shard, sharding.existing_layouts(base))
        if conflict:
            raise ConfigError(conflict)
    if shard is None:
        return settings, None
    bind_context(shard=shard.label)
    return sharding.apply(settings, shard), shard


def _leaves(group: BaseExceptionGroup[Fatal]) -> list[BaseException]:
    """The errors inside (nested) exception groups, each once."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return list({str(e): e for e in out}.values())


def _dispatch(args: argparse.Namespace, settings: Settings,
              shard: sharding.Shard | None = None) -> int:
    from pracsuite_ingest import aio
    from pracsuite_ingest.commands import cmd_check, cmd_reconcile, cmd_run, cmd_status

    if args.command == "status":
        return cmd_status(settings, as_json=args.json)
    if args.command == "check":
        return aio.run(cmd_check(settings, client=args.client, as_json=args.json))
    watch = _watch_for(args, settings, shard)
    if args.command == "reconcile":
        return aio.run(cmd_reconcile(settings, args.run_id, watch=watch))
    return aio.run(cmd_run(settings, dry_run=args.dry_run, shard=shard, watch=watch))


def _watch_for(args: argparse.Namespace, settings: Settings,
               shard: sharding.Shard | None) -> Watch:
    """The trial-run filter, the progress display and the metrics of this command."""
    from pracsuite_ingest.filters import RowFilter
    from pracsuite_ingest.progress import TerminalProgress
    from pracsuite_ingest.watch import Watch

    return Watch(
        row_filter=RowFilter(frozenset(getattr(args, "client", None) or ()),
                             getattr(args, "limit", None) or 0),
        progress=TerminalProgress.for_terminal(
            quiet=getattr(args, "quiet", False), log_format=settings.log.format,
            log_interval_s=settings.log.progress_interval_s),
        shard_label=shard.label if shard is not None else None)
