#!/usr/bin/env bash
# A stand-in for python:3.11-slim-bookworm where no registry image can be pulled (a
# development machine without Docker Hub): Debian bookworm's minbase from the Debian
# mirror plus this machine's CPython 3.11 (built from source: venv and ensurepip work),
# imported as an image. Usage: images/local-base.sh [TAG]
set -euo pipefail
tag=${1:-localhost/python:3.11-slim-bookworm}
engine=$(command -v podman || command -v docker)
prefix=$(python3.11 -c 'import sys; print(sys.base_prefix)')
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase \
  --include=ca-certificates,libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,zlib1g,libncursesw6,libreadline8,libgomp1,libexpat1,libuuid1 \
  bookworm "$root" >/dev/null
# CPython without the machine's own packages, its tests or its tkinter.
tar -C "$prefix" -c --exclude='lib/python3.11/site-packages/*' --exclude='lib/python3.11/test' \
  --exclude='lib/python3.11/idlelib' --exclude='lib/python3.11/tkinter' \
  bin/python3.11 lib/python3.11 lib/libpython3.11.so.1.0 | tar -C "$root/usr/local" -x
ln -s python3.11 "$root/usr/local/bin/python3"
ln -s python3.11 "$root/usr/local/bin/python"
chroot "$root" ldconfig
chroot "$root" /usr/local/bin/python3.11 -m ensurepip --default-pip >/dev/null
chroot "$root" /usr/local/bin/python3 -c 'import ssl, sqlite3, venv, ctypes, lzma, bz2'
tar -C "$root" -c . | "$engine" import --change 'CMD ["python3"]' - "$tag" >/dev/null
echo "$tag"
