#!/usr/bin/env bash
# package-test.sh: exercises the edge packages of dist/ (from `make package`) on this machine,
# as root. The deb: install, check files, modes, the generated key and the enrolment message;
# edit the conffile; upgrade to a rebuilt package (`make package` with a newer PKG_VERSION) and
# check the edit and the key survived; remove (keys and config stay); purge (all gone);
# `systemd-analyze verify` on the unit where available. The rpm: open it and check its file
# list, modes, config flags, scripts and dependencies.
# It installs and removes the package mcp-ssh-edge: run it on a test machine, not on an edge.
set -euo pipefail

cd "$(dirname "$0")/../.."
if [[ "$(id -u)" != 0 ]]; then
	echo "package-test: must run as root (it installs the deb with dpkg)" >&2
	exit 1
fi
if dpkg-query -W -f='${Status}' mcp-ssh-edge 2>/dev/null | grep -q 'install ok installed'; then
	echo "package-test: mcp-ssh-edge is already installed here; refusing to touch a real installation" >&2
	exit 1
fi

arch="$(dpkg --print-architecture)"
tmp="$(mktemp -d)"
cleanup() {
	dpkg -P mcp-ssh-edge >/dev/null 2>&1 || true
	rm -rf "${tmp}"
}
trap cleanup EXIT

fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*" >&2; fail=1; }
expect() { # expect WHAT GOT WANT
	if [[ "$2" == "$3" ]]; then ok "$1: $2"; else bad "$1: got '$2', want '$3'"; fi
}
mode_of() { stat -c '%a %U:%G' "$1" 2>/dev/null || echo missing; }

debs=(dist/mcp-ssh-edge_*_"${arch}".deb)
[[ -f "${debs[0]}" ]] || { echo "package-test: no dist/mcp-ssh-edge_*_${arch}.deb: run make package" >&2; exit 1; }
cp "${debs[0]}" "${tmp}/old.deb"
old_version="$(dpkg-deb -f "${tmp}/old.deb" Version)"
pkg_version="$(sed -n 's/.*"version":"\([^"]*\)".*/\1/p' dist/metadata.json)"

echo "== rebuild with a newer version (the upgrade target)"
new_pkg_version="${pkg_version}.1"
PKG_VERSION="${new_pkg_version}" ${MAKE:-make} --no-print-directory package >"${tmp}/rebuild.log" 2>&1 ||
	{ cat "${tmp}/rebuild.log" >&2; exit 1; }
debs=(dist/mcp-ssh-edge_*_"${arch}".deb)
cp "${debs[0]}" "${tmp}/new.deb"
new_version="$(dpkg-deb -f "${tmp}/new.deb" Version)"
if dpkg --compare-versions "${new_version}" gt "${old_version}"; then
	ok "rebuilt ${new_version} > ${old_version}"
else
	bad "rebuilt version ${new_version} is not newer than ${old_version}"
fi

echo "== deb: install ${old_version}"
dpkg -i "${tmp}/old.deb" >"${tmp}/install.log" 2>&1 || { cat "${tmp}/install.log" >&2; exit 1; }
expect binary "$(mode_of /usr/bin/mcp-ssh-edge)" "755 root:root"
expect unit "$(mode_of /usr/lib/systemd/system/mcp-ssh-edge.service)" "644 root:root"
expect conffile "$(mode_of /etc/mcp-ssh-edge/edge.env)" "640 root:root"
expect state-dir "$(mode_of /var/lib/mcp-ssh-edge)" "700 root:root"
expect device-key "$(mode_of /var/lib/mcp-ssh-edge/id_ed25519)" "600 root:root"
expect version "$(/usr/bin/mcp-ssh-edge --version)" "mcp-ssh-edge ${old_version//\~/-}"
if dpkg-query -W -f='${Conffiles}' mcp-ssh-edge | grep -q '^ /etc/mcp-ssh-edge/edge.env '; then
	ok "edge.env is a dpkg conffile"
else
	bad "edge.env is not a conffile: $(dpkg-query -W -f='${Conffiles}' mcp-ssh-edge)"
fi
pubkey="$(EDGE_KEY_FILE=/var/lib/mcp-ssh-edge/id_ed25519 /usr/bin/mcp-ssh-edge pubkey)"
if grep -qF "${pubkey}" "${tmp}/install.log" && grep -q 'To enrol this device' "${tmp}/install.log" &&
	grep -q 'EDGE_GATEWAY_HOST_KEY' "${tmp}/install.log"; then
	ok "post-install printed the device's public key and how to enrol it"
else
	bad "post-install output lacks the public key or the enrolment steps:"; cat "${tmp}/install.log" >&2
fi
if command -v ldd >/dev/null; then
	linked="$(ldd /usr/bin/mcp-ssh-edge 2>&1 || true)"
	if [[ "${linked}" == *"not a dynamic executable"* ]]; then ok "binary is static"; else bad "binary is dynamically linked: ${linked}"; fi
fi

if command -v systemd-analyze >/dev/null; then
	if out="$(systemd-analyze verify /usr/lib/systemd/system/mcp-ssh-edge.service 2>&1)" && [[ -z "${out}" ]]; then
		ok "systemd-analyze verify: clean"
	else
		bad "systemd-analyze verify: ${out}"
	fi
	props="$(systemd-analyze cat-config /usr/lib/systemd/system/mcp-ssh-edge.service 2>/dev/null || cat /usr/lib/systemd/system/mcp-ssh-edge.service)"
	for want in Restart=on-failure After=network-online.target KillMode=process EnvironmentFile=/etc/mcp-ssh-edge/edge.env; do
		if grep -qx "${want}" <<<"${props}"; then ok "unit has ${want}"; else bad "unit lacks ${want}"; fi
	done
	for forbidden in ProtectSystem= NoNewPrivileges=yes RestrictSUIDSGID=yes ProtectKernelModules=yes; do
		if grep -q "^${forbidden}" <<<"${props}"; then bad "unit sets ${forbidden} (would block OS updates)"; fi
	done
else
	echo "skip systemd-analyze: not installed"
fi

echo "== deb: edit the conffile, upgrade to ${new_version}"
echo "EDGE_NAME=edited-by-package-test" >>/etc/mcp-ssh-edge/edge.env
key_before="$(sha256sum /var/lib/mcp-ssh-edge/id_ed25519)"
dpkg -i "${tmp}/new.deb" </dev/null >"${tmp}/upgrade.log" 2>&1 || { cat "${tmp}/upgrade.log" >&2; exit 1; }
expect upgraded-version "$(dpkg-query -W -f='${Version}' mcp-ssh-edge)" "${new_version}"
if grep -qx 'EDGE_NAME=edited-by-package-test' /etc/mcp-ssh-edge/edge.env; then ok "conffile edit survived the upgrade"; else bad "conffile edit lost on upgrade"; fi
[[ ! -e /etc/mcp-ssh-edge/edge.env.dpkg-new ]] || bad "upgrade left edge.env.dpkg-new (the conffile changed between builds?)"
expect key-kept "$(sha256sum /var/lib/mcp-ssh-edge/id_ed25519)" "${key_before}"
if grep -q 'To enrol this device' "${tmp}/upgrade.log"; then bad "upgrade printed the first-install enrolment text again"; else ok "upgrade is quiet"; fi

echo "== deb: remove (keys and config stay)"
dpkg -r mcp-ssh-edge >"${tmp}/remove.log" 2>&1 || { cat "${tmp}/remove.log" >&2; exit 1; }
expect removed-binary "$(mode_of /usr/bin/mcp-ssh-edge)" missing
expect removed-unit "$(mode_of /usr/lib/systemd/system/mcp-ssh-edge.service)" missing
expect kept-conffile "$(mode_of /etc/mcp-ssh-edge/edge.env)" "640 root:root"
expect kept-key "$(sha256sum /var/lib/mcp-ssh-edge/id_ed25519 2>/dev/null)" "${key_before}"
expect status-after-remove "$(dpkg-query -W -f='${Status}' mcp-ssh-edge 2>/dev/null)" "deinstall ok config-files"

echo "== deb: purge (all gone)"
dpkg -P mcp-ssh-edge >"${tmp}/purge.log" 2>&1 || { cat "${tmp}/purge.log" >&2; exit 1; }
expect purged-config "$(mode_of /etc/mcp-ssh-edge)" missing
expect purged-state "$(mode_of /var/lib/mcp-ssh-edge)" missing

echo "== rpm: open and check"
case "${arch}" in amd64) rpm_arch=x86_64 ;; arm64) rpm_arch=aarch64 ;; *) rpm_arch="${arch}" ;; esac
rpms=(dist/mcp-ssh-edge-*."${rpm_arch}".rpm)
if ! command -v rpm >/dev/null; then
	bad "rpm is not installed (apt-get install rpm): cannot check ${rpms[0]}"
elif [[ ! -f "${rpms[0]}" ]]; then
	bad "no dist/mcp-ssh-edge-*.${rpm_arch}.rpm"
else
	r="${rpms[0]}"
	files="$(rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]' "${r}" 2>/dev/null | sort -k4)"
	want="$(printf '%s\n' \
		'drwxr-xr-x root:root  /etc/mcp-ssh-edge' \
		'-rw-r----- root:root cn /etc/mcp-ssh-edge/edge.env' \
		'-rwxr-xr-x root:root  /usr/bin/mcp-ssh-edge' \
		'-rw-r--r-- root:root  /usr/lib/systemd/system/mcp-ssh-edge.service' \
		'drwx------ root:root  /var/lib/mcp-ssh-edge' | sort -k4)"
	expect rpm-files "${files}" "${want}"
	scripts="$(rpm -qp --scripts "${r}" 2>/dev/null)"
	for s in 'postinstall scriptlet' 'preuninstall scriptlet' 'postuninstall scriptlet'; do
		if grep -q "${s}" <<<"${scripts}"; then ok "rpm has a ${s}"; else bad "rpm lacks a ${s}"; fi
	done
	if grep -q 'mcp-ssh-edge pubkey' <<<"${scripts}" && grep -q 'systemctl stop mcp-ssh-edge' <<<"${scripts}"; then
		ok "rpm scripts generate the key and stop the service on erase"
	else
		bad "rpm scripts are not ours:"; echo "${scripts}" >&2
	fi
	requires="$(rpm -qp --requires "${r}" 2>/dev/null | grep -v '^rpmlib(' || true)"
	if grep -q 'libc\|\.so' <<<"${requires}"; then bad "rpm requires shared libraries: ${requires}"; else ok "rpm needs no shared library"; fi
	expect rpm-arch "$(rpm -qp --qf '%{ARCH}' "${r}" 2>/dev/null)" "${rpm_arch}"
fi

echo "== edge binary size per architecture (static, stripped)"
for f in dist/edge_linux_*/mcp-ssh-edge; do
	printf '  %-36s %9d bytes (%s MiB)\n' "${f}" "$(stat -c %s "${f}")" "$(awk -v s="$(stat -c %s "${f}")" 'BEGIN{printf "%.2f", s/1048576}')"
done
amd64_size="$(stat -c %s dist/edge_linux_amd64_v1/mcp-ssh-edge)"
if ((amd64_size <= 8 * 1024 * 1024)); then ok "amd64 edge within the 8 MiB budget"; else bad "amd64 edge is ${amd64_size} bytes, over 8 MiB"; fi

if [[ "${fail}" != 0 ]]; then
	echo "package-test: FAILED" >&2
	exit 1
fi
echo "package-test: passed"
