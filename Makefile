# Two commands do all the set-up on a fresh machine (see README):
#   make demo   - install, then convert the trained example checkpoint, check it against its
#                 golden TF tensors and deblur two example images (no TensorFlow needed)
#   make test   - install with the TensorFlow extra, then run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch; on these machines pip takes it from local disk. Elsewhere pip
# may pick a CUDA build of the same version, or set TORCH_INDEX to PyTorch's CPU index:
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q
DEMO_OUT ?= out/demo
PHOTO := examples/photos/07.png

.PHONY: demo test install install-tf clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.stamp-base: setup.cfg pyproject.toml | $(BIN)/python
	$(PIP) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PIP) -e ".[dev]"
	touch $@

$(VENV)/.stamp-tf: $(VENV)/.stamp-base
	$(PIP) -e ".[tf,port,train,onnx,eval,hub,video,dev]"
	touch $@

install: $(VENV)/.stamp-base
install-tf: $(VENV)/.stamp-tf

test: $(VENV)/.stamp-tf
	$(BIN)/python -m pytest

demo: $(VENV)/.stamp-base
	mkdir -p $(DEMO_OUT)
	$(BIN)/srn-port convert examples/trained/color $(DEMO_OUT)/srn_color.pt --force
	$(BIN)/srn-port diff $(DEMO_OUT)/srn_color.pt
	$(BIN)/srn-port deblur $(DEMO_OUT)/srn_color.pt examples/blurred_example.png $(PHOTO) \
		-o $(DEMO_OUT) --compare --force
	@echo "Side-by-side pictures (input | output): $(DEMO_OUT)/*_compare.png"

clean:
	rm -rf $(VENV) out build *.egg-info
