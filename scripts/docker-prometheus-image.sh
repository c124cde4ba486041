#!/usr/bin/env bash
# Makes a Prometheus image from this machine's Debian `prometheus` binary, for the compose
# monitoring profile where no registry image can be pulled (the container test uses it):
#   scripts/docker-prometheus-image.sh [TAG]       (default devmirror-prometheus:local)
# then run with PROMETHEUS_IMAGE=TAG.
set -euo pipefail
tag="${1:-devmirror-prometheus:local}"
bin="$(command -v prometheus)"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/etc/prometheus" "$root/prometheus" "$root/tmp"
cp -L "$bin" "$root/bin/prometheus"
for lib in $(ldd "$bin" | grep -o '/[^ )]*'); do cp -L --parents "$lib" "$root"; done
chmod 1777 "$root/prometheus" "$root/tmp"
tar -C "$root" -c . | docker import -c 'ENTRYPOINT ["/bin/prometheus"]' -c 'WORKDIR /prometheus' - "$tag" >/dev/null
echo "$tag: $("$bin" --version 2>&1 | head -1)"
