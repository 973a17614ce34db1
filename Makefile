# The two commands a user needs: `make run` and `make test`. Both set up .venv first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Stages and flows are imported as top-level packages from the repo root.
export PYTHONPATH := $(CURDIR)
# One CPU kernel path on every x86 machine (refexp.numerics; the stages set the same defaults).
export ATEN_CPU_CAPABILITY ?= avx2
export MKL_CBWR ?= AVX2
export ONEDNN_MAX_CPU_ISA ?= AVX2

.PHONY: setup run test test-fast ui lock check-java clean referit-image-free seed-study retrain push pull

setup: check-java $(STAMP)

check-java:
	@java -version >/dev/null 2>&1 || { \
	  echo "ERROR: Java is not installed or not on PATH. METEOR 1.5 (pycocoevalcap) runs as a Java jar." >&2; \
	  echo "       Install a JRE (Debian: apt-get install -y default-jre-headless) and retry." >&2; \
	  exit 1; }

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# `dvc repro`, with the stages the DAG leaves independent side by side (flows.jobs at a time; flows/repro.py).
run: setup
	$(PY) -m flows.repro
	@echo
	@echo "Done. Reports: reports/index.md (data: reports/data.md)"

# The real image-free ReferIt experiment (needs ../shared/data/referit; not part of `make run`):
# reports/metrics/referit_image_free.json and reports/referit_image_free.md.
referit-image-free: setup
	$(PY) -m stages.fetch_data referit_real
	$(PY) -m stages.prepare_referit referit_real
	$(PY) -m stages.referit_image_free

# The training-seed study (not part of `make run`: every variant of seed_study.models retrained at each of
# seed_study.seeds, from the pipeline's pretrained backbone): reports/seed_study.md and reports/metrics/seed_study.json.
# First the data stages it reads: prepared tables (prepare_refer: vision_text_only's G-Ref and UNC-Ref),
# synth_expressions' class-name rows, the backbone and the GRN's region features.
seed-study: setup
	$(PY) -m flows.repro --targets prepare_referit prepare_coco prepare_refer synth_expressions pretrain_backbone \
	  extract_region_features
	$(PY) -m stages.seed_study

# Train stages again from scratch: `dvc repro -f` alone resumes a finished checkpoint and trains nothing.
# make retrain STAGE="train_scrc@scrc_full train_attention_regression@attention_full"
retrain: setup
	@test -n "$(STAGE)" || { echo 'usage: make retrain STAGE="<stage>[@item] ..."' >&2; exit 2; }
	$(PY) -m flows.dag $(STAGE)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

ui: setup
	$(PY) -m flows.serve

# data/ and models/ (every DVC-cached output in dvc.lock) to and from the DVC remote `storage` of .dvc/config
# (default: ../refexp-remote; README "Moving data and models between machines"). Metrics and reports travel in git.
# --allow-missing: stages never run have nothing to pull (a warning each); what dvc.lock records but the remote
# lacks is a warning too, and `dvc repro` computes it again.
push: setup
	$(VENV)/bin/dvc push

pull: setup
	$(VENV)/bin/dvc pull --allow-missing

lock:
	@echo "# Exact versions, installed by 'make setup' (pip, Python 3.11, x86_64). Regenerate: make lock" > requirements.lock
	$(VENV)/bin/pip freeze --exclude-editable | sort -f >> requirements.lock

clean:
	rm -rf $(VENV)
