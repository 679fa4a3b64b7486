"""The exit codes of every command (docs/contract.md): what a scheduler or script acts on."""

EXIT_OK = 0  # every row ended as it should
EXIT_ITEMS = 1  # the run finished, but some rows did not validate (the report says why)
EXIT_CONFIG = 2  # configuration or arguments: fix them and run again
EXIT_FATAL = 3  # the run stopped early (the report holds what was done)
EXIT_INTERRUPTED = 130  # stopped by a signal
