"""pracsuite-ingest: move a practice's documents into PracSuite as Patient Attachments."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pracsuite-ingest")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

MAX_FILE_BYTES = 104_857_600
"""PracSuite refuses anything larger; exactly this many bytes is allowed."""
