# The two README commands: `make run` and `make test`. Both make .venv when it is missing.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mlcycle-installed
# checkov, for the chart test, in an environment of its own (constraints-scan.txt says why).
SCAN_STAMP := .venv-scan/.installed

.PHONY: install scan-env run test test-fast test-long test-images images serving-image images-gpu images-local lint docs clean

install: $(STAMP)

# torch goes first, alone and pinned, so pip takes the local CPU wheel rather than a
# multi-GB CUDA build; constraints.txt locks everything else.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/mlcycle run --config examples/support_tickets.yaml --summary-json .mlcycle/summary.json

$(SCAN_STAMP): constraints-scan.txt
	@test -x .venv-scan/bin/python || $(PYTHON) -m venv .venv-scan || python3 -m venv .venv-scan
	.venv-scan/bin/python -m pip install -q -c constraints-scan.txt checkov
	@touch $(SCAN_STAMP)

scan-env: $(SCAN_STAMP)

# Within CI's budget on 2 cores: everything but the long cases, which test-long runs.
# Two test processes, each taking whole files (module fixtures are made once), since
# most of a case's time is spent waiting on servers and process starts (decision 039).
TEST_WORKERS ?= 2
test: $(STAMP) $(SCAN_STAMP)
	$(BIN)/python -m pytest -m "not long" -n $(TEST_WORKERS) --dist loadfile

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

test-long: $(STAMP)
	$(BIN)/python -m pytest -m long

# The images (opt-in, slow): podman or docker, whichever exists. podman runs with runc
# and cgroupfs (crun fails on some kernels' cgroups) and the sandbox's ulimits.
ENGINE ?= $(shell command -v podman || command -v docker)
ENGINE_FLAGS ?= $(if $(findstring podman,$(ENGINE)),--runtime runc --cgroup-manager=cgroupfs,)
BASE ?= docker.io/library/python:3.11-slim-bookworm
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
BUILD_FLAGS ?= --network=host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
EXTRA_BUILD_FLAGS ?=
IMAGE_TAG ?= 0.1.0
MLFLOW_TAG ?= 3.17.2

images: serving-image
	$(ENGINE) $(ENGINE_FLAGS) build $(BUILD_FLAGS) $(EXTRA_BUILD_FLAGS) --build-arg BASE=$(BASE) \
	  --build-arg TORCH_INDEX=$(TORCH_INDEX) -f images/Containerfile -t ghcr.io/mlcycle/mlcycle:$(IMAGE_TAG) .
	$(ENGINE) $(ENGINE_FLAGS) build $(BUILD_FLAGS) $(EXTRA_BUILD_FLAGS) --build-arg BASE=$(BASE) \
	  -f images/Containerfile.mlflow -t ghcr.io/mlcycle/mlflow:$(MLFLOW_TAG) .

# The endpoint's image, BentoML's own build: `bentoml build` with BENTOFILE, then the
# Dockerfile BentoML wrote into the bento, built in the bento (what `bentoml containerize`
# does with docker). BENTOML_HOME keeps the bento store inside the checkout.
BENTOFILE ?= bentofile.yaml
BENTO_STORE := build/bentoml
serving-image: $(STAMP)
	$(BIN)/python images/serving_requirements.py --check
	BENTOML_HOME=$(CURDIR)/$(BENTO_STORE) BENTOML_DO_NOT_TRACK=True $(BIN)/bentoml build -f $(BENTOFILE) .
	bento=$$(COLUMNS=10000 BENTOML_HOME=$(CURDIR)/$(BENTO_STORE) $(BIN)/bentoml get mlcycle-serving:latest -o path) && \
	  $(ENGINE) $(ENGINE_FLAGS) build $(BUILD_FLAGS) $(EXTRA_BUILD_FLAGS) $(SERVING_BUILD_FLAGS) \
	    -f $$bento/env/docker/Dockerfile -t ghcr.io/mlcycle/mlcycle-serving:$(IMAGE_TAG) $$bento

# The GPU variant (declared; its CUDA wheels are several GB): torch from a CUDA index and
# LightGBM's OpenCL vendor file for the driver, on the same base. The chart's GPU Ray
# workers take it.
GPU_TORCH_INDEX ?= https://download.pytorch.org/whl/cu128
images-gpu:
	$(ENGINE) $(ENGINE_FLAGS) build $(BUILD_FLAGS) $(EXTRA_BUILD_FLAGS) --build-arg BASE=$(BASE) \
	  --build-arg TORCH_INDEX=$(GPU_TORCH_INDEX) --build-arg GPU=1 -f images/Containerfile \
	  -t ghcr.io/mlcycle/mlcycle-gpu:$(IMAGE_TAG) .

# Where no registry image can be pulled: a local base (images/local-base.sh), torch's CPU
# wheel from the machine's wheel folder, and the machine's CA bundle (a TLS proxy's).
# The bento's Dockerfile starts from python:3.11-slim, so the stand-in is tagged as that too,
# and its bento is built from a variant of bentofile.yaml (images/local_bentofile.py).
images-local:
	images/local-base.sh localhost/python:3.11-slim-bookworm
	$(ENGINE) tag localhost/python:3.11-slim-bookworm docker.io/library/python:3.11-slim
	$(BIN)/python images/local_bentofile.py build/bentofile.local.yaml
	$(MAKE) images BASE=localhost/python:3.11-slim-bookworm TORCH_INDEX= \
	  BENTOFILE=build/bentofile.local.yaml SERVING_BUILD_FLAGS=--pull=never \
	  EXTRA_BUILD_FLAGS="-v /opt/wheels:/opt/wheels:ro --build-arg PIP_FIND_LINKS=/opt/wheels \
	  -v /etc/ssl/certs:/etc/ssl/certs:ro --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt"

# Checks the built images: a compiled pipeline step, the endpoint and MLflow in containers.
test-images: $(STAMP)
	MLCYCLE_TEST_IMAGES=1 ENGINE="$(ENGINE) $(ENGINE_FLAGS)" IMAGE_TAG=$(IMAGE_TAG) \
	  MLFLOW_TAG=$(MLFLOW_TAG) $(BIN)/python -m pytest tests/images -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The configuration reference, from the settings model (a test checks it is current).
docs: $(STAMP)
	$(BIN)/mlcycle config reference --out docs/configuration.md

clean:
	-$(BIN)/mlcycle serve --stop
	rm -rf .mlcycle
