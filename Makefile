# The one place where isplit is set up. `make demo` and `make test` set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.isplit-setup
FMNIST := /usr/share/datasets/fashion-mnist
DEMO_EPOCHS ?= 15
DEMO_NETS ?= demo-vgg16 demo-resnet50 demo-mobilenet demo-convnext demo-vit
# NVIDIA's Triton server (PyPI's nvidia-pytriton, CPU only) for the Triton test; PYTRITON=0: none.
PYTRITON ?= 1
PYTRITON_REQS := 'nvidia-pytriton>=0.7,<0.8' 'onnxruntime>=1.18'

.PHONY: setup demo test lint bench bench-serve demo-weights predictors-sweep

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test,serve,timm]'
	@# PyTriton in an environment of its own: its Python backend stub is built against numpy 1
	@# (PyTriton pins numpy<2), isplit's environment has numpy 2. Its wheel is Linux x86_64
	@# (glibc >= 2.35) only; elsewhere the Triton test skips and says why.
	@if [ "$(PYTRITON)" = 1 ]; then \
	  { test -x $(VENV)/pytriton/bin/python || $(BIN)/python -m venv $(VENV)/pytriton; } \
	  && $(VENV)/pytriton/bin/pip install -q $(PYTRITON_REQS) \
	  || echo "warning: could not install nvidia-pytriton; the Triton test will skip"; \
	fi
	@# Fashion-MNIST from Debian where apt-get is available (elsewhere torchvision downloads it),
	@# and chromium, the headless browser the report test renders report.html in.
	@if { [ ! -d $(FMNIST) ] || ! command -v chromium >/dev/null 2>&1; } \
	  && command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q dataset-fashion-mnist chromium \
	  || echo "warning: could not install dataset-fashion-mnist or chromium; isplit will look" \
	    "elsewhere for the data and the report test will skip its browser check"; \
	fi
	touch $(STAMP)

setup: $(STAMP)

# The main job on the built-in demo: the demo VGG16-style network on the Fashion-MNIST test set.
demo: setup
	$(BIN)/isplit analyze --out runs/demo

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/throughput.py

# Load on the tail server over loopback (run it on a machine that runs nothing else).
bench-serve: setup
	$(BIN)/python benchmarks/serve.py

# Reproduces the packaged demo weights (CPU; see README for the time it takes). One network:
# make demo-weights DEMO_NETS=demo-mobilenet
# demo-convnext and demo-vit: AdamW, their architectures' own recipe, in one-cycle stages
# (epochs:peak learning rate[:augmentation, default shift+flip]), each stage starting from the
# previous one's weights.
STAGES_demo-convnext ?= 10:1e-3 5:5e-4 5:2e-4
STAGES_demo-vit ?= 10:1e-3 10:5e-4 5:3e-4:none
demo-weights: setup
	mkdir -p build
	for net in $(DEMO_NETS); do \
	  out=src/isplit/models/weights/$$net.safetensors; \
	  common="--model $$net --data fashion-mnist --batch-size 128 --seed 0"; \
	  case $$net in \
	    demo-convnext) stages="$(STAGES_demo-convnext)" ;; \
	    demo-vit) stages="$(STAGES_demo-vit)" ;; \
	    *) $(BIN)/isplit train $$common --augment shift+flip --weights none \
	         --epochs $(DEMO_EPOCHS) --out $$out \
	         || exit 1; continue ;; \
	  esac; \
	  weights=none; n=0; last=$$(echo $$stages | wc -w); \
	  for stage in $$stages; do \
	    n=$$((n + 1)); dest=build/$$net-stage$$n.safetensors; \
	    [ $$n = $$last ] && dest=$$out; \
	    epochs=$$(echo $$stage | cut -d: -f1); lr=$$(echo $$stage | cut -d: -f2); \
	    augment=$$(echo $$stage | cut -d: -f3); \
	    $(BIN)/isplit train $$common --weights $$weights --optimizer adamw \
	      --epochs $$epochs --lr $$lr --augment $${augment:-shift+flip} --out $$dest || exit 1; \
	    weights=$$dest; \
	  done; \
	done

# The exhaustive sweeps of docs/experiments.md (hours on a 2-core CPU; QUICK=1 for a tiny check).
predictors-sweep: setup
	PATH=$(abspath $(BIN)):$$PATH PYTHON=$(BIN)/python benchmarks/predictors_sweep.sh runs/predictors
