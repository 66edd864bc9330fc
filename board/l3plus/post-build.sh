#!/usr/bin/env bash
# Buildroot post-build script for the L3+ image (BR2_ROOTFS_POST_BUILD_SCRIPT); $1 is the
# target directory. Mounts the data partition at the agent's state_dir and makes sure the
# overlay's scripts are executable.
set -euo pipefail

TARGET_DIR=${1:?usage: post-build.sh TARGET_DIR}

# the data partition (genimage.cfg: label doge-data) holds state_dir: counters, tuning profiles,
# the secrets key and the rotated logs survive an update of either rootfs slot
fstab=$TARGET_DIR/etc/fstab
touch "$fstab"
if ! grep -q '^LABEL=doge-data[[:space:]]' "$fstab"; then
    printf '%s\n' 'LABEL=doge-data /var/lib/doge-agent ext4 defaults,noatime,nosuid,nodev,nofail 0 2' >>"$fstab"
fi
mkdir -p "$TARGET_DIR/var/lib/doge-agent"

chmod 0755 "$TARGET_DIR/usr/libexec/doge-agent/confirm-slot"
