# Asisten Sertifikat Vaksin. A newcomer needs two commands: `make run` and `make test`.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV     := .venv
PY       := $(VENV)/bin/python
RASA     := $(VENV)/bin/rasa
MODEL    := models/current.tar.gz
TRAINING := config.yml domain.yml $(shell find data nlu_components -name '*.yml' -o -name '*.py' 2>/dev/null)
export SQLALCHEMY_SILENCE_UBER_WARNING := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONPATH := $(CURDIR)

.PHONY: help install system-packages train run serve test validate test-core check-stories release-check purge tickets verify-certificate bench bench-whatsapp soak capacity chaos simulator nlu-report clean

help:
	@echo "make run      everything up, then a chat in this terminal (Ctrl-C stops it all)"
	@echo "make serve    everything up without the chat: REST on :5005, action server on :5055"
	@echo "make test     validate the data, run pytest and the test stories"
	@echo "make train    train the model (only when config, domain or data changed)"
	@echo "make install  create .venv with Python 3.10 and the pinned packages"
	@echo "make purge    delete conversation events and codes older than RETENTION_DAYS (30)"
	@echo "make backup   the database to var/backups/ (make restore [FILE=...] puts it back)"
	@echo "make tickets  the officers' queue of tickets (docs/tickets.md)"
	@echo "make bench    latency and throughput under load, against stock Rasa (results/bench.json)"
	@echo "make bench-whatsapp  the same flows over the WhatsApp webhook, fake Graph API at Meta's limits"
	@echo "make soak     an hour at 16 users: does memory level off? (results/soak.json, soak.png)"
	@echo "make capacity the most users holding p99 < 1 s, ours and stock (results/capacity.json)"
	@echo "make chaos    faults under load: kills and outages, then the data checked (results/chaos.json)"
	@echo "make release-check  before a release: every image of the overlay pinned by a digest"

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements.lock
	@test -x $(PY) || { py=$$(tools/find-python310) && echo "using $$py" && $$py -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip==24.0
	$(PY) -m pip install --quiet -r requirements-dev.txt -c requirements.lock
	@touch $@

# Debian packages the tests use (redis-server, chromium, poppler, zbar): installed when missing
# and this user may (root or sudo without a password), else one message with the command.
system-packages:
	@tools/system-packages

train: $(MODEL)

# Rasa's training output (pages of progress bars and warnings) goes to a log, shown on failure.
$(MODEL): $(TRAINING) | install
	@mkdir -p var/log && echo "training the model (3 to 4 minutes; log in var/log/train.log)"
	@$(RASA) train --fixed-model-name current --out models > var/log/train.log 2>&1 \
		|| { tail -n 40 var/log/train.log; echo "training failed: var/log/train.log"; exit 1; }

run: install $(MODEL)
	@$(PY) -m tools.stack run

# WORKERS=2: two Rasa workers with a Redis lock store started for them.
serve: install $(MODEL)
	@if [ "$${WORKERS:-1}" -gt 1 ]; then tools/system-packages redis; fi
	WORKERS=$(WORKERS) $(PY) -m tools.stack serve

purge: install
	$(PY) -m backend.retention

# Officers' queue: `make tickets` lists open tickets; ARGS="show PL-2026-000001", "resolve ..."
# (docs/tickets.md).
tickets: install
	$(PY) -m tools.tickets $(ARGS)

# A certificate's QR text checked with the public keys only (docs/security.md, "Signed
# certificates"). $(value QR): the text as typed, since Base45 has '$' and make would expand it.
verify-certificate: install
	@$(PY) -m tools.verify_certificate '$(subst ','\'',$(value QR))'

# The assistant as a citizen sees it on WhatsApp, in a page on localhost:8090 (SIMULATOR_PORT):
# a local stand-in for Meta drives the real WhatsApp channel (docs/designing.md).
simulator: install $(MODEL)
	$(PY) -m simulator

# Our stack against stock Rasa under load; BENCH_ARGS="--mode cluster" for 2 processes.
bench: install $(MODEL)
	$(PY) -m tools.bench $(BENCH_ARGS)

bench-whatsapp: install $(MODEL)
	$(PY) -m tools.bench --channel whatsapp $(BENCH_ARGS)

# Simulated citizens while the action server, Rasa, PostgreSQL and Redis fail; CHAOS_ARGS="--seconds 120".
# The benchmark's soak mode: a stack of its own under var/soak; SOAK_ARGS="--seconds 600".
soak: install $(MODEL)
	$(PY) -m tools.soak $(SOAK_ARGS)

# The benchmark's capacity mode; CAPACITY_ARGS="--duration 10 --most 64".
capacity: install $(MODEL)
	$(PY) -m tools.capacity $(CAPACITY_ARGS)

chaos: install $(MODEL)
	@if [ "$${WORKERS:-2}" -gt 1 ]; then tools/system-packages redis; fi
	WORKERS=$(WORKERS) $(PY) -m tools.chaos $(CHAOS_ARGS)

# Before a release (deploy/README.md, "Releases"): every image of the overlay pinned by a real
# digest, not a tag or the placeholder zeros; OVERLAY=deploy/overlays/staging for staging.
OVERLAY := deploy/overlays/production
release-check: install
	$(PY) -m tools.release_check $(OVERLAY)

# rasa data validate, its expected warnings (responses that actions send) summarised in one line,
# then every response checked to be reachable by a rule, a learned story, a form or an action.
validate: install
	@$(PY) -m tools.designer_checks validate

# system-packages first: a machine without them stops at once, before the install and training.
test: system-packages install $(MODEL) validate
	$(PY) -m pytest -q tests
	$(MAKE) --no-print-directory test-core
	@echo "the REST flows again on stock Rasa (RASA_PATCHES=none): the patches change speed only"
	RASA_PATCHES=none $(PY) -m pytest -q tests/test_e2e.py -k "$(REST_FLOWS)"
	$(MAKE) --no-print-directory check-stories
	@# The release builds the image with this hash (deploy/README.md, "Build the image").
	@echo "tested model: MODEL_SHA256=$$(sha256sum $(MODEL) | cut -d' ' -f1)"

# The test stories against the trained model: every flow and its error branches, with the speed
# patches (rasa_server/patches/) and on stock Rasa (RASA_PATCHES=none), which must predict the same.
# --e2e: a step's `user:` text goes through the NLU too, which must give the step's intent and entities.
test-core: install $(MODEL)
	$(PY) -m rasa_server test core --model $(MODEL) --stories tests/test_stories.yml --e2e \
		--fail-on-prediction-errors --out results/core
	RASA_PATCHES=none $(PY) -m rasa_server test core --model $(MODEL) --stories tests/test_stories.yml --e2e \
		--fail-on-prediction-errors --out results/core-stock

# tests/test_e2e.py's conversations over the REST channel, run once more on stock Rasa by `make test`.
REST_FLOWS := end_to_end or out_of_scope or cancel_and_menu or wrong_inputs or action_server_down \
	or report_followed or handed_over

# Every step of data/stories predicted by the trained model: a story the policies did not learn
# (or that a rule overrides) fails here, where validate and train say nothing.
check-stories: install $(MODEL)
	@$(PY) -m tools.designer_checks stories

# The NLU measured (docs/nlu.md): both held-out files (tests/nlu/test_nlu.yml, and
# tests/nlu/test_nlu_independent.yml per family and intent) against the trained model, and a
# seeded 5-fold cross-validation on data/nlu; reports under results/nlu/. Not part
# of `make test`: the cross-validation trains five models (about 25 minutes).
nlu-report: install $(MODEL)
	$(PY) -m tools.nlu_report

clean:
	rm -rf models results .rasa

# The database (DATABASE_URL or the embedded one) to var/backups/<UTC time>.dump, mode 0600,
# with its sha256; `make restore` puts the newest back (FILE=... another), then migrates.
# Stop `make run` / `make serve` before a restore (docs/operations.md).
.PHONY: backup restore
backup: install
	@$(PY) -m tools.backup backup

restore: install
	@$(PY) -m tools.backup restore $(FILE)
