"""`python -m pracsuite_ingest` is the same program as `pracsuite-ingest`."""

from pracsuite_ingest.cli import main

raise SystemExit(main())
