#!/usr/bin/env bash
# image-test.sh IMAGE: checks the gateway image built by `make image`: its configuration (user,
# ports, volumes, healthcheck, entrypoint, environment), its filesystem (only the binary and the
# two volume directories, owned by the non-root uid), and runs its binary from the mounted
# image: --version, the gateway itself with the image's environment, and the HEALTHCHECK
# command against it. `podman run` cannot start containers on every machine (rlimits in VMs),
# so the image is mounted (`podman image mount`) instead of run.
set -euo pipefail

image="${1:?usage: image-test.sh IMAGE}"
ctr="${CONTAINER:-$(command -v podman || true)}"
if [[ "$(basename "${ctr}")" != podman ]]; then
	echo "image-test: needs podman (to mount the image); found '${ctr}'" >&2
	exit 1
fi

fail=0
check() { # check WHAT GOT WANT
	if [[ "$2" == "$3" ]]; then
		echo "ok   $1: $2"
	else
		echo "FAIL $1: got '$2', want '$3'" >&2
		fail=1
	fi
}
inspect() { podman image inspect "${image}" --format "$1"; }

check user "$(inspect '{{.Config.User}}')" "65532:65532"
check entrypoint "$(inspect '{{json .Config.Entrypoint}}')" '["/usr/bin/mcp-ssh-gateway"]'
check ports "$(inspect '{{json .Config.ExposedPorts}}')" '{"2222/tcp":{},"3333/tcp":{}}'
check volumes "$(inspect '{{json .Config.Volumes}}')" '{"/keys":{},"/var/lib/mcp-ssh-gateway":{}}'
check healthcheck "$(inspect '{{json .Config.Healthcheck.Test}}')" '["CMD","/usr/bin/mcp-ssh-gateway","healthcheck"]'
env_json="$(inspect '{{json .Config.Env}}')"
for want in MCP_TRANSPORT=http MCP_HTTP_ADDR=:3333 SSH_PORT=2222 KEYS_DIR=/keys STATE_DIR=/var/lib/mcp-ssh-gateway; do
	if [[ "${env_json}" == *"\"${want}\""* ]]; then echo "ok   env ${want}"; else echo "FAIL env ${want} missing: ${env_json}" >&2; fail=1; fi
done

mnt="$(podman image mount "${image}")"
tmp="$(mktemp -d)"
gw_pid=""
cleanup() {
	[[ -n "${gw_pid}" ]] && kill "${gw_pid}" 2>/dev/null && wait "${gw_pid}" 2>/dev/null || true
	podman image unmount "${image}" >/dev/null 2>&1 || true
	rm -rf "${tmp}"
}
trap cleanup EXIT

# The filesystem: exactly these entries, no shell, no package manager.
files="$(cd "${mnt}" && find . -mindepth 1 -printf '%M %U:%G %p\n' | sort -k3)"
want_files="$(printf '%s\n' \
	'drwx------ 65532:65532 ./keys' \
	'drwxr-xr-x 0:0 ./usr' \
	'drwxr-xr-x 0:0 ./usr/bin' \
	'-rwxr-xr-x 0:0 ./usr/bin/mcp-ssh-gateway' \
	'drwxr-xr-x 0:0 ./var' \
	'drwxr-xr-x 0:0 ./var/lib' \
	'drwx------ 65532:65532 ./var/lib/mcp-ssh-gateway')"
check filesystem "${files}" "${want_files}"

bin="${mnt}/usr/bin/mcp-ssh-gateway"
if go version -m "${bin}" 2>/dev/null | grep -q 'CGO_ENABLED=0'; then
	echo "ok   static: built with CGO_ENABLED=0"
else
	echo "FAIL static: the binary was not built with CGO_ENABLED=0" >&2
	fail=1
fi
version="$(env -i "${bin}" --version)"
check version-runs "${version%% *}" mcp-ssh-gateway

# Run the image's binary with the image's environment (volumes redirected to a temp dir),
# then the HEALTHCHECK command against it.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || shuf -i 20000-60000 -n 1; }
http_port="$(free_port)"
ssh_port="$(free_port)"
env_args=()
while IFS= read -r kv; do env_args+=("${kv}"); done < <(inspect '{{range .Config.Env}}{{println .}}{{end}}' | sed '/^$/d')
env -i "${env_args[@]}" KEYS_DIR="${tmp}/keys" STATE_DIR="${tmp}/state" SSH_BIND=127.0.0.1 SSH_PORT="${ssh_port}" \
	MCP_HTTP_ADDR="127.0.0.1:${http_port}" MCP_HTTP_TOKEN=image-test "${bin}" 2>"${tmp}/gateway.log" &
gw_pid=$!
healthy=false
for _ in $(seq 1 50); do
	if env -i MCP_HTTP_ADDR="127.0.0.1:${http_port}" "${bin}" healthcheck 2>/dev/null; then healthy=true; break; fi
	sleep 0.2
done
check healthcheck-live "${healthy}" true
kill "${gw_pid}"
wait "${gw_pid}" && rc=0 || rc=$?
gw_pid=""
check gateway-sigterm-exit "${rc}" 0
if env -i MCP_HTTP_ADDR="127.0.0.1:${http_port}" "${bin}" healthcheck 2>/dev/null; then
	check healthcheck-stopped exit0 exit1
else
	check healthcheck-stopped exit1 exit1
fi
if [[ -f "${tmp}/keys/host_ed25519" ]]; then echo "ok   host key generated in KEYS_DIR"; else echo "FAIL no host key in KEYS_DIR" >&2; fail=1; fi

if [[ "${fail}" != 0 ]]; then
	echo "image-test: FAILED; gateway log:" >&2
	cat "${tmp}/gateway.log" >&2 || true
	exit 1
fi
echo "image-test: ${image} passed"
