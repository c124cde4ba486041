#!/usr/bin/env bash
# Stages a host build for the Dockerfile's prebuilt path (--build-arg APP=prebuilt), so an image can
# be built without the npm registry: docker/prebuilt/{package.json,dist,node_modules}, with the
# production dependencies only (a copy of node_modules pruned offline).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || { echo "run npm ci first" >&2; exit 1; }
npm run build --silent
out=docker/prebuilt
# Everything but the tracked README goes.
find "$out" -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
cp package.json package-lock.json "$out/"
cp -a dist "$out/dist"
rm -rf "$out/dist/test"
cp -a node_modules "$out/node_modules"
(cd "$out" && npm prune --omit=dev --no-audit --no-fund --ignore-scripts >/dev/null)
rm -f "$out/package-lock.json"
echo "$out: $(du -sh "$out" | cut -f1)"
