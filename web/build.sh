#!/usr/bin/env bash
# Builds the web UI into web/dist (committed; embedded by `go build`).
# Needs Node 20+ and npm; installs the exact packages of package-lock.json.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error
npx --no-install tsc --noEmit -p .
node build.mjs
