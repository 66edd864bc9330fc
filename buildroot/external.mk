# Every package of this BR2_EXTERNAL tree (BR2_EXTERNAL_DOGE_AGENT_PATH is this folder).
include $(sort $(wildcard $(BR2_EXTERNAL_DOGE_AGENT_PATH)/package/*/*.mk))
