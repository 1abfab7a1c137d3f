#!/usr/bin/env bash
# Builds stand-ins for the two base images the rendered Containerfile names, in the podman
# storage that tests/image.rs uses, so that the Containerfile builds here unmodified: these
# machines reach Debian's archive, crates.io and PyPI, but no container registry.
#
#   python:3.11-slim-bookworm  Debian 12 (debootstrap) with Debian's python3.11, its venv
#                              module and its shared libpython with the `libpython3.11.so` the
#                              linker looks for (the official image has both: the build stage
#                              links deployctl-server against the image's CPython), the Python
#                              at /usr/local/bin/python3 where the official image has it, and
#                              this machine's CA bundle (the network here may re-sign TLS).
#   rust:1-slim-bookworm       only what the Containerfile copies from it: this machine's Rust
#                              toolchain at /usr/local/rustup, cargo and rustc at
#                              /usr/local/cargo/bin (the official image's layout).
#
# Usage: STAND_IN_BUILD_FLAGS="..." stand-in-bases.sh WORKDIR PODMAN [PODMAN_GLOBAL_FLAGS...]
# Idempotent: an image already in the storage is kept.
set -euo pipefail
work=$1; shift
podman=("$@")

python_image=docker.io/library/python:3.11-slim-bookworm
rust_image=docker.io/library/rust:1-slim-bookworm
base_image=localhost/deployctl-test/debian:bookworm
mkdir -p "$work"

# The flags the test gives podman build (tests/image.rs says why: the ulimits).
read -r -a build_flags <<<"${STAND_IN_BUILD_FLAGS:-}"
build=("${podman[@]}" build --pull=never --network host --format docker "${build_flags[@]}")

if ! "${podman[@]}" image exists "$base_image"; then
  rm -rf "$work/rootfs"
  echo "stand-in-bases: debootstrap bookworm" >&2
  debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  tar -C "$work/rootfs" -c . | "${podman[@]}" import - "$base_image" >/dev/null
  rm -rf "$work/rootfs"
fi

if ! "${podman[@]}" image exists "$python_image"; then
  echo "stand-in-bases: $python_image" >&2
  ctx=$work/python; rm -rf "$ctx"; mkdir -p "$ctx"
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/"
  cat >"$ctx/Containerfile" <<CONTAINERFILE
FROM $base_image
RUN apt-get update \\
 && apt-get install -y --no-install-recommends python3 python3-venv libpython3.11-dev ca-certificates \\
 && rm -rf /var/lib/apt/lists/* \\
 && ln -s /usr/bin/python3 /usr/local/bin/python3
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
CONTAINERFILE
  "${build[@]}" -t "$python_image" "$ctx" >"$work/python.log" 2>&1 || { tail -20 "$work/python.log" >&2; exit 1; }
  rm -rf "$ctx"
fi

if ! "${podman[@]}" image exists "$rust_image"; then
  echo "stand-in-bases: $rust_image" >&2
  toolchain=$(rustc --print sysroot)
  ctx=$work/rust; rm -rf "$ctx"; mkdir -p "$ctx/bin"
  # The toolchain without its 800 MB of HTML documentation.
  cp -a "$toolchain" "$ctx/toolchain"
  rm -rf "$ctx/toolchain/share/doc"
  for t in cargo rustc; do
    ln -s "/usr/local/rustup/toolchains/stable/bin/$t" "$ctx/bin/$t"
  done
  cat >"$ctx/Containerfile" <<CONTAINERFILE
FROM scratch
COPY toolchain /usr/local/rustup/toolchains/stable
COPY bin /usr/local/cargo/bin
CONTAINERFILE
  "${build[@]}" -t "$rust_image" "$ctx" >"$work/rust.log" 2>&1 || { tail -20 "$work/rust.log" >&2; exit 1; }
  rm -rf "$ctx"
fi
