#!/usr/bin/env bash
# Makes a Docker base image from this machine's own Node binary and the shared libraries it links,
# for machines where no registry image can be pulled:
#   scripts/docker-base.sh [TAG]          (default devmirror-base:node20)
# then build with --build-arg NODE_IMAGE=TAG. The image has node on /usr/local/bin and a POSIX shell
# (/bin/sh, for the Dockerfile's one RUN), nothing else.
set -euo pipefail
tag="${1:-devmirror-base:node20}"
node_bin="$(command -v node)"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/tmp" "$root/etc"
cp -L "$node_bin" "$root/usr/local/bin/node"
# Every library ldd resolves (and the loader itself), at the same path.
sh_bin="$(readlink -f /bin/sh)"
mkdir -p "$root/bin"
cp -L "$sh_bin" "$root/bin/sh"
for lib in $(ldd "$node_bin" "$sh_bin" | grep -v ':$' | grep -o '/[^ )]*' | sort -u); do
  cp -L --parents "$lib" "$root"
done
chmod 1777 "$root/tmp"
# Names for the numeric user the runtime stage runs as (nothing requires them; tools print them).
printf 'root:x:0:0:root:/root:/sbin/nologin\nnode:x:1000:1000:node:/app:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnode:x:1000:\n' > "$root/etc/group"
tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' - "$tag" >/dev/null
echo "$tag: $("$node_bin" --version) from $node_bin"
