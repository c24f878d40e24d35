# Two entry points (see README): `make demo` and `make test`. Everything else is what they depend on.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The install stamp is keyed by pyproject.toml, so a dependency change reinstalls and nothing else does.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
DEMO := out/demo
# pytest's exit 5 (nothing collected) is a failure here: an empty selection must never pass as green.
pytest = $(BIN)/python -m pytest $(1); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

.PHONY: setup demo test unit lint control-plane helm clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

# The main job on the embedded default: a tiny random Wan2.1 model, one prompt, TeaCache, one CPU process.
demo: setup
	$(BIN)/chitu make-tiny-model $(DEMO)/tiny-wan
	$(BIN)/chitu generate --model $(DEMO)/tiny-wan --prompt "A cat walking on grass" \
	  --frames 9 --height 64 --width 64 --steps 6 --flexcache teacache --cache-ratio 0.5 \
	  --warmup 1 --cooldown 1 --output $(DEMO)/video
	@echo "video and metrics in $(DEMO)/video"

# kube-apiserver, etcd, controller-manager and scheduler from the official Go modules, cached by version.
control-plane:
	bash scripts/build-control-plane.sh

# helm from its Go module (helm.sh/helm/v3), cached by version: the dev cluster installs the chart with it.
helm:
	bash scripts/build-helm.sh

# Every tier: unit, distributed (gloo ranks), e2e (the hermetic control plane).
test: setup control-plane helm
	$(call pytest,)

# The reliability tier (issue 14), slower than `test`: hostile specs (hypothesis), the hanging cases, faults
# (operator SIGKILL, apiserver restart, rank killed, S3 outages), least privilege, secrets. It runs only when
# named by path; its fault outcomes land in bench/results/reliability.json. .ci/run runs it before `test`.
.PHONY: reliability
reliability: setup control-plane helm
	CHITU_RELIABILITY_REPORT=bench/results/reliability.json $(call pytest,tests/reliability)

# The fast tier: tests/unit only (CPU, tiny models, pure builders); no control plane is built or started.
unit: setup
	$(call pytest,tests/unit)

# Lint and formatting check (rules in pyproject.toml [tool.ruff]); `ruff format .` applies the formatting.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The generated Kubernetes files: the GenerationJob CRD (from chitu_api's models) and its chart copy, and the
# chart's RBAC rules (from chitu_operator/rbac.py). Byte-stable; `make crds-check` (and a unit test) fails when stale.
.PHONY: crds crds-check
crds: setup
	$(BIN)/python scripts/generate-crds.py

crds-check: setup
	$(BIN)/python scripts/generate-crds.py --check

clean:
	rm -rf out .dev-cluster .pytest_cache
