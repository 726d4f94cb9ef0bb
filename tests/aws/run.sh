#!/usr/bin/env bash
# AWS compatibility suite: drives a running keygate admin API with the real `aws` CLI and boto3.
#
# Creates (or reuses) a virtualenv at target/aws-venv holding the exact versions pinned in
# tests/aws/requirements.txt, then runs `pytest -q tests/aws` with it. Extra arguments go to
# pytest (e.g. `tests/aws/run.sh -k usage -x`).
#
# Environment:
#   KEYGATE_BIN     keygate binary (default target/debug/keygate, relative to the repo root)
#   PYTHON          interpreter used to create the venv (default python3; needs >= 3.10)
#   AWS_SUITE_VENV  where the venv lives (default target/aws-venv)
#
# Exits non-zero when anything is missing (binary, interpreter, packages): it never skips.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

REQ="$ROOT/tests/aws/requirements.txt"
VENV="${AWS_SUITE_VENV:-$ROOT/target/aws-venv}"
PYTHON="${PYTHON:-python3}"

die() {
  echo "tests/aws/run.sh: $*" >&2
  exit 1
}

# keygate binary: absolute path, passed through to the tests.
KEYGATE_BIN="${KEYGATE_BIN:-target/debug/keygate}"
case "$KEYGATE_BIN" in
  /*) ;;
  *) KEYGATE_BIN="$ROOT/$KEYGATE_BIN" ;;
esac
[ -x "$KEYGATE_BIN" ] || die "keygate binary not found or not executable: $KEYGATE_BIN (run 'cargo build --workspace' first, or set KEYGATE_BIN)"
export KEYGATE_BIN

command -v "$PYTHON" >/dev/null 2>&1 || die "no Python interpreter '$PYTHON' (set PYTHON)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || die "$PYTHON is $("$PYTHON" -V 2>&1); awscli/boto3 as pinned need Python >= 3.10"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
  || die "$PYTHON lacks the venv/ensurepip modules (on Debian: apt-get install python3-venv)"

# The venv is reused only when it was built from this exact requirements file with this exact
# interpreter version; otherwise it is rebuilt from scratch.
want="$(cat "$REQ" | sha256sum | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
stamp="$VENV/.keygate-aws-suite"
if [ ! -x "$VENV/bin/python" ] || [ ! -x "$VENV/bin/aws" ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "== building $VENV from tests/aws/requirements.txt"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --require-virtualenv -r "$REQ"
  "$VENV/bin/python" -m pip check
  echo "$want" >"$stamp"
fi

# The pins must be what is installed (catches a venv edited by hand).
"$VENV/bin/python" - "$REQ" <<'PY'
import re, sys
from importlib.metadata import version, PackageNotFoundError
bad = []
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
    if not m:
        sys.exit(f"requirements.txt: not an exact pin: {line!r}")
    name, want = m.groups()
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have != want:
        bad.append(f"{name}: want {want}, have {have}")
if bad:
    sys.exit("target/aws-venv does not match tests/aws/requirements.txt (delete it to rebuild):\n  " + "\n  ".join(bad))
PY

echo "== $("$VENV/bin/aws" --version 2>&1)"
echo "== keygate: $KEYGATE_BIN"

export PYTHONDONTWRITEBYTECODE=1
# Run from the repo root; tests/aws/pytest.ini makes tests/aws the rootdir.
exec "$VENV/bin/python" -m pytest -q -c tests/aws/pytest.ini tests/aws "$@"
