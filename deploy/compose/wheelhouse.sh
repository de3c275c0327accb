#!/bin/sh
# Prepare a wheelhouse for an offline image build, the way an air-gapped build does:
#   OUT_DIR/third-party/  every locked third-party dependency (pip download of `uv export`) and its
#                         requirements.txt (versions from uv.lock): changes only with uv.lock
#   OUT_DIR/ferry/        wheels of every workspace package (uv build) and their requirements.txt
# The image build installs each with `pip install --no-index --find-links DIR -r DIR/requirements.txt`,
# third-party first, so a source change rebuilds only the last, small layer. Usage: wheelhouse.sh OUT_DIR
# Runs on the host (needs uv and PyPI) and, on a laptop without a prepared wheelhouse, inside the build.
set -eu
out=$1
cd "$(dirname "$0")/../.."
say() { printf '==> %s\n' "$*" >&2; }
export PATH="$HOME/.local/bin:$PATH"
stamp="$out/.stamp"
want=$(cat uv.lock pyproject.toml $(find libs services deploy cli -name pyproject.toml 2>/dev/null | sort) \
  $(git ls-files -- libs services deploy/mock-engine deploy/local cli 2>/dev/null | grep -E '\.py$' | sort) 2>/dev/null \
  | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$out/ferry/requirements.txt" ]; then
  say "wheelhouse $out is up to date"
  exit 0
fi
mkdir -p "$out/third-party" && rm -rf "$out/ferry" && mkdir -p "$out/ferry"
say "wheelhouse: building the workspace packages (uv build --all-packages)"
uv build --quiet --all-packages --wheel --out-dir "$out/ferry"
for w in "$out"/ferry/*.whl; do basename "$w" | cut -d- -f1 | tr _ -; done > "$out/ferry/requirements.txt"
locked=$(uv export --quiet --frozen --no-dev --no-emit-workspace --no-hashes --no-header --format requirements-txt \
  | grep -v '^ *#')
if [ "$locked" != "$(cat "$out/third-party/requirements.txt" 2>/dev/null)" ]; then
  rm -rf "$out/third-party" && mkdir -p "$out/third-party"
  printf '%s\n' "$locked" > "$out/third-party/requirements.txt"
  say "wheelhouse: downloading $(wc -l < "$out/third-party/requirements.txt") locked third-party wheels"
  ${PIP_DOWNLOAD:-uv run --quiet --no-project --with pip python -m pip} download --quiet --disable-pip-version-check \
    --only-binary=:all: --dest "$out/third-party" -r "$out/third-party/requirements.txt"
fi
echo "$want" > "$stamp"
say "wheelhouse ready in $out: $(ls "$out"/third-party/*.whl | wc -l) third-party and $(ls "$out"/ferry/*.whl | wc -l) Ferry wheels"
