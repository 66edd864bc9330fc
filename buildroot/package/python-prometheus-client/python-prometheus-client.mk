################################################################################
#
# python-prometheus-client
#
################################################################################

PYTHON_PROMETHEUS_CLIENT_VERSION = 0.21.1
PYTHON_PROMETHEUS_CLIENT_SOURCE = prometheus_client-$(PYTHON_PROMETHEUS_CLIENT_VERSION).tar.gz
PYTHON_PROMETHEUS_CLIENT_SITE = https://files.pythonhosted.org/packages/source/p/prometheus_client
PYTHON_PROMETHEUS_CLIENT_SETUP_TYPE = setuptools
PYTHON_PROMETHEUS_CLIENT_LICENSE = Apache-2.0
PYTHON_PROMETHEUS_CLIENT_LICENSE_FILES = LICENSE NOTICE

$(eval $(python-package))
