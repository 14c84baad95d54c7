#!/usr/bin/env bash
# Set up sayno on a fresh machine: system packages (as root, Debian/Ubuntu), a virtual environment in .venv,
# and sayno with every extra. Works offline when the Python wheels are on the machine's local index.
set -euo pipefail
cd "$(dirname "$0")"
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  # Noto Color Emoji: the second art style (domain shift); WordNet: NegLabel's word list;
  # Chromium + chromedriver: the web page's end-to-end test (tests/test_serve.py) in a real headless browser.
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-color-emoji wordnet-base chromium \
    chromium-driver >/dev/null
else
  echo "setup.sh: not root or no apt-get: install fonts-noto-color-emoji, wordnet-base, chromium and chromium-driver yourself (optional)" >&2
fi
python3 -m venv .venv
.venv/bin/pip install -q -e ".[all]"
echo "sayno is installed in .venv: run .venv/bin/sayno benchmark"
