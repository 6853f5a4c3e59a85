#!/usr/bin/env bash
# Install detectron2 into the Python given as $1, unless one already imports there.
#   DETECTRON2_SOURCE=/path/to/detectron2   install from a source checkout (official build, with _C ops)
#   otherwise: the pure-Python wheel of sal-detectron2 (detectron2's main-branch Python code).
set -euo pipefail
PY="${1:?usage: install_detectron2.sh PYTHON}"
if "$PY" -c "import detectron2" 2>/dev/null; then
  exit 0
fi
if [ -n "${DETECTRON2_SOURCE:-}" ]; then
  echo "Installing detectron2 from source: $DETECTRON2_SOURCE"
  "$PY" -m pip install --no-build-isolation -e "$DETECTRON2_SOURCE"
  exit 0
fi
WHEELS="$(mktemp -d)"
trap 'rm -rf "$WHEELS"' EXIT
echo "Installing detectron2 (pure Python, from the sal-detectron2 0.7.2 wheel)"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 -d "$WHEELS" sal-detectron2==0.7.2
# The wheel is tagged cp310 but holds no compiled code; renamed, it installs on any CPython 3.
# Its metadata pins numpy<2, which its pure-Python code does not need (the test suite runs on
# numpy 2): the pin is dropped from the copy we install, so that pip's later installs do not
# print a dependency-conflict ERROR about it.
"$PY" - "$WHEELS" <<'PYTHON'
import glob, os, re, sys, zipfile
folder = sys.argv[1]
source = glob.glob(os.path.join(folder, "sal_detectron2-0.7.2-*.whl"))[0]
target = os.path.join(folder, "sal_detectron2-0.7.2-py3-none-any.whl")
with zipfile.ZipFile(source) as whl, zipfile.ZipFile(target + ".tmp", "w", zipfile.ZIP_DEFLATED) as out:
    for item in whl.infolist():
        data = whl.read(item)
        if item.filename.endswith(".dist-info/METADATA"):
            data = re.sub(rb"(?m)^Requires-Dist: numpy<2\s*$", b"Requires-Dist: numpy", data)
        out.writestr(item, data)
os.replace(target + ".tmp", target)
PYTHON
"$PY" -m pip install -q "$WHEELS/sal_detectron2-0.7.2-py3-none-any.whl" "setuptools<81" fvcore iopath
