#!/usr/bin/env bash
# Takes docs/chat.png, the README's screenshot, from the real chat page in headless Chromium:
# the browser end-to-end test drives two people through a conversation and saves what one of
# them sees. Needs chromium and chromium-driver (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --example chat
SWITCHBOARD_SCREENSHOT="$PWD/docs/chat.png" cargo test --test chat_browser -- --nocapture
echo "wrote docs/chat.png"
# And docs/admin.png, the admin page (docs/operations.md), from its browser test.
SWITCHBOARD_ADMIN_SCREENSHOT="$PWD/docs/admin.png" cargo test --test admin_browser -- --nocapture
echo "wrote docs/admin.png"
