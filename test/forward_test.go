package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

// TestForwardMode runs the gateway binary in GATEWAY_MODE=both against Debian's OpenSSH server
// (started by the test on loopback) as a forward edge, next to a companion edge: both show in
// get_status with their kind, the client key the gateway logs in with is the one
// get_agent_pubkey gives, argv reaches the device byte for byte, files round-trip, and a
// device whose host key is not the pinned one is never logged in to and says why.
func TestForwardMode(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	clientKeyFile, client := f.clientKey(t)
	dev := startSSHD(t, client.PublicKey())
	// A second server pinned to a key it does not have.
	impostor := startSSHD(t, client.PublicKey())
	other, _, err := keys.LoadOrGenerate(filepath.Join(t.TempDir(), "other"), "another host key")
	if err != nil {
		t.Fatal(err)
	}
	pinned := localfleet.SSHD{Addr: impostor.Addr, User: impostor.User, HostKey: other.PublicKey()}
	wrongPin := pinned.ForwardEntry("impostor", "env: lab")
	edgesFile := filepath.Join(f.KeysDir, "forward_edges.yaml")
	if err := os.WriteFile(edgesFile, []byte(dev.ForwardEntry("router1", "role: router")+wrongPin), 0o600); err != nil {
		t.Fatal(err)
	}
	comp := f.newEdgeKey(t)
	f.authorize(t, comp, "pi", "role=pi")
	g := f.startGateway(t, map[string]string{"GATEWAY_MODE": "both", "FORWARD_EDGES_FILE": edgesFile, "CLIENT_KEY_FILE": clientKeyFile})
	f.startEdge(t, comp, g.addr, nil)
	g.waitConnected(t, comp.Fingerprint, nil)
	fwd := g.waitConnected(t, keys.Fingerprint(dev.HostKey), nil)
	if fwd.Name != "router1" || fwd.Kind != "forward" || fwd.Labels["role"] != "router" {
		t.Errorf("forward edge in get_status = %+v, want router1, kind forward, role=router", fwd)
	}
	if pi, _ := g.edgeByFP(t, comp.Fingerprint); pi.Kind != "companion" {
		t.Errorf("companion edge kind = %q", pi.Kind)
	}
	if imp, _ := g.edgeByFP(t, keys.Fingerprint(dev.HostKey)); imp.Name == "impostor" && imp.Connected {
		t.Errorf("the impostor with the wrong host key is connected: %+v", imp)
	}

	pub := g.call(t, "get_agent_pubkey", nil)
	if got := pub.Structured["client_public_key"]; got != keys.AuthorizedLine(client.PublicKey()) {
		t.Errorf("client_public_key = %v, want the CLIENT_KEY_FILE's", got)
	}

	awkward := []any{"printf", "%s|", "two words", "it's", `"q"`, "$HOME", "a\nb", `back\slash`, "*", ""}
	r := g.call(t, "run_command", map[string]any{"edge": "router1", "argv": awkward})
	out := decode[execOut](t, r.Structured)
	want := "two words|it's|\"q\"|$HOME|a\nb|back\\slash|*||"
	if r.IsError || out.ExitCode != 0 || out.Stdout != want {
		t.Errorf("run_command on router1: isError=%v exit %d stdout %q, want %q", r.IsError, out.ExitCode, out.Stdout, want)
	}
	r = g.call(t, "run_command", map[string]any{"edge": "router1", "command": "echo err >&2; exit 7"})
	if out := decode[execOut](t, r.Structured); out.ExitCode != 7 || out.Stderr != "err\n" {
		t.Errorf("exit status through the forward edge: %+v", out)
	}

	target := filepath.Join(t.TempDir(), "up.txt")
	up := g.call(t, "upload_file", map[string]any{"edge": "router1", "path": target, "content": "hello\nforward\n", "mode": "0640"})
	if up.IsError {
		t.Fatalf("upload_file: %s", up.Text)
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "hello\nforward\n" {
		t.Errorf("uploaded file: %q %v", b, err)
	}
	down := g.call(t, "download_file", map[string]any{"edge": "router1", "path": target})
	if down.IsError || down.Structured["content"] != "hello\nforward\n" {
		t.Errorf("download_file: %s %v", down.Text, down.Structured["content"])
	}
	if r := g.call(t, "start_command", map[string]any{"edge": "router1", "argv": []any{"true"}}); !r.IsError || !strings.Contains(r.Text, "companion") {
		t.Errorf("start_command on a forward edge: isError=%v %q, want a clear error that jobs need the companion", r.IsError, r.Text)
	}

	st := g.status(t, map[string]any{"limit": 1000})
	for _, e := range st.Edges {
		if e.Name == "impostor" {
			if e.Connected || !strings.Contains(e.Problem, "host key") {
				t.Errorf("impostor = %+v, want not connected with the host key named as the problem", e)
			}
		}
	}
	if strings.Contains(impostor.Log(), "Accepted publickey") {
		t.Errorf("the gateway logged in to the device whose host key is not the pinned one")
	}
}
