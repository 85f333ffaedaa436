#!/usr/bin/env bash
# Install octbench into a virtual environment (.venv by default), CPU build of torch unless told otherwise.
# `pip install octbench` works too, once torch is installed; this script exists to choose the torch build first.
#
#   bash scripts/install.sh          # octbench and its dependencies
#   bash scripts/install.sh --dev    # ... plus the test tools, Ray, and the example plugin package (examples/)
#
# Environment:
#   OCTBENCH_VENV    where to create the environment (default .venv)
#   TORCH_SPEC       the torch requirement (default torch==2.13.0: a CPU build where one is offered)
#   TORCH_INDEX_URL  an index to take torch from, e.g. https://download.pytorch.org/whl/cpu (CPU-only wheels)
#                    or https://download.pytorch.org/whl/cu126 (CUDA)
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
venv="${OCTBENCH_VENV:-.venv}"
python3 -m venv "$venv"
pip="$venv/bin/python -m pip"

# 1. torch first, explicitly: a bare `torch` requirement on a machine without torch resolves to a CUDA build of
#    several GB from PyPI; installed first, the later `torch>=2.2` of pyproject.toml is already satisfied.
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  $pip install -q "${TORCH_SPEC:-torch==2.13.0}" --index-url "$TORCH_INDEX_URL"
else
  $pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
# 2. octbench, editable, so that suites/, plugins/ and tests run from this checkout.
$pip install -q -e ".$extra"
# 3. with --dev, the example third-party plugin package, so the tests run with a plugin package installed beside
#    the built-ins (as users have), and run its own tests too.
if [ -n "$extra" ]; then
  $pip install -q --no-deps --no-build-isolation -e examples/octbench-extra
fi
# 4. with --dev, a browser for the report's browser test (Debian's chromium; Playwright drives it, downloads nothing).
#    Best effort: without root or apt the browser test skips with its reason.
if [ -n "$extra" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "note: could not install chromium; the browser test will skip"
  else
    echo "note: no chromium on PATH; the browser test will skip (Debian: apt-get install chromium)"
  fi
fi
# 5. with --dev, pdflatex and booktabs for the test that compiles the LaTeX export (best effort, as above).
if [ -n "$extra" ] && ! command -v pdflatex >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      texlive-latex-base texlive-latex-recommended >/dev/null) \
      || echo "note: could not install TeX; the LaTeX compile test will skip"
  else
    echo "note: no pdflatex on PATH; the LaTeX compile test will skip (Debian: apt-get install texlive-latex-base)"
  fi
fi
echo "octbench installed in $venv ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
