#!/bin/sh
# mcp-ssh-edge post-install (deb: "configure" [old-version]; rpm: 1 install, 2 upgrade):
# generate the device key if there is none, enable the service, restart it on upgrade when it
# runs, and print how to enrol the device.
set -e

env_file=/etc/mcp-ssh-edge/edge.env
setting() { # the value of KEY in edge.env, or empty
	[ -r "$env_file" ] || return 0
	sed -n "s/^[[:space:]]*$1=[[:space:]]*//p" "$env_file" | tail -n 1
}

key_file="$(setting EDGE_KEY_FILE)"
key_file="${key_file:-/var/lib/mcp-ssh-edge/id_ed25519}"
mkdir -p /var/lib/mcp-ssh-edge
chmod 0700 /var/lib/mcp-ssh-edge
pubkey="$(EDGE_KEY_FILE="$key_file" /usr/bin/mcp-ssh-edge pubkey 2>/dev/null)" || pubkey=""

upgrade=false
case "$1" in
	configure) [ -n "$2" ] && upgrade=true ;;
	2) upgrade=true ;;
esac

if command -v systemctl >/dev/null 2>&1; then
	# Works without a running systemd too (an image being built): it only links the unit.
	systemctl enable mcp-ssh-edge.service >/dev/null 2>&1 || true
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	if [ "$upgrade" = true ]; then
		# KillMode=process: commands the edge started keep running across this restart.
		systemctl try-restart mcp-ssh-edge.service >/dev/null 2>&1 || true
	elif [ -n "$(setting EDGE_GATEWAY)" ] && [ -n "$(setting EDGE_GATEWAY_HOST_KEY)" ]; then
		systemctl start mcp-ssh-edge.service >/dev/null 2>&1 || true
	fi
fi

if [ "$upgrade" = false ]; then
	cat <<MSG

mcp-ssh-edge is installed. To enrol this device:

 1. Authorize its key on the gateway (any one of):
      mcp-ssh-gateway keys add '${pubkey:-<run: mcp-ssh-edge pubkey>}'
      the MCP tool register_edge_key with that public key line
      append that line to the gateway's authorized_keys
    Device key: $key_file

 2. Set EDGE_GATEWAY and EDGE_GATEWAY_HOST_KEY in $env_file
    (the gateway's get_agent_pubkey tool prints both lines), then:
      systemctl restart mcp-ssh-edge
      journalctl -u mcp-ssh-edge -f

MSG
fi
exit 0
