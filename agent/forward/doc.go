// Package forward serves edges that cannot run the companion (routers, appliances, locked-down
// servers with only OpenSSH or dropbear): SPEC §9, GATEWAY_MODE=forward|both. The gateway dials
// each host listed in FORWARD_EDGES_FILE, logs in with its client key (CLIENT_KEY_FILE) and
// serves the tools over SSH exec and SFTP, as gateway.Edge values that the MCP tools use like
// companion edges.
//
// # The file
//
// FORWARD_EDGES_FILE (default $KEYS_DIR/forward_edges.yaml) is a YAML list:
//
//   - name: router1            # edge name, as for companion edges
//     address: 192.0.2.1:22     # host[:port], port 22 by default
//     user: admin
//     host_key: SHA256:…        # required: fingerprint, or the host's public key line
//     labels: {role: router, site: lab}
//
// Decoding is strict, every field bounded (ParseFile). The file is reloaded within about a
// second of a change (inotify on its directory plus a stat poll); an invalid file keeps the
// hosts in force. A host whose address, user and key are unchanged keeps its connection.
//
// # Connections
//
// One SSH connection per host, redialled with capped exponential backoff and full jitter,
// checked by keepalives. The host key is pinned: it is compared in the key exchange, before
// authentication, so a device that offers another key never sees the client key; the refusal
// is an EventHostKeyMismatch (for the audit log) and the edge's Status says why. Pinning
// the key line (not just its fingerprint) also asks the server for that key's algorithm.
// Calls use at most Options.MaxSessions SSH channels per host at once (OpenSSH's MaxSessions
// is 10), queueing beyond that and failing with gateway.ErrEdgeBusy when the queue is full.
//
// # Commands
//
// See BuildCommandLine: argv is single-quoted for the login user's POSIX shell, command runs
// as /bin/sh -c, cwd is a cd, env an export (names must be shell identifiers). The shell
// prints its pid first (sshd made it a session and process group leader), then execs the
// command; a timeout or a cancellation runs kill -9 -PGID from a second session, which
// kills every process of the group (a child that calls setsid itself escapes, as under the
// companion). run_as needs the companion and is refused with CodeUnsupported.
//
// # Files and inventory
//
// Upload and Download use SFTP (github.com/pkg/sftp): a temporary file beside the target,
// hashed while written, checked, fsynced, chmodded and renamed into place (see Edge.Upload).
// DeviceInfo runs ProbeScript, a read-only sh script (os-release, uname, /proc, df, ip,
// command -v), and parses it (ParseProbe); tool versions and pending updates are not probed.
// Jobs need the companion: the job calls fail with CodeUnsupported.
//
// # Agentless reverse tunnels
//
// SPEC §9's second mode: a device runs plain `ssh -N -R 22:localhost:22 -p 2222 gateway` with
// a key whose authorized_keys line is marked agentless,user="…",host_key="SHA256:…". The
// gateway's SSH server (agent/gateway, agentless.go) accepts exactly that one tcpip-forward,
// listens on nothing, refuses everything else, and hands the tunnel to
// Fleet.ServeAgentless (wired with gateway.Gateway.SetAgentlessServer). That serves it as a
// host like those of the file, whose Entry.Dial opens a forwarded-tcpip channel on the
// device's connection instead of a TCP connection: the same client key, pinning, exec, SFTP
// and probe. The gateway lists and resolves these edges (kind agentless), not the Fleet.
package forward
