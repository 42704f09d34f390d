#!/bin/bash
# Screenshots of the plugin in QGIS desktop under Xvfb, for the README.
#   bash scripts/screenshots.sh      (after `make demo`; xvfb comes with `make setup`; a window
#                                      manager, openbox, is used when installed: the PNGs are
#                                      grabbed from the widgets, so they come out the same without)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -d "$ROOT/demo-output/model" ] || { echo "run make demo first" >&2; exit 1; }
WORK=$(mktemp -d)
/usr/bin/python3 "$ROOT/scripts/deepness_example.py" "$ROOT/demo-output/landcover_deepness.onnx"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
python3 "$ROOT/scripts/plugin_files.py" install --config-root "$WORK/config" --profile default >/dev/null
Xvfb :97 -screen 0 1400x900x24 >/dev/null 2>&1 &
sleep 1
if command -v openbox >/dev/null; then DISPLAY=:97 openbox >/dev/null 2>&1 & sleep 1; fi
DISPLAY=:97 OTBTF_ROOT="$ROOT" QGIS_CUSTOM_CONFIG_PATH="$WORK/config" timeout 300 \
    qgis --nologo --noversioncheck --code "$ROOT/scripts/screenshots.py" >"$WORK/qgis.out" 2>&1 || {
    echo "QGIS exited with an error:" >&2; tail -20 "$WORK/qgis.out" >&2; exit 1; }
ls -1 "$ROOT/docs/img"
