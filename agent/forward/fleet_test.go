package forward

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

const fp1 = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"

func TestParseFile(t *testing.T) {
	key, _ := newSigner(t)
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key.PublicKey())))
	tests := []struct {
		name    string
		yaml    string
		wantErr string
		check   func(t *testing.T, es []Entry)
	}{
		{"empty", "", "", func(t *testing.T, es []Entry) {
			if len(es) != 0 {
				t.Errorf("%v", es)
			}
		}},
		{"fingerprint, default port, name folded", "- {name: Router1, address: 10.0.0.1, user: admin, host_key: " + fp1 + "}\n", "", func(t *testing.T, es []Entry) {
			if es[0].Name != "router1" || es[0].Address != "10.0.0.1:22" || es[0].Fingerprint != fp1 || es[0].HostKey != nil || es[0].Labels == nil {
				t.Errorf("%+v", es[0])
			}
		}},
		{"key line, ipv6, labels", "- name: r2\n  address: '[::1]:2222'\n  user: root\n  host_key: " + line + "\n  labels: {role: web}\n", "", func(t *testing.T, es []Entry) {
			if es[0].Address != "[::1]:2222" || es[0].Fingerprint != ssh.FingerprintSHA256(key.PublicKey()) || es[0].Labels["role"] != "web" {
				t.Errorf("%+v", es[0])
			}
		}},
		{"unknown field", "- {name: a, address: h, user: u, host_key: " + fp1 + ", port: 22}\n", "field port not found", nil},
		{"no host key", "- {name: a, address: h, user: u}\n", `entry 1 ("a"): host_key is required`, nil},
		{"bad fingerprint", "- {name: a, address: h, user: u, host_key: SHA256:short}\n", "not a SHA256 fingerprint", nil},
		{"bad key", "- {name: a, address: h, user: u, host_key: ssh-ed25519 AAAA}\n", "neither", nil},
		{"bad name", "- {name: 'a b', address: h, user: u, host_key: " + fp1 + "}\n", "name must be", nil},
		{"bad port", "- {name: a, address: 'h:99999', user: u, host_key: " + fp1 + "}\n", "no valid port", nil},
		{"bad user", "- {name: a, address: h, user: 'u;x', host_key: " + fp1 + "}\n", "not a valid login name", nil},
		{"duplicate name", "- {name: a, address: h, user: u, host_key: " + fp1 + "}\n- {name: A, address: h2, user: u, host_key: " + line + "}\n", `entry 2 ("a"): name already used by entry 1`, nil},
		{"duplicate key", "- {name: a, address: h, user: u, host_key: " + fp1 + "}\n- {name: b, address: h2, user: u, host_key: " + fp1 + "}\n", "already pinned", nil},
		{"bad label", "- {name: a, address: h, user: u, host_key: " + fp1 + ", labels: {'bad key': x}}\n", "label key", nil},
		{"not a list", "name: a\n", "want a YAML list", nil},
		{"two documents", "[]\n---\n[]\n", "more than one", nil},
		{"options on key", "- {name: a, address: h, user: u, host_key: 'no-pty " + line + "'}\n", "without options", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es, err := ParseFile([]byte(tt.yaml))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, es)
		})
	}
	if _, err := ParseFile(make([]byte, MaxFileBytes+1)); err == nil {
		t.Error("oversized file accepted")
	}
}

func TestBackoff(t *testing.T) {
	for attempt := 0; attempt < 40; attempt++ {
		for range 50 {
			d := backoff(100*time.Millisecond, 2*time.Second, attempt)
			ceiling := min(100*time.Millisecond<<max(attempt-1, 0), 2*time.Second)
			if attempt > 20 {
				ceiling = 2 * time.Second
			}
			if d < 0 || d >= ceiling && ceiling > 0 {
				t.Fatalf("attempt %d: %s not in [0, %s)", attempt, d, ceiling)
			}
		}
	}
}

func TestHostKeyMismatchRefusedBeforeAuth(t *testing.T) {
	key, _ := newSigner(t)
	s := startSSHD(t, key.PublicKey())
	other, _ := newSigner(t)
	counting := &countingSigner{Signer: key}
	tf := newTestFleet(t, counting, fleetEntry("dev", s, ssh.FingerprintSHA256(other.PublicKey()), ""), nil)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e := <-tf.events:
			if e.Kind != EventHostKeyMismatch {
				continue
			}
			if !errors.Is(e.Err, ErrHostKeyMismatch) || e.Edge != "dev" || !strings.Contains(e.Err.Error(), ssh.FingerprintSHA256(s.hostKey)) {
				t.Errorf("event %+v", e)
			}
		case <-deadline:
			t.Fatal("no host key mismatch event")
		}
		break
	}
	if n := counting.uses.Load(); n != 0 {
		t.Errorf("the client key was used %d times: authentication was attempted", n)
	}
	st := tf.Statuses(false)
	if len(st) != 1 || st[0].Connected || !st[0].HostKeyMismatch || !strings.Contains(st[0].LastError, "host key does not match") {
		t.Errorf("status %+v", st)
	}
	e, err := tf.Edge("dev")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Exec(context.Background(), "rid", execP("true"), nil, nil); !errors.Is(err, gateway.ErrEdgeOffline) || !strings.Contains(err.Error(), "host key") {
		t.Errorf("exec on a mismatched edge: %v", err)
	}
	log := s.Log()
	if !strings.Contains(log, "Connection") {
		t.Logf("sshd log:\n%s", log)
	}
	if strings.Contains(log, "Accepted publickey") || strings.Contains(log, "Failed publickey") {
		t.Errorf("sshd saw an authentication attempt:\n%s", log)
	}
}

func TestRestartMidCallAndReconnect(t *testing.T) {
	fx := newFixture(t)
	done := make(chan error, 1)
	go func() {
		_, err := fx.edge.Exec(context.Background(), "rid", execP("sleep", "30.77"), nil, nil)
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(processesWith("sleep", "30.77")) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	fx.sshd.restart()
	defer func() {
		for _, p := range processesWith("sleep", "30.77") {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	}()
	select {
	case err := <-done:
		if !errors.Is(err, gateway.ErrDisconnected) || !strings.Contains(err.Error(), "connection lost") {
			t.Fatalf("mid-call error: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call did not end when sshd went away")
	}
	// The same handle reaches the device again once the fleet has reconnected.
	deadline = time.Now().Add(15 * time.Second)
	for {
		res, err := fx.edge.Exec(context.Background(), "rid", execP("echo", "back"), nil, nil)
		if err == nil && res.ExitCode == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("edge did not come back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestReloadAndResolve(t *testing.T) {
	key, _ := newSigner(t)
	s := startSSHD(t, key.PublicKey())
	tf := newTestFleet(t, key, fleetEntry("one", s, "", "{role: a}"), nil)
	tf.edge(t, "one")
	watch := tf.WatchEdges(t.Context())
	// Same host under a second name is refused (duplicate key); the file stays in force.
	bad := fleetEntry("one", s, "", "") + fleetEntry("two", s, "", "")
	if err := os.WriteFile(tf.file, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, tf, EventReloadFailed)
	if _, err := tf.Edge("one"); err != nil {
		t.Fatalf("last good file not kept: %v", err)
	}
	// Labels change in place: the connection stays.
	since := tf.Edges(true)[0].ConnectedSince
	if err := os.WriteFile(tf.file, []byte(fleetEntry("one", s, "", "{role: b}")), 0o600); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, tf, EventReloaded)
	select {
	case <-watch:
	case <-time.After(5 * time.Second):
		t.Error("WatchEdges did not signal the reload")
	}
	st := tf.Edges(false)
	if len(st) != 1 || st[0].Labels["role"] != "b" || !st[0].ConnectedSince.Equal(since) {
		t.Errorf("status after label change %+v", st)
	}
	byFP, err := tf.Edge(ssh.FingerprintSHA256(s.hostKey))
	if err != nil || byFP.Name() != "one" || byFP.Labels()["role"] != "b" || !tf.Has("ONE") {
		t.Errorf("resolve by fingerprint: %v %v", byFP, err)
	}
	if _, err := tf.Edge("nope"); !errors.Is(err, gateway.ErrUnknownEdge) {
		t.Errorf("unknown edge: %v", err)
	}
	// Deleting the file keeps the hosts (as for POLICY_FILE).
	if err := os.Remove(tf.file); err != nil {
		t.Fatal(err)
	}
	if e := waitEvent(t, tf, EventReloadFailed); !strings.Contains(e.Err.Error(), "was removed") {
		t.Errorf("event %+v", e)
	}
	if !tf.Has("one") {
		t.Error("a deleted file removed the hosts")
	}
	// Removing the host disconnects it and makes it unknown.
	if err := os.WriteFile(tf.file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, tf, EventReloaded)
	if _, err := tf.Edge("one"); !errors.Is(err, gateway.ErrUnknownEdge) {
		t.Errorf("removed edge still resolves: %v", err)
	}
}

func waitEvent(t *testing.T, tf *testFleet, kind EventKind) Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e := <-tf.events:
			if e.Kind == kind {
				return e
			}
		case <-deadline:
			t.Fatalf("no %s event", kind)
		}
	}
}

func TestDeviceInfoAndJobs(t *testing.T) {
	fx := newFixture(t)
	d, err := fx.edge.DeviceInfo(context.Background(), "rid", true)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if d.Edge != "dev" || d.Hostname != host || d.OS != "linux" || d.Arch == "" || d.KernelVersion == "" ||
		d.Platform == "" || d.Memory.Total == 0 || d.CPU.LogicalCores == 0 || len(d.Disks) == 0 || len(d.Network) == 0 ||
		d.Capabilities.Tools["sh"] == "" || d.Capabilities.PackageManager != "apt" || d.Labels["role"] != "test" || d.UptimeSeconds == 0 {
		t.Errorf("device info %+v", d)
	}
	if d.Capabilities.ToolVersions == nil || d.Capabilities.ContainerRuntimes == nil || d.GPU.Devices == nil ||
		d.Capabilities.FailedUnits == nil || d.Capabilities.ContainerRuntimeVersions == nil {
		t.Error("a map or slice is nil")
	}
	inv := fx.fleet.Inventories(true)
	if len(inv) != 1 || inv[0].Summary == nil || !inv[0].Summary.HasTool("sh") || inv[0].Summary.MemoryTotal == 0 {
		t.Errorf("inventory %+v", inv)
	}
	if st := fx.fleet.Edges(true); len(st) != 1 || st[0].OS != "linux" || !strings.Contains(st[0].EdgeVersion, "OpenSSH") {
		t.Errorf("status %+v", st)
	}
	// The cached copy serves a call without refresh.
	d2, err := fx.edge.DeviceInfo(context.Background(), "rid", false)
	if err != nil || d2.CollectedAt != d.CollectedAt {
		t.Errorf("cached info %v %v", d2.CollectedAt, err)
	}
	_, err = fx.edge.JobStart(context.Background(), "rid", protocol.JobStartParams{})
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != CodeUnsupported || !strings.Contains(pe.Message, "jobs need the mcp-ssh-edge companion") {
		t.Errorf("job start: %v", err)
	}
	if _, err := fx.edge.JobList(context.Background(), "rid"); err == nil {
		t.Error("job list on a forward edge")
	}
}

// A connected edge is probed once at connect, so find_edges knows it before any call.
func TestInventoryAtConnect(t *testing.T) {
	key, _ := newSigner(t)
	s := startSSHD(t, key.PublicKey())
	tf := newTestFleet(t, key, fleetEntry("inv", s, "", ""), func(o *Options) { o.InventoryInterval = time.Hour })
	tf.edge(t, "inv")
	deadline := time.Now().Add(20 * time.Second)
	for {
		inv := tf.Inventories(false)
		if len(inv) == 1 && inv[0].Summary != nil {
			if !inv[0].Summary.HasTool("sh") || inv[0].Status.OS != "linux" {
				t.Errorf("inventory %+v", inv[0])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no inventory after connect: %+v", inv)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
