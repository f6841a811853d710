#!/bin/sh
# mcp-ssh-edge post-remove (deb: "remove", "purge", "upgrade", …; rpm: 0 erase, 1 upgrade).
# Purge deletes the device key, the state and the configuration; plain removal keeps them so
# that a reinstall comes back with the same identity.
set -e
case "$1" in
	purge)
		rm -rf /var/lib/mcp-ssh-edge /etc/mcp-ssh-edge
		;;
esac
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
