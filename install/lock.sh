#!/usr/bin/env bash
# Regenerates requirements.lock.txt and requirements-dev.lock.txt with uv.
# torch/torchvision and their CUDA wheels are resolved under install/constraints.txt but left out of the
# lock, so an operator can install another CUDA build of the same pair (TORCH_INDEX_URL in install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
strip_torch() { grep -v -E '^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)==' ; }
uv pip compile --quiet --python-version 3.11 --universal pyproject.toml install/comfyui-requirements.txt \
    -c install/constraints.txt --no-header --no-annotate | strip_torch > requirements.lock.txt.new
mv requirements.lock.txt.new requirements.lock.txt
uv pip compile --quiet --python-version 3.11 --universal --extra dev pyproject.toml \
    -c install/constraints.txt -c requirements.lock.txt --no-header --no-annotate | strip_torch \
    | grep -v -x -F -f requirements.lock.txt > requirements-dev.lock.txt.new
mv requirements-dev.lock.txt.new requirements-dev.lock.txt
echo "requirements.lock.txt: $(grep -c '==' requirements.lock.txt) pins; requirements-dev.lock.txt: $(grep -c '==' requirements-dev.lock.txt) pins"
