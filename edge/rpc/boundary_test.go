package rpc

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// openRaw opens an RPC stream and sends a request frame whose params are the JSON text
// given, as a gateway that skipped every check of its own could.
func (h *harness) openRaw(method, params string) *rpcCall {
	h.t.Helper()
	st, err := h.client.OpenStream()
	if err != nil {
		h.t.Fatal(err)
	}
	_ = st.SetDeadline(time.Now().Add(30 * time.Second))
	req, err := json.Marshal(protocol.Request{V: protocol.Version, ID: "raw-" + method, Method: method, Params: json.RawMessage(params)})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := protocol.WriteFrame(st, protocol.FrameRequest, req); err != nil {
		h.t.Fatal(err)
	}
	return &rpcCall{t: h.t, st: st, fr: protocol.NewReader(st)}
}

// TestEdgeRefusesWhatValidationForbids: the edge applies the protocol's rules itself, so a
// request no gateway should have sent (NUL bytes, oversized fields) is refused before any
// process starts or any file is touched, with a message naming the field.
func TestEdgeRefusesWhatValidationForbids(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	long := strings.Repeat("a", protocol.MaxStringLen+1)
	tests := []struct {
		name   string
		method string
		params string
		want   string
	}{
		{"NUL in argv", protocol.MethodExec,
			`{"argv":["touch","` + marker + `","x\u0000y"],"timeout_ms":5000,"max_output_bytes":10}`, "argv[2] contains a NUL byte"},
		{"NUL in command", protocol.MethodExec,
			`{"command":"touch ` + marker + `\u0000","timeout_ms":5000,"max_output_bytes":10}`, "command contains a NUL byte"},
		{"NUL in env value", protocol.MethodExec,
			`{"argv":["touch","` + marker + `"],"env":{"A":"\u0000"},"timeout_ms":5000,"max_output_bytes":10}`, `env "A": value contains a NUL byte`},
		{"env value too long", protocol.MethodExec,
			`{"argv":["touch","` + marker + `"],"env":{"A":"` + long + `"},"timeout_ms":5000,"max_output_bytes":10}`, `env "A": value is`},
		{"NUL in job argv", protocol.MethodJobStart,
			`{"exec":{"argv":["touch","` + marker + `","\u0000"],"timeout_ms":5000,"max_output_bytes":10}}`, "argv[2] contains a NUL byte"},
		{"NUL in upload within", protocol.MethodUpload,
			`{"path":"` + marker + `","size":0,"sha256":"` + sum(nil) + `","mode":420,"overwrite":false,"create_dirs":false,"within":["` + dir + `\u0000"]}`,
			"within[0] contains a NUL byte"},
		{"relative download within", protocol.MethodDownload,
			`{"path":"/etc/hostname","max_bytes":10,"within":["etc"]}`, `within[0] "etc" must be absolute`},
	}
	h := newHarness(t, Config{AllowShell: true})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := h.openRaw(tc.method, tc.params).wait(nil)
			if o.code() != protocol.CodeBadRequest || !strings.Contains(o.err.Message, tc.want) {
				t.Fatalf("got %v, want %s with %q", o.err, protocol.CodeBadRequest, tc.want)
			}
			if !strings.HasPrefix(o.err.Message, tc.method+": ") {
				t.Errorf("message %q does not name the method", o.err.Message)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatal("the refused request ran a process or wrote a file")
			}
		})
	}
	if ents, _ := os.ReadDir(filepath.Join(h.cfg.StateDir, jobsDirName)); len(ents) != 0 {
		t.Fatalf("a refused job left %d journals", len(ents))
	}
}
