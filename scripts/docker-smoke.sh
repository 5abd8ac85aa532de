#!/usr/bin/env bash
# Smoke test of a built image, offline (--network none), with the commands the README documents:
#   1. `docker run IMAGE run configs/demo.yaml` with no host files (outputs in the container's /data);
#   2. the same run with the outputs on the host: -v DIR:/data --user UID:GID, files owned by UID;
#   3. `mrv report verify /data/demo` on those outputs;
#   4. the manifest records the image's source revision (label org.opencontainers.image.revision).
#
#   scripts/docker-smoke.sh [IMAGE]            # default soilcarbon-mrv
#
# SMOKE_UID / SMOKE_GID: the --user of step 2 (default: yours; as root 1234:1234, to exercise a uid the
# image does not know). Needs docker and python3 on the host; takes a few minutes (two demo runs).
set -euo pipefail

image="${1:-soilcarbon-mrv}"
if [ "$(id -u)" -eq 0 ]; then
    uid="${SMOKE_UID:-1234}"; gid="${SMOKE_GID:-1234}"
else
    uid="${SMOKE_UID:-$(id -u)}"; gid="${SMOKE_GID:-$(id -g)}"
fi

out="$(mktemp -d "${TMPDIR:-/tmp}/mrv-docker-smoke.XXXXXX")"
trap 'rm -rf "$out"' EXIT
if [ "$(id -u)" -eq 0 ]; then
    chown "$uid:$gid" "$out"
fi

step() { printf '\n== %s\n' "$*"; }
fail() { echo "docker-smoke: FAILED: $*" >&2; exit 1; }

step "1/4 demo with no host files: docker run --rm --network none $image run configs/demo.yaml"
docker run --rm --network none "$image" run configs/demo.yaml | tail -n 4 || fail "the demo run in the container failed"

step "2/4 demo into a host directory: --user $uid:$gid -v $out:/data"
docker run --rm --network none --user "$uid:$gid" -v "$out:/data" "$image" run configs/demo.yaml | tail -n 4 \
    || fail "the demo run with a volume failed"
for f in report.json report.html manifest.json index.json; do
    [ -s "$out/demo/$f" ] || fail "$out/demo/$f is missing"
done
foreign="$(find "$out/demo" ! -uid "$uid" | head -n 3)"
[ -z "$foreign" ] || fail "files not owned by uid $uid: $foreign"

step "3/4 mrv report verify /data/demo"
docker run --rm --network none --user "$uid:$gid" -v "$out:/data" "$image" report verify /data/demo | tail -n 2 \
    || fail "report verify failed"

step "4/4 source revision in the manifest"
label="$(docker image inspect --format '{{ index .Config.Labels "org.opencontainers.image.revision" }}' "$image")"
recorded="$(python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print(m.get("source_revision") or "")' \
    "$out/demo/manifest.json")"
echo "image label: ${label:-<none>}  manifest source_revision: ${recorded:-<none>}"
if [ -n "$label" ] && [ "$label" != "$recorded" ]; then
    fail "the manifest does not record the image's revision (build with --build-arg MRV_SOURCE_REVISION=...)"
fi

echo
echo "docker-smoke: OK ($image)"
