################################################################################
#
# doge-agent
#
################################################################################

# Built from this checkout (the folder above the BR2_EXTERNAL tree), at its agent.__version__.
DOGE_AGENT_VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' \
	$(BR2_EXTERNAL_DOGE_AGENT_PATH)/../agent/__init__.py)
DOGE_AGENT_SITE = $(BR2_EXTERNAL_DOGE_AGENT_PATH)/..
DOGE_AGENT_SITE_METHOD = local
DOGE_AGENT_LICENSE = MIT
# the host's build products, caches and tooling stay out of the copied source: above all a
# host-built agent/_scrypt*.so must never reach the wheel in place of the cross-built one
DOGE_AGENT_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude /.git --exclude /.venv --exclude /.cache --exclude /build --exclude /dist \
	--exclude /tests --exclude /bench --exclude /buildroot --exclude /output \
	--exclude '*.egg-info' --exclude __pycache__ --exclude '*.so' --exclude '*.o'

# setup.cfg + a short setup.py that builds the C scrypt core as agent._scrypt with the target
# compiler (the infrastructure passes CC, CFLAGS, LDSHARED and the target's sysconfig data).
DOGE_AGENT_SETUP_TYPE = setuptools
# setup.py puts its own flags in extra_compile_args, after the infrastructure's CFLAGS
# (TARGET_CFLAGS): -std=c11 -O3 -Wall -Wextra -Werror -fvisibility=hidden. DOGE_AGENT_OPT is the
# one knob it reads. The NEON kernels carry their own target pragmas and are chosen at run time;
# no -mfpu flag is added here (the toolchain's own -mfpu comes from BR2_ARM_FPU_*).
DOGE_AGENT_ENV = DOGE_AGENT_OPT=-O3

# pyproject.toml's build requirements (setuptools comes with the infrastructure)
DOGE_AGENT_DEPENDENCIES = host-python-wheel
# setup.cfg install_requires, as the Buildroot packages that provide them at run time (also
# selected in Config.in; tests/test_buildroot.py fails when setup.cfg gains one not listed here)
DOGE_AGENT_DEPENDENCIES += \
	python-serial \
	python-smbus2 \
	python-cryptography

# systemd/doge-agent.sysusers says the same for systems that run systemd-sysusers
DOGE_AGENT_USERS = \
	doge-agent -1 doge-agent -1 * /var/lib/doge-agent /usr/sbin/nologin dialout,i2c doge-agent miner firmware

DOGE_AGENT_SYSTEMD_UNITS = doge-agent.service doge-agent-confirm.service doge-agent-confirm.timer

define DOGE_AGENT_INSTALL_INIT_SYSTEMD
	$(foreach u,$(DOGE_AGENT_SYSTEMD_UNITS),\
		$(INSTALL) -D -m 0644 $(@D)/systemd/$(u) \
			$(TARGET_DIR)/usr/lib/systemd/system/$(u)$(sep))
	$(INSTALL) -D -m 0644 $(@D)/systemd/doge-agent.sysusers \
		$(TARGET_DIR)/usr/lib/sysusers.d/doge-agent.conf
	$(INSTALL) -D -m 0644 $(@D)/systemd/doge-agent.tmpfiles \
		$(TARGET_DIR)/usr/lib/tmpfiles.d/doge-agent.conf
	# the port-80 drop-in is an option: shipped as an example, enabled by copying it to /etc
	$(INSTALL) -D -m 0644 $(@D)/systemd/doge-agent.service.d/port-80.conf.example \
		$(TARGET_DIR)/usr/share/doge-agent/port-80.conf
	mkdir -p $(TARGET_DIR)/usr/lib/systemd/system-preset
	printf 'enable doge-agent.service\nenable doge-agent-confirm.timer\n' \
		>$(TARGET_DIR)/usr/lib/systemd/system-preset/80-doge-agent.preset
endef

# The agent finds board profiles next to its package (agent/hardware/profile.py: PROFILES_DIR is
# <site-packages>/board/profiles), so they go into site-packages beside agent/.
define DOGE_AGENT_INSTALL_BOARD_PROFILES
	$(INSTALL) -d $(TARGET_DIR)/usr/lib/python$(PYTHON3_VERSION_MAJOR)/site-packages/board/profiles
	$(INSTALL) -m 0644 $(@D)/board/profiles/*.toml \
		$(TARGET_DIR)/usr/lib/python$(PYTHON3_VERSION_MAJOR)/site-packages/board/profiles/
endef
DOGE_AGENT_POST_INSTALL_TARGET_HOOKS += DOGE_AGENT_INSTALL_BOARD_PROFILES

$(eval $(python-package))
