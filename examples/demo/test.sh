#!/usr/bin/env bash
# The demo's "test suite".
set -eu
for t in parse build link; do
  echo "ok - $t"
done
