# doge-agent L3+ boot script (compiled to boot.scr by post-image.sh): boots rootfs slot A
# (partition 2) or B (partition 3) as the environment's boot_slot says. While
# upgrade_available=1, U-Boot's bootcount (CONFIG_BOOTCOUNT_ENV) counts boots; past bootlimit
# U-Boot runs altbootcmd instead, which switches to the other slot. doge-agent-confirm.service
# sets upgrade_available=0 and bootcount=0 once the new slot has run healthy.

# first boot of a fresh card: slot A, and the fallback U-Boot runs once bootcount > bootlimit
# (saved once, so later boots write the environment only while an update is unconfirmed)
if test -z "${boot_slot}"; then
	setenv boot_slot A
	setenv bootlimit 3
	setenv altbootcmd 'if test "${boot_slot}" = "A"; then setenv boot_slot B; else setenv boot_slot A; fi; setenv upgrade_available 0; setenv bootcount 0; saveenv; run bootcmd'
	saveenv
fi
if test "${boot_slot}" = "B"; then setenv rootpart 3; else setenv rootpart 2; fi

setenv bootargs "console=ttyS0,115200n8 root=/dev/mmcblk0p${rootpart} rootfstype=ext4 rootwait rw doge.slot=${boot_slot}"
load mmc 0:${rootpart} ${loadaddr} /boot/zImage
load mmc 0:${rootpart} ${fdtaddr} /boot/am335x-boneblack.dtb
bootz ${loadaddr} - ${fdtaddr}
