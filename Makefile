# One command runs every check: `make check` (what CI runs, after starting radosgw).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo check lint typecheck test bench bench-rate bench-bandwidth bench-calls bench-latency bench-peers bench-scale bench-one-patient bench-fleet container-test soak radosgw-start radosgw-stop clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/pracsuite-ingest demo

check: lint typecheck test

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench

typecheck: $(VENV)/.installed
	$(BIN)/mypy

# Tests run in parallel (pytest-xdist), two workers per core: most of an end-to-end
# test is waiting on a sandbox, radosgw or a deadline, not computing (on 2 cores the
# suite took 287 s with 4 workers and 413 s with 2). worksteal evens out the long runs.
# PYTEST_WORKERS=0 runs them in this process, one after the other.
PYTEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) * 2 )))
test: $(VENV)/.installed
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal --durations=20

bench: $(VENV)/.installed
	$(BIN)/python bench/run.py

# requests_per_second = "auto" against a sandbox that plays an unpublished limit
bench-rate: $(VENV)/.installed
	$(BIN)/python bench/auto_rate.py

# upload.max_bytes_per_second held over a 100 MB run, against no cap in the same run
bench-bandwidth: $(VENV)/.installed
	$(BIN)/python bench/bandwidth.py

# API calls per file on a practice-shaped input against the least the flow needs
bench-calls: $(VENV)/.installed
	$(BIN)/python bench/calls_per_file.py
	$(BIN)/python bench/calls_per_file.py --patients 200 --files-per-patient 2 --size 16384 --description file_name
	$(BIN)/python bench/calls_per_file.py --patients 200 --files-per-patient 2 --size 16384 --description file_name --verify all

# Small files with 20-30 ms on every API call and upload: before/after presign-ahead,
# against the naive loop and the pipeline's own bound at that latency
bench-latency: $(VENV)/.installed
	$(BIN)/python bench/latency.py

# CPU ms per file and files/s of rclone, aws-cli and the worker (upload leg, whole run) on
# the same radosgw, 2,000 x 16 KB (issue 23); BENCH_PEERS_ARGS e.g. --rounds 1 --profile
BENCH_PEERS_ARGS ?=
bench-peers: $(VENV)/.installed
	$(BIN)/python bench/peers.py $(BENCH_PEERS_ARGS)

# Many rows: dry runs of 10^4/10^5 rows, `report merge` of 10^5/10^6, a real run of 10^3
# 1 KB files (SCALE_ARGS="--real 1000,10000" for 10^4: 12 min at load 8-10); wall, CPU
# per row, peak RSS, bytes written, beside the code of SCALE_BEFORE when set
SCALE_ARGS ?=
SCALE_BEFORE ?=
bench-scale: $(VENV)/.installed
	$(BIN)/python bench/scale.py $(if $(SCALE_BEFORE),--before $(SCALE_BEFORE)) $(SCALE_ARGS)

# One patient with many files (issue 22): the CLI against a one-client sandbox, records
# without a name and with it, 2,500 and 10,000 files; wall, CPU per file, peak RSS, the
# longest event-loop stall, SIGTERM-to-exit in the first big poll. ONE_PATIENT_ARGS e.g.
# "--files 100000 --modes empty --sigterm --resume --no-full" (about an hour here)
ONE_PATIENT_ARGS ?= --sigterm
bench-one-patient: $(VENV)/.installed
	$(BIN)/python bench/one_patient.py $(ONE_PATIENT_ARGS)

# 2, 4 and 8 practices (processes) on one vendor key's budget, each pacing itself and
# with api.shared_limit on a local redis-server: share used, throttled, finish spread
bench-fleet: $(VENV)/.installed
	$(BIN)/python bench/fleet.py

# The image built and run with podman (installed if missing; root): build time, size,
# `demo`, the compose rehearsal. Minutes of CPU: not part of `check` (docs/container.md,
# "`make container-test`").
container-test: $(VENV)/.installed
	PY=$(BIN)/python bash deploy/container-test.sh

# SIGKILLs in every phase under every sandbox fault, 5 seeds (tests/soak.py; ~10-15 min)
SOAK_ARGS ?= --seeds 1,2,3,4,5 --files 2000 --clients 20 --kills 10
soak: $(VENV)/.installed
	cd tests && ../$(BIN)/python soak.py $(SOAK_ARGS)

radosgw-start:
	bash .ci/radosgw.sh install && bash .ci/radosgw.sh start

radosgw-stop:
	bash .ci/radosgw.sh stop

clean:
	rm -rf demo-out reports .pytest_cache .mypy_cache .ruff_cache
