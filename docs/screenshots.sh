#!/usr/bin/env bash
# Regenerate the pictures the README shows (`make docs-images`): the synthetic-data preview, a
# score-curve plot and the top of report.html from the demo run (made first if missing), and
# the service's page.
# The report screenshot needs a headless Chromium (Debian: apt-get install chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
DEMO=${DEMO:-runs/demo}
OUT=docs/images
mkdir -p "$OUT"

"$BIN/mespot" synth --small --out build/docs-synth --overwrite --preview "$OUT/synth_preview.png"
ls "$DEMO"/run/evaluation/last*/metrics.json >/dev/null 2>&1 || make demo DEMO="$DEMO"
"$BIN/mespot" report "$DEMO/run" >/dev/null
video=$(ls "$DEMO/run/report" | grep '^curves_' | sort | sed -n 3p)
cp "$DEMO/run/report/$video" "$OUT/curves.png"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$(mktemp -d)" --window-size=1100,1250 --hide-scrollbars \
  --screenshot="$OUT/report_top.png" "file://$PWD/$DEMO/run/report.html" 2>/dev/null
# the service's page, as its browser test leaves it (tests/test_service_browser.py)
MESPOT_SCREENSHOT_DIR="$PWD/$OUT" "$BIN/python" -m pytest -q -p no:cacheprovider \
  tests/test_service_browser.py tests/test_service_browser_lab.py >/dev/null
"$BIN/python" -c "import sys; from mespot.synth.preview import shrink_png; [shrink_png(p) for p in sys.argv[1:]]" \
  "$OUT/curves.png" "$OUT/report_top.png" "$OUT/service.png" "$OUT/service_review.png" \
  "$OUT/service_runs.png"
ls -l "$OUT"
