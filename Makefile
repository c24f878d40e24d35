# Two entry points (see README): `make demo` and `make test`. Everything else is what they depend on.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The install stamp is keyed by pyproject.toml, so a dependency change reinstalls and nothing else does.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
DEMO := out/demo

.PHONY: setup demo test control-plane clean

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

# pytest's exit 5 (nothing collected) is a failure here: an empty selection must never pass as green.
test: setup control-plane
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

clean:
	rm -rf out .dev-cluster .pytest_cache
