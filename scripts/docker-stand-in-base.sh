#!/usr/bin/env bash
# Build a stand-in for the python:3.11-slim-bookworm base image from Debian packages only, for machines
# that reach Debian's archive but not a container registry. Python 3.11, venv and ca-certificates come
# from Debian bookworm (debootstrap minbase), so the image runs the Dockerfile unchanged:
#
#   sudo scripts/docker-stand-in-base.sh                 # -> image local/python:3.11-slim-bookworm
#   docker build --build-arg BASE_IMAGE=local/python:3.11-slim-bookworm -t soilcarbon-mrv .
#
# Environment: DEBIAN_MIRROR (default: the first bookworm URI in this machine's apt sources, else
# debootstrap's default), STAND_IN_TAG (default local/python:3.11-slim-bookworm), STAND_IN_ROOTFS
# (scratch directory, default a fresh mktemp -d; removed afterwards). Needs root, debootstrap and a
# running Docker engine.
set -euo pipefail

tag="${STAND_IN_TAG:-local/python:3.11-slim-bookworm}"

if [ "$(id -u)" -ne 0 ]; then
    echo "docker-stand-in-base: debootstrap needs root; run it with sudo." >&2
    exit 1
fi
for tool in debootstrap docker tar; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "docker-stand-in-base: '$tool' is missing; install it (apt-get install debootstrap docker.io)." >&2
        exit 1
    fi
done

mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    # deb822 sources (URIs: ...) first, then one-line sources (deb URI bookworm ...); skip security/updates.
    mirror="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)"
fi
if [ -z "$mirror" ]; then
    mirror="$(grep -hs '^deb ' /etc/apt/sources.list | awk '$3 == "bookworm" {print $2}' | head -n1 || true)"
fi

rootfs="${STAND_IN_ROOTFS:-$(mktemp -d /tmp/stand-in-rootfs.XXXXXX)}"
trap 'rm -rf "$rootfs"' EXIT

# The packages python:3.11-slim-bookworm ships beyond minbase: CA certificates, netbase, tzdata.
debootstrap --variant=minbase \
    --include=python3,python3-venv,ca-certificates,netbase,tzdata \
    bookworm "$rootfs" ${mirror:+"$mirror"}

# Same trimming as the official slim images: no apt lists or caches in the image.
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log

tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$tag"
docker image ls "$tag"
