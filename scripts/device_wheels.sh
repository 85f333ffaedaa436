#!/usr/bin/env bash
# Wheels for a lent GPU machine (Python 3.12, no network): the dependencies of octbench that its image lacks, at
# the versions installed in this checkout's .venv, into .whl/ (git-ignored). Run here, where pip reaches the
# registry; then carry .whl with benchmarks/gpu_run.sh (see docs/benchmarks.md). PYTHON_VERSION (default 3.12,
# the GPU image's) picks the wheels' Python.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
# what the GPU image has no copy of (its package list: torch, numpy, scipy, scikit-learn, pandas, matplotlib,
# jinja2, click, rich, pyyaml, pluggy, pillow, tqdm, opencv-python-headless, pytest and pytest-benchmark are there)
missing=(pydantic pydantic-core annotated-types typing-inspection typing-extensions
         imbalanced-learn sklearn-compat albumentations albucore simsimd stringzilla
         optuna sqlalchemy greenlet alembic mako markupsafe colorlog captum)
pins=()
for name in "${missing[@]}"; do
    pins+=("$name==$($py -m pip show "$name" | awk '/^Version:/ {print $2}')")
done
rm -rf .whl && mkdir .whl
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
$py -m pip download -q --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" --implementation cp "${platforms[@]}" \
    -d .whl "${pins[@]}"
ls -1 .whl
du -sh .whl
