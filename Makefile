# Entry points. Every target runs the (idempotent, seconds when up to date) setup first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-jazzy demo test lint bench bench-quick stress export label train evaluate teachers clean

setup:
	bash scripts/setup.sh

# Main job: the real pipeline over the bundled sample video (vtest.avi).
demo: setup
	$(PY) -m diffpose_ros.cli.video --detector-imgsz 1280 \
	  --out outputs/vtest_annotated.mp4 --json outputs/vtest_poses.json

# The whole suite on ROS 2 Kilted (.venv), then the ROS tests on ROS 2 Jazzy (.venv-jazzy).
test: setup setup-jazzy
	bash scripts/run_tests.sh

# The second venv for the Jazzy test run: Jazzy wheels, same other dependencies (idempotent).
setup-jazzy: setup
	DIFFPOSE_DISTRO=jazzy bash scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check diffpose_ros test benchmarks scripts/*.py

# The benchmark suite (docs/benchmarks.md + docs/img/*.png; prints its estimated run time,
# ~14 min on the idle 2-core machine). Some parts only: `$(PY) benchmarks/run_all.py --only node`.
bench: setup
	$(PY) benchmarks/run_all.py --out docs/benchmarks.md

# Soak (10 min), fuzz (1,050 messages), overload, publisher kill, lifecycle and weight faults
# (~17 min) -> outputs/bench/stress.json + docs/img/stress_soak.png, rendered into
# docs/benchmarks.md. One scenario: `$(PY) benchmarks/stress.py --scenarios fuzz`.
stress: setup
	$(PY) benchmarks/stress.py; status=$$?; \
	$(PY) benchmarks/run_all.py --only stress && exit $$status

# Smoke run of every part (~3 min): report, plots and JSON in outputs/bench/quick/.
bench-quick: setup
	$(PY) benchmarks/run_all.py --quick

# Issue 10's recipe: YOLO-only pseudo-labels of vtest.avi 0-599 (~2 min), training on LSPET train
# + those labels in three stages on two threads (the detector runs once over LSPET for its
# priors, ~8 min, cached in data/priors; stage 1 ~55 min, stage 2 the fine-tune that trusts a
# sure detector ~25 min, stage 3 the 2-block window encoder fine-tuned longer ~40 min: about
# 2 h 10 in all, estimated from each stage's measured rate; `make train` resumes any stage),
# evaluation on LSPET val, dev_gt, the Bonn video and vtest 600-794. LSPET and Bonn are research
# data expected in ../shared/data (a clear error names what to get otherwise).
VTEST = $(shell $(PY) -c 'from diffpose_ros.assets import VTEST_VIDEO, asset_path; print(asset_path(VTEST_VIDEO, verify=False))' 2>/dev/null)

teachers: setup
	$(PY) scripts/setup_blazepose_teacher.py

label: setup
	$(PY) -m diffpose_ros.cli.label --video $(VTEST):0:600 --teachers yolo \
	  --out data/pseudo/vtest_train

train: setup
	$(PY) -m diffpose_ros.cli.train --config config/train_default.yaml
	$(PY) -m diffpose_ros.cli.train --config config/train_trust_strong.yaml
	$(PY) -m diffpose_ros.cli.train --config config/train_strl2_long.yaml

evaluate: setup
	$(PY) -m diffpose_ros.cli.evaluate all --cache --out outputs/eval

export: setup
	$(PY) -m diffpose_ros.runtime.export --out outputs/onnx

clean:
	rm -rf build outputs .pytest_cache

# Rosbags (docs/bags.md): the sample bag from vtest.avi (outputs/bags/vtest, 61 MB), and the
# bag flow of launch/diffpose_bag.launch.py (record + node on sim time + play) run on it here.
.PHONY: bag bag-demo

bag: setup
	$(PY) -m diffpose_ros.cli.bag make

bag-demo: setup
	bash scripts/bag_demo.sh
