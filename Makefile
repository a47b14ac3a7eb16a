# Entry points. Every target runs the (idempotent, seconds when up to date) setup first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench export clean

setup:
	bash scripts/setup.sh

# Main job: the real pipeline over the bundled sample video (vtest.avi).
demo: setup
	$(PY) -m diffpose_ros.cli.video --detector-imgsz 1280 \
	  --out outputs/vtest_annotated.mp4 --json outputs/vtest_poses.json

test: setup
	bash scripts/run_tests.sh

lint: setup
	$(VENV)/bin/ruff check diffpose_ros test benchmarks scripts/*.py

bench: setup
	$(PY) benchmarks/bench_engine.py --out docs/benchmarks.md

export: setup
	$(PY) -m diffpose_ros.runtime.export --out outputs/onnx

clean:
	rm -rf build outputs .pytest_cache
