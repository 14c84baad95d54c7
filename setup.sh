#!/usr/bin/env bash
# Set up sayno on a fresh machine: system packages (as root, Debian/Ubuntu), a virtual environment in .venv,
# and sayno with every extra. Works offline when the Python wheels are on the machine's local index.
set -euo pipefail
cd "$(dirname "$0")"
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  # Noto Color Emoji: the second art style (domain shift); WordNet: NegLabel's word list;
  # Chromium + chromedriver: the web page's end-to-end test (tests/test_serve.py) in a real headless browser;
  # libcairo2: cairosvg's C library, to draw the fluent style's SVG emoji.
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-color-emoji wordnet-base chromium \
    chromium-driver libcairo2 >/dev/null
else
  echo "setup.sh: not root or no apt-get: install fonts-noto-color-emoji, wordnet-base, chromium, chromium-driver and libcairo2 yourself (optional)" >&2
fi
python3 -m venv .venv
.venv/bin/pip install -q -e ".[all]"
# The twemoji and fluent art styles (npm packages, pinned) in $SAYNO_EMOJI_DIR (default ~/.cache/sayno/emoji).
EMOJI_DIR="${SAYNO_EMOJI_DIR:-$HOME/.cache/sayno/emoji}"
EMOJI_PACKAGES="emoji-datasource-twitter@16.0.0 fluentui-emoji@1.3.0"
if command -v npm >/dev/null 2>&1; then
  mkdir -p "$EMOJI_DIR"
  # shellcheck disable=SC2086
  npm install --prefix "$EMOJI_DIR" --no-audit --no-fund --loglevel=error $EMOJI_PACKAGES >/dev/null \
    || echo "setup.sh: npm install failed: the twemoji and fluent styles are unavailable (optional)" >&2
else
  echo "setup.sh: no npm: for the twemoji and fluent styles install npm (apt-get install npm), then run: npm install --prefix $EMOJI_DIR $EMOJI_PACKAGES (optional)" >&2
fi
echo "sayno is installed in .venv: run .venv/bin/sayno benchmark"
