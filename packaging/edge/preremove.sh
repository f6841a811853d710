#!/bin/sh
# mcp-ssh-edge pre-remove (deb: "remove" or "upgrade"; rpm: 0 erase, 1 upgrade): on removal,
# stop and disable the service. Keys, state and edge.env stay (deb: `apt purge` removes them).
set -e
case "$1" in
	remove|0)
		if [ -d /run/systemd/system ]; then
			systemctl stop mcp-ssh-edge.service >/dev/null 2>&1 || true
		fi
		systemctl disable mcp-ssh-edge.service >/dev/null 2>&1 || true
		;;
esac
exit 0
