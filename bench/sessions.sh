#!/usr/bin/env bash
# Memory per session in the in-process store: 100,000 real-sized sessions (1 KB JWT access
# token, refresh token, 1 KB ID token), sealed exactly as in production. Prints resident
# bytes per session; goal <= 3 KB. Usage: bench/sessions.sh [count]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --release --locked --example session_memory -- "${1:-100000}"
