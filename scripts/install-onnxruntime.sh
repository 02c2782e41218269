#!/usr/bin/env bash
# Installs onnxruntime 1.30.0 (Linux x64) into DEST (default .deps/onnxruntime) from the
# onnxruntime-node npm package, using whatever registry npm is configured with. The tarball is
# checked against a pinned SHA-256 before anything is extracted. Idempotent.
set -euo pipefail
DEST=${1:-.deps/onnxruntime}
VERSION=1.30.0
TGZ_SHA256=6e3390d6b783e7be946fad629292799da28d0b42f84856e50d2c1b0383291e75
LIB_SHA256=ffb75a925ba05e47b235bb66e3e3911714a80b328a9c9425539feb204aa32a23
LIB="$DEST/libonnxruntime.so.1"
if [ -f "$LIB" ] && echo "$LIB_SHA256  $LIB" | sha256sum -c --status; then
  exit 0
fi
command -v npm >/dev/null || { echo "install-onnxruntime: npm is needed to fetch onnxruntime-node@$VERSION (apt-get install npm)" >&2; exit 1; }
mkdir -p "$DEST"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
( cd "$work" && npm pack --silent "onnxruntime-node@$VERSION" >/dev/null )
tgz="$work/onnxruntime-node-$VERSION.tgz"
echo "$TGZ_SHA256  $tgz" | sha256sum -c --status || { echo "install-onnxruntime: checksum mismatch for onnxruntime-node-$VERSION.tgz" >&2; exit 1; }
tar -xzf "$tgz" -C "$work" package/bin/napi-v6/linux/x64/libonnxruntime.so.1
echo "$LIB_SHA256  $work/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" | sha256sum -c --status || { echo "install-onnxruntime: checksum mismatch for libonnxruntime.so.1" >&2; exit 1; }
mv "$work/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$LIB.tmp"
mv "$LIB.tmp" "$LIB"
echo "install-onnxruntime: onnxruntime $VERSION installed at $LIB"
