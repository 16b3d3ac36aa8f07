#!/usr/bin/env bash
# Writes docs/serve-phone.png (390x844) and docs/serve-display.png (800x480): the browser test
# of the clinic page with its screenshots sent to docs/. Needs Debian's chromium and
# chromium-driver (apt-get install chromium chromium-driver).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs
DERMEDGE_BROWSER_TESTS=required DERMEDGE_SCREENSHOTS="$PWD/docs" \
  cargo test --release --test cli -- browser:: --nocapture
ls -l docs/serve-phone.png docs/serve-display.png
