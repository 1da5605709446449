#!/bin/sh
# The image's entrypoint: `crm-esp-sync ARGS`, after `crm-esp-sync db upgrade` when MIGRATE_ON_START=1.
# (Not a CRM_ESP_SYNC_* variable: the daemon refuses settings it does not know.)
set -eu
if [ "${MIGRATE_ON_START:-0}" = "1" ]; then
    crm-esp-sync db upgrade
fi
exec crm-esp-sync "$@"
