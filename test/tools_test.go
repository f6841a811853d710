package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// TestToolsList checks that the six core tools exist with their annotations, a description,
// and input and output schemas of type object.
func TestToolsList(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	g := f.startGateway(t, nil)
	type hints struct{ readOnly, destructive, idempotent, openWorld bool }
	for _, tc := range []struct {
		name string
		want hints
	}{
		{"get_status", hints{true, false, true, false}},
		{"register_edge_key", hints{false, false, true, false}},
		{"get_agent_pubkey", hints{true, false, true, false}},
		{"run_command", hints{false, true, false, true}},
		{"upload_file", hints{false, true, false, true}},
		{"get_device_info", hints{true, false, true, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tool, ok := g.tools[tc.name]
			if !ok {
				t.Fatalf("tool %s not listed", tc.name)
			}
			if strings.TrimSpace(tool.Description) == "" {
				t.Errorf("no description")
			}
			if tool.InputSchema.Type != "object" || tool.OutputSchema.Type != "object" {
				t.Errorf("input schema type %q, output schema type %q; want object, object", tool.InputSchema.Type, tool.OutputSchema.Type)
			}
			a := tool.Annotations
			for _, h := range []struct {
				name string
				got  *bool
				want bool
			}{
				{"readOnlyHint", a.ReadOnlyHint, tc.want.readOnly},
				{"destructiveHint", a.DestructiveHint, tc.want.destructive},
				{"idempotentHint", a.IdempotentHint, tc.want.idempotent},
				{"openWorldHint", a.OpenWorldHint, tc.want.openWorld},
			} {
				if h.got == nil {
					t.Errorf("%s not set", h.name)
				} else if *h.got != h.want {
					t.Errorf("%s = %v, want %v", h.name, *h.got, h.want)
				}
			}
		})
	}
}

func isRFC3339UTC(s string) bool {
	tm, err := time.Parse(time.RFC3339, s)
	return err == nil && strings.HasSuffix(s, "Z") && !tm.IsZero()
}

// TestStatusPubkeyAndRegistration covers get_status (fields, an edge without labels,
// pagination over known-but-offline edges), get_agent_pubkey and register_edge_key.
func TestStatusPubkeyAndRegistration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	labelled := f.newEdgeKey(t)
	bare := f.newEdgeKey(t)
	f.authorize(t, labelled, "alpha", "role=web,site=lab")
	f.authorize(t, bare, "", "")
	var offline []edgeKey
	for i := range 3 {
		k := f.newEdgeKey(t)
		f.authorize(t, k, "offline-"+string(rune('a'+i)), "")
		offline = append(offline, k)
	}
	const token = "e2e-provision-token-4711"
	g := f.startGateway(t, map[string]string{"PROVISION_TOKEN": token})
	f.startEdge(t, labelled, g.addr, map[string]string{"EDGE_NAME": "ignored-name", "EDGE_LABELS": "zone=a"})
	f.startEdge(t, bare, g.addr, map[string]string{"EDGE_NAME": "Bare-Edge"})
	// Idle: the inventory pull the gateway makes at connect has finished (in_flight 0).
	idle := func(e edgeStatus) bool { return e.InFlight != nil && *e.InFlight == 0 }
	el := g.waitConnected(t, labelled.Fingerprint, idle)
	eb := g.waitConnected(t, bare.Fingerprint, idle)

	t.Run("get_status fields", func(t *testing.T) {
		r := g.call(t, "get_status", map[string]any{})
		st := decode[statusOut](t, r.Structured)
		gw := st.Gateway
		if gw.Mode != "reverse" || gw.SSHAddr != g.addr || gw.HostKeyFingerprint != f.HostKeyFP || gw.Version == "" {
			t.Errorf("gateway = %+v; want mode reverse, ssh_addr %s, host_key_fingerprint %s, a version", gw, g.addr, f.HostKeyFP)
		}
		// SSH_PORT=0: the port the kernel picked is the one get_status reports and the one logged.
		if logged := loggedAddr(g.Stderr(), "ssh listening"); logged != gw.SSHAddr {
			t.Errorf(`ssh_addr = %q, but the gateway logged {"msg":"ssh listening","addr":%q}`, gw.SSHAddr, logged)
		}
		if gw.PublicAddr != g.addr {
			t.Errorf("public_addr = %q, want %q (SSH_BIND:actual port when PUBLIC_ADDR is unset)", gw.PublicAddr, g.addr)
		}
		if gw.UptimeSeconds == nil || *gw.UptimeSeconds < 0 || gw.ProvisioningEnabled == nil || !*gw.ProvisioningEnabled {
			t.Errorf("uptime_seconds %v, provisioning_enabled %v; want >= 0 and true", gw.UptimeSeconds, gw.ProvisioningEnabled)
		}
		if st.Totals.Known != 5 || st.Totals.Connected != 2 {
			t.Errorf("totals = %+v, want known 5, connected 2", st.Totals)
		}
		if len(st.Edges) != 5 || st.NextCursor != "" {
			t.Errorf("%d edges, next_cursor %q; want all 5 on one page", len(st.Edges), st.NextCursor)
		}
		if el.Name != "alpha" || !mapsEqual(el.Labels, map[string]string{"role": "web", "site": "lab"}) ||
			!mapsEqual(el.ReportedLabels, map[string]string{"zone": "a"}) {
			t.Errorf("labelled edge = %+v; want name alpha (bound), labels role=web,site=lab, reported_labels zone=a", el)
		}
		if eb.Name != "bare-edge" {
			t.Errorf("bare edge name = %q, want %q (the name it asked for, case folded)", eb.Name, "bare-edge")
		}
		for _, e := range []edgeStatus{el, eb} {
			if !strings.HasPrefix(e.RemoteAddr, "127.0.0.1:") || !isRFC3339UTC(e.ConnectedSince) || !isRFC3339UTC(e.LastSeen) ||
				e.EdgeVersion == "" || e.OS != "linux" || e.Arch == "" || e.InFlight == nil || *e.InFlight != 0 {
				t.Errorf("connected edge %s = %+v; want remote_addr 127.0.0.1:…, RFC 3339 UTC times, edge_version, os linux, arch, in_flight 0", e.Name, e)
			}
		}
		// An edge with no labels: {} on the wire, never null.
		for _, raw := range r.Structured["edges"].([]any) {
			e := raw.(map[string]any)
			if e["fingerprint"] != bare.Fingerprint {
				continue
			}
			for _, field := range []string{"labels", "reported_labels"} {
				m, ok := e[field].(map[string]any)
				if !ok || len(m) != 0 {
					t.Errorf("edge without labels: %s = %#v, want {}", field, e[field])
				}
			}
		}
	})

	t.Run("pagination", func(t *testing.T) {
		seen := map[string]edgeStatus{}
		cursor := ""
		pages := 0
		for pages < 10 {
			args := map[string]any{"limit": 2}
			if cursor != "" {
				args["cursor"] = cursor
			}
			st := g.status(t, args)
			pages++
			if len(st.Edges) > 2 {
				t.Fatalf("page %d has %d edges, limit was 2", pages, len(st.Edges))
			}
			for _, e := range st.Edges {
				if _, dup := seen[e.Fingerprint]; dup {
					t.Errorf("edge %s on two pages", e.Fingerprint)
				}
				seen[e.Fingerprint] = e
			}
			if st.Totals.Known != 5 || st.Totals.Connected != 2 {
				t.Errorf("page %d totals = %+v, want known 5, connected 2", pages, st.Totals)
			}
			if cursor = st.NextCursor; cursor == "" {
				break
			}
		}
		if pages != 3 || len(seen) != 5 {
			t.Errorf("%d pages, %d edges; want 3 pages covering 5 edges", pages, len(seen))
		}
		for i, k := range offline {
			e, ok := seen[k.Fingerprint]
			want := "offline-" + string(rune('a'+i))
			if !ok || e.Connected || e.Name != want || e.Labels == nil || e.ReportedLabels == nil {
				t.Errorf("offline edge %s = %+v (listed %v); want name %s, connected false, labels {}", k.Fingerprint, e, ok, want)
			}
		}
		conn := g.status(t, map[string]any{"connected_only": true})
		var fps []string
		for _, e := range conn.Edges {
			fps = append(fps, e.Fingerprint)
		}
		slices.Sort(fps)
		want := []string{labelled.Fingerprint, bare.Fingerprint}
		slices.Sort(want)
		if !slices.Equal(fps, want) {
			t.Errorf("connected_only edges = %v, want %v", fps, want)
		}
		r := g.call(t, "get_status", map[string]any{"cursor": "not-a-cursor!"})
		if !r.IsError {
			t.Errorf("get_status with a garbage cursor: isError false, want a clear error")
		}
	})

	t.Run("get_agent_pubkey", func(t *testing.T) {
		r := g.call(t, "get_agent_pubkey", map[string]any{})
		type pubkeyOut struct {
			PublicKey   string `json:"public_key"`
			Fingerprint string `json:"fingerprint"`
			EdgeConfig  string `json:"edge_config"`
		}
		out := decode[pubkeyOut](t, r.Structured)
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(out.PublicKey))
		if err != nil {
			t.Fatalf("public_key %q: %v", out.PublicKey, err)
		}
		if out.Fingerprint != f.HostKeyFP || keys.Fingerprint(pub) != f.HostKeyFP {
			t.Errorf("fingerprint %s, key's fingerprint %s; want the host key's %s", out.Fingerprint, keys.Fingerprint(pub), f.HostKeyFP)
		}
		vals := map[string]string{}
		for line := range strings.SplitSeq(out.EdgeConfig, "\n") {
			if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
				vals[k] = strings.Trim(v, `"'`)
			}
		}
		if vals["EDGE_GATEWAY"] != g.addr {
			t.Errorf("edge_config EDGE_GATEWAY = %q, want %q:\n%s", vals["EDGE_GATEWAY"], g.addr, out.EdgeConfig)
		}
		pins, err := keys.ParsePins(vals["EDGE_GATEWAY_HOST_KEY"])
		if err != nil || !pins.Match(f.HostKey) {
			t.Errorf("edge_config EDGE_GATEWAY_HOST_KEY = %q does not pin the host key (%v):\n%s", vals["EDGE_GATEWAY_HOST_KEY"], err, out.EdgeConfig)
		}
	})

	t.Run("register_edge_key", func(t *testing.T) {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		sshPub, _ := ssh.NewPublicKey(priv.Public())
		line := keys.AuthorizedLine(sshPub)
		fp := keys.Fingerprint(sshPub)

		r := g.call(t, "register_edge_key", map[string]any{"token": "wrong-token", "public_key": line, "name": "newedge"})
		if !r.IsError {
			t.Errorf("wrong token: isError false")
		}
		const secret = "SECRETMATERIAL9f3a7c"
		r = g.call(t, "register_edge_key", map[string]any{"token": token, "public_key": "-----BEGIN OPENSSH PRIVATE KEY----- " + secret})
		if !r.IsError {
			t.Errorf("not a public key: isError false")
		}
		if strings.Contains(r.Text, secret) || strings.Contains(g.Stderr(), secret) || strings.Contains(g.auditLog(), secret) {
			t.Errorf("a refused non-key was echoed or logged")
		}

		r = g.call(t, "register_edge_key", map[string]any{
			"token": token, "public_key": `command="/bin/false",no-pty ` + line + " new-edge",
			"name": "newedge", "labels": map[string]any{"role": "db"},
		})
		if r.IsError {
			t.Fatalf("register: isError: %s", r.Text)
		}
		type regOut struct {
			Fingerprint string            `json:"fingerprint"`
			Name        string            `json:"name"`
			Labels      map[string]string `json:"labels"`
			Added       bool              `json:"added"`
		}
		got := decode[regOut](t, r.Structured)
		if got.Fingerprint != fp || got.Name != "newedge" || !mapsEqual(got.Labels, map[string]string{"role": "db"}) || !got.Added {
			t.Errorf("register = %+v; want fingerprint %s, name newedge, labels role=db, added true", got, fp)
		}
		r = g.call(t, "register_edge_key", map[string]any{"token": token, "public_key": line, "name": "newedge", "labels": map[string]any{"role": "db"}})
		if again := decode[regOut](t, r.Structured); r.IsError || again.Added || again.Fingerprint != fp {
			t.Errorf("registering again = %+v (isError %v); want added false", again, r.IsError)
		}
		ak, _ := os.ReadFile(f.AuthorizedKeys)
		if !strings.Contains(string(ak), strings.Fields(line)[1]) || strings.Contains(string(ak), "/bin/false") || strings.Contains(string(ak), "no-pty") {
			t.Errorf("authorized_keys after registration (key present, options stripped?):\n%s", ak)
		}
		if !strings.Contains(g.auditLog(), fp) {
			t.Errorf("audit log does not mention the added key %s", fp)
		}
		e, all := g.edgeByFP(t, fp)
		if len(all) != 1 || e.Connected || e.Name != "newedge" || e.Labels["role"] != "db" {
			t.Errorf("registered key in get_status = %+v (%d entries); want known, offline, newedge, role=db", e, len(all))
		}
	})
}

// TestProvisioningDisabled: without PROVISION_TOKEN, register_edge_key refuses and says why.
func TestProvisioningDisabled(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	g := f.startGateway(t, nil)
	if st := g.status(t, nil); st.Gateway.ProvisioningEnabled == nil || *st.Gateway.ProvisioningEnabled {
		t.Errorf("provisioning_enabled = %v without PROVISION_TOKEN, want false", st.Gateway.ProvisioningEnabled)
	}
	k := f.newEdgeKey(t)
	r := g.call(t, "register_edge_key", map[string]any{"token": "", "public_key": k.Line})
	if !r.IsError || !strings.Contains(strings.ToLower(r.Text), "disabled") {
		t.Errorf("register without PROVISION_TOKEN: isError %v, text %q; want an error saying provisioning is disabled", r.IsError, r.Text)
	}
	ak, _ := os.ReadFile(f.AuthorizedKeys)
	if len(ak) != 0 {
		t.Errorf("authorized_keys changed: %s", ak)
	}
}

// TestDeviceInfo checks get_device_info against what this host (the edge runs locally) is.
func TestDeviceInfo(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	k := f.newEdgeKey(t)
	f.authorize(t, k, "dev1", "")
	g := f.startGateway(t, nil)
	f.startEdge(t, k, g.addr, nil)
	g.waitConnected(t, k.Fingerprint, nil)
	host, _ := os.Hostname()
	for _, tc := range []struct {
		name string
		args map[string]any
	}{
		{"by name", map[string]any{"edge": "dev1"}},
		{"by fingerprint, refresh", map[string]any{"edge": k.Fingerprint, "refresh": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := g.call(t, "get_device_info", tc.args)
			if r.IsError {
				t.Fatalf("isError: %s", r.Text)
			}
			d := decode[protocol.DeviceInfo](t, r.Structured)
			if d.Edge != "dev1" || d.Hostname != host || d.OS != "linux" || d.Arch == "" || d.KernelVersion == "" || d.EdgeVersion == "" {
				t.Errorf("device info = edge %q hostname %q os %q arch %q kernel %q edge_version %q; want dev1, %q, linux, …",
					d.Edge, d.Hostname, d.OS, d.Arch, d.KernelVersion, d.EdgeVersion, host)
			}
			if d.CPU.LogicalCores < 1 || d.Memory.Total == 0 || d.UptimeSeconds == 0 || !isRFC3339UTC(d.CollectedAt) {
				t.Errorf("cpu %+v memory %+v uptime %d collected_at %q", d.CPU, d.Memory, d.UptimeSeconds, d.CollectedAt)
			}
			for name, path := range d.Capabilities.Tools {
				if !filepath.IsAbs(path) {
					t.Errorf("capabilities.tools[%s] = %q, not an absolute path", name, path)
				}
			}
			if _, err := os.Stat("/bin/sh"); err == nil && d.Capabilities.Tools["sh"] == "" {
				t.Logf("note: capabilities.tools has no sh: %v", d.Capabilities.Tools)
			}
			caps := r.Structured["capabilities"].(map[string]any)
			for _, field := range []string{"tools", "container_runtimes"} {
				if caps[field] == nil {
					t.Errorf("capabilities.%s is null", field)
				}
			}
			for _, field := range []string{"disks", "network"} {
				if r.Structured[field] == nil {
					t.Errorf("%s is null", field)
				}
			}
		})
	}
	r := g.call(t, "get_device_info", map[string]any{"edge": "no-such-edge"})
	if !r.IsError || r.Text == "" {
		t.Errorf("unknown edge: isError %v text %q; want an error", r.IsError, r.Text)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
