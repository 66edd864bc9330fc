#!/usr/bin/env bash
# Buildroot post-image script for the L3+ image (BR2_ROOTFS_POST_IMAGE_SCRIPT): compiles the
# two-slot boot script and lays out sdcard.img with genimage (board/l3plus/genimage.cfg).
# Buildroot passes the images directory as $1 and sets BINARIES_DIR, BUILD_DIR, HOST_DIR.
set -euo pipefail

BOARD_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BINARIES_DIR=${BINARIES_DIR:-${1:?usage: post-image.sh IMAGES_DIR}}
HOST_DIR=${HOST_DIR:?HOST_DIR is set by Buildroot}
BUILD_DIR=${BUILD_DIR:?BUILD_DIR is set by Buildroot}
GENIMAGE_CFG=$BOARD_DIR/genimage.cfg
GENIMAGE_TMP=$BUILD_DIR/genimage.tmp

"$HOST_DIR/bin/mkimage" -A arm -O linux -T script -C none -n "doge-agent L3+ boot" \
    -d "$BOARD_DIR/boot.cmd" "$BINARIES_DIR/boot.scr"

# genimage wants a root path even though every image here comes from BINARIES_DIR or is empty
ROOTPATH_TMP=$(mktemp -d)
trap 'rm -rf "$ROOTPATH_TMP"' EXIT
rm -rf "$GENIMAGE_TMP"

"$HOST_DIR/bin/genimage" \
    --rootpath "$ROOTPATH_TMP" \
    --tmppath "$GENIMAGE_TMP" \
    --inputpath "$BINARIES_DIR" \
    --outputpath "$BINARIES_DIR" \
    --config "$GENIMAGE_CFG"

echo "post-image: $BINARIES_DIR/sdcard.img (boot, rootfs-a, rootfs-b, data)"
