"""pracsuite-ingest: move a practice's documents into PracSuite as Patient Attachments."""

# The one place the version is written: pyproject.toml reads it from here (`dynamic`),
# so an installed wheel, an editable install and a bare source tree all agree, and
# start-up does not pay for importlib.metadata.
__version__ = "0.1.0"

MAX_FILE_BYTES = 104_857_600
"""PracSuite refuses anything larger; exactly this many bytes is allowed."""
