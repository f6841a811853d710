package rpc

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

func TestUnknownMethod(t *testing.T) {
	h := newHarness(t, Config{})
	o := h.open("frobnicate", map[string]any{}).wait(nil)
	if o.code() != protocol.CodeUnknownMethod {
		t.Fatalf("got %v", o.err)
	}
}

func TestPaused(t *testing.T) {
	h := newHarness(t, Config{AllowShell: true})
	if err := os.WriteFile(PauseFile(h.cfg.StateDir), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{protocol.MethodExec, protocol.MethodDeviceInfo, protocol.MethodUpload} {
		o := h.open(m, map[string]any{}).wait(nil)
		if o.code() != protocol.CodePaused || !strings.Contains(o.err.Message, "mcp-ssh-edge resume") {
			t.Fatalf("%s: got %v", m, o.err)
		}
	}
	os.Remove(PauseFile(h.cfg.StateDir))
	if o := h.open(protocol.MethodExec, execParams("true")).wait(nil); o.err != nil {
		t.Fatalf("after resume: %v", o.err)
	}
}

func TestBusy(t *testing.T) {
	h := newHarness(t, Config{AllowShell: true, MaxConcurrent: 1})
	first := h.open(protocol.MethodExec, execParams("sh", "-c", "echo $$; sleep 30"))
	pgid := readPgid(t, first) // the first RPC holds the only slot now
	o := h.open(protocol.MethodExec, execParams("true")).wait(nil)
	if o.code() != protocol.CodeBusy {
		t.Fatalf("second call: %v, want busy", o.err)
	}
	first.send(protocol.FrameCancel, nil)
	var res protocol.ExecResult
	if o := first.wait(&res); o.err != nil || !res.Cancelled {
		t.Fatalf("first: %v %+v", o.err, res)
	}
	waitGroupGone(t, pgid)
	if o := h.open(protocol.MethodExec, execParams("true")).wait(nil); o.err != nil {
		t.Fatalf("after the slot freed: %v", o.err)
	}
}

func TestBadFirstFrame(t *testing.T) {
	h := newHarness(t, Config{})
	st, err := h.client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	c := &rpcCall{t: t, st: st, fr: protocol.NewReader(st)}
	c.send(protocol.FrameData, []byte("x"))
	if o := c.wait(nil); o.code() != protocol.CodeBadRequest {
		t.Fatalf("got %v", o.err)
	}
}

func TestRPCLog(t *testing.T) {
	h := newHarness(t, Config{AllowShell: true})
	p := execParams("echo", "secret-arg")
	p.Stdin = true
	c := h.open(protocol.MethodExec, p)
	c.send(protocol.FrameData, []byte("stdin-must-not-be-logged"))
	c.send(protocol.FrameData, nil)
	c.wait(nil)
	h.open("nope", nil).wait(nil)
	b, err := os.ReadFile(filepath.Join(h.cfg.StateDir, "rpc.log"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "stdin-must-not-be-logged") {
		t.Fatal("stdin logged")
	}
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("bad line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 || lines[0]["method"] != "exec" || lines[0]["outcome"] != "ok" || lines[0]["exit_code"] != 0.0 ||
		lines[1]["outcome"] != protocol.CodeUnknownMethod {
		t.Fatalf("log lines %v", lines)
	}
	for _, k := range []string{"time", "id", "argv", "duration_ms"} {
		if _, ok := lines[0][k]; !ok {
			t.Errorf("log line lacks %s: %v", k, lines[0])
		}
	}
}

func TestRPCLogRotates(t *testing.T) {
	dir := t.TempDir()
	s := NewServer(Config{StateDir: dir}, nil)
	big := make([]byte, rpcLogMax-10)
	if err := os.WriteFile(filepath.Join(dir, "rpc.log"), big, 0o600); err != nil {
		t.Fatal(err)
	}
	s.appendLog(&logEntry{ID: "x", Method: "exec", Outcome: "ok"})
	st1, err1 := os.Stat(filepath.Join(dir, "rpc.log.1"))
	st, err := os.Stat(filepath.Join(dir, "rpc.log"))
	if err1 != nil || err != nil || st1.Size() != int64(len(big)) || st.Size() > 200 {
		t.Fatalf("rotation: %v %v", err1, err)
	}
}

func TestDeviceInfo(t *testing.T) {
	h := newHarness(t, Config{})
	var d protocol.DeviceInfo
	o := h.open(protocol.MethodDeviceInfo, protocol.DeviceInfoParams{Refresh: true}).wait(&d)
	if o.err != nil {
		t.Fatal(o.err)
	}
	if d.Hostname == "" || d.CPU.LogicalCores < 1 || d.Memory.Total == 0 || d.Edge != "edge1" || d.EdgeVersion != "test" || d.OS != "linux" {
		t.Fatalf("implausible device info %+v", d)
	}
	// Arrays and maps are never null on the wire.
	for _, k := range []string{`"disks":null`, `"network":null`, `"tools":null`, `"container_runtimes":null`, `"addrs":null`} {
		if strings.Contains(string(o.result), k) {
			t.Errorf("result has %s", k)
		}
	}
	if _, ok := d.Capabilities.Tools["sh"]; !ok {
		t.Errorf("sh not among tools: %v", d.Capabilities.Tools)
	}
	var d2 protocol.DeviceInfo
	h.open(protocol.MethodDeviceInfo, nil).wait(&d2)
	if d2.CollectedAt != d.CollectedAt {
		t.Errorf("second call not served from cache")
	}
}

// TestRPCLogKeptOpen: rpc.log stays open between calls, yet a line always lands under the
// name rpc.log: after the file was removed, renamed away (an outside logrotate) or rotated
// beyond rpcLogMax.
func TestRPCLogKeptOpen(t *testing.T) {
	dir := t.TempDir()
	s := NewServer(Config{StateDir: dir}, nil)
	path := filepath.Join(dir, rpcLogFile)
	lines := func(p string) int {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "\n")
	}
	s.appendLog(&logEntry{ID: "1", Method: "exec", Outcome: "ok"})
	s.appendLog(&logEntry{ID: "2", Method: "exec", Outcome: "ok"})
	if n := lines(path); n != 2 {
		t.Fatalf("%d lines, want 2", n)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	s.appendLog(&logEntry{ID: "3", Method: "exec", Outcome: "ok"})
	if n := lines(path); n != 1 {
		t.Fatalf("after removal: %d lines, want 1", n)
	}
	if err := os.Rename(path, path+".old"); err != nil {
		t.Fatal(err)
	}
	s.appendLog(&logEntry{ID: "4", Method: "exec", Outcome: "ok"})
	if n, old := lines(path), lines(path+".old"); n != 1 || old != 1 {
		t.Fatalf("after an outside rename: %d lines, %d in the old file; want 1 and 1", n, old)
	}
	if err := os.Truncate(path, rpcLogMax); err != nil {
		t.Fatal(err)
	}
	s.appendLog(&logEntry{ID: "5", Method: "exec", Outcome: "ok"})
	if n := lines(path); n != 1 {
		t.Fatalf("after rotation: %d lines, want 1", n)
	}
	if st, err := os.Stat(path + ".1"); err != nil || st.Size() != rpcLogMax {
		t.Fatalf("rotated file: %v, %v", st, err)
	}
}
