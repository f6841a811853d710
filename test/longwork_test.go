package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

type jobOut struct {
	JobID      string `json:"job_id"`
	Edge       string `json:"edge"`
	Status     string `json:"status"`
	ExitCode   *int   `json:"exit_code"`
	Signal     string `json:"signal"`
	Output     string `json:"output"`
	NextSince  int64  `json:"next_since"`
	OutputSize int64  `json:"output_size"`
	Truncated  bool   `json:"truncated"`
}

// pollJob follows a job with get_command (since = next_since) until it is no longer running,
// and returns the last state with the whole output read along the way.
func (g *gateway) pollJob(t *testing.T, jobID string, timeout time.Duration) (jobOut, string) {
	t.Helper()
	var all strings.Builder
	var since int64
	deadline := time.Now().Add(timeout)
	for {
		r := g.call(t, "get_command", map[string]any{"job_id": jobID, "since": since})
		if r.IsError {
			if time.Now().After(deadline) {
				t.Fatalf("get_command %s: %s", jobID, r.Text)
			}
			time.Sleep(200 * time.Millisecond) // e.g. the edge is reconnecting
			continue
		}
		j := decode[jobOut](t, r.Structured)
		all.WriteString(j.Output)
		since = j.NextSince
		if j.Status != "running" && j.NextSince >= j.OutputSize {
			return j, all.String()
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s still %s after %v", jobID, j.Status, timeout)
		}
		time.Sleep(150 * time.Millisecond)
	}
}

// TestJobSurvivesEdgeKill: the edge is killed with SIGKILL mid-job and started again on the
// same state directory; the job finishes and its whole output and exit code are readable.
// Then the gateway is restarted, and the job is still readable through the new one.
func TestJobSurvivesEdgeKill(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	k := f.newEdgeKey(t)
	f.authorize(t, k, "worker", "")
	g := f.startGateway(t, nil)
	state := t.TempDir()
	e := f.startEdge(t, k, g.addr, map[string]string{"EDGE_STATE_DIR": state})
	g.waitConnected(t, k.Fingerprint, nil)

	r := g.call(t, "start_command", map[string]any{"edge": "worker",
		"command": "for i in $(seq 1 12); do echo line$i; sleep 0.25; done; echo done >&2; exit 7"})
	if r.IsError {
		t.Fatalf("start_command: %s", r.Text)
	}
	j := decode[jobOut](t, r.Structured)
	if j.Status != "running" || !strings.HasPrefix(j.JobID, "worker/") {
		t.Fatalf("start_command returned %+v", j)
	}
	time.Sleep(700 * time.Millisecond)
	kill(t, e.Proc) // SIGKILL to the edge's process group: the job runs in a session of its own
	r = g.call(t, "get_command", map[string]any{"job_id": j.JobID})
	if !r.IsError || !strings.Contains(r.Text, "keeps running") {
		t.Errorf("get_command with the edge down: isError=%v %s", r.IsError, r.Text)
	}
	f.startEdge(t, k, g.addr, map[string]string{"EDGE_STATE_DIR": state})
	g.waitConnected(t, k.Fingerprint, nil)
	final, output := g.pollJob(t, j.JobID, 30*time.Second)
	var want strings.Builder
	for i := 1; i <= 12; i++ {
		fmt.Fprintf(&want, "line%d\n", i)
	}
	want.WriteString("done\n")
	if final.Status != "exited" || final.ExitCode == nil || *final.ExitCode != 7 || output != want.String() {
		t.Fatalf("after the edge restart: %+v output %q", final, output)
	}

	// A new gateway on the same state: the edge reconnects and the job is still there.
	if err := g.Close(); err != nil {
		t.Fatalf("stop the first gateway: %v", err)
	}
	g2 := f.startGateway(t, nil)
	if g2.addr != g.addr {
		// The edge dials the old port: point a new edge process at the new gateway.
		f.startEdge(t, k, g2.addr, map[string]string{"EDGE_STATE_DIR": state})
	}
	g2.waitConnected(t, k.Fingerprint, nil)
	r = g2.call(t, "get_command", map[string]any{"job_id": j.JobID})
	if r.IsError {
		t.Fatalf("get_command after a gateway restart: %s", r.Text)
	}
	if got := decode[jobOut](t, r.Structured); got.Status != "exited" || *got.ExitCode != 7 || got.Output != want.String() {
		t.Errorf("after a gateway restart: %+v", got)
	}
	r = g2.call(t, "list_commands", map[string]any{"edge": "worker"})
	if r.IsError || !strings.Contains(r.Text, j.JobID) {
		t.Errorf("list_commands: %s", r.Text)
	}
}

// TestJobCancel: cancel_command kills the job's whole process group.
func TestJobCancel(t *testing.T) {
	t.Parallel()
	x := newExecEnv(t)
	b := randBytes(t, 4)
	marker := fmt.Sprintf("300.%d", uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8|uint32(b[3]))
	r := x.g.call(t, "start_command", map[string]any{"edge": "runner", "argv": []any{"sh", "-c", "sleep " + marker + " & sleep " + marker + "; wait"}})
	if r.IsError {
		t.Fatal(r.Text)
	}
	j := decode[jobOut](t, r.Structured)
	if !waitFor(5*time.Second, func() bool { return countProcs(marker) >= 3 }) {
		t.Fatal("job processes not seen")
	}
	r = x.g.call(t, "cancel_command", map[string]any{"job_id": j.JobID})
	if r.IsError {
		t.Fatal(r.Text)
	}
	// SIGTERM first: the shell dies of it; what ignores it is killed after the grace.
	if got := decode[jobOut](t, r.Structured); got.Status != "killed" || got.Signal != "SIGTERM" {
		t.Errorf("cancel_command: %+v", got)
	}
	if !waitFor(3*time.Second, func() bool { return countProcs(marker) == 0 }) {
		t.Errorf("%d processes of the cancelled job remain", countProcs(marker))
	}
	if r := x.g.call(t, "get_command", map[string]any{"job_id": "runner/zzzz"}); !r.IsError {
		t.Errorf("bad job id accepted")
	}
}

// countProcs counts live (non-zombie) processes whose command line contains s.
func countProcs(s string) int {
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), s) {
			continue
		}
		st, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := strings.LastIndexByte(string(st), ')'); i > 0 && len(st) > i+2 && st[i+2] == 'Z' {
			continue
		}
		n++
	}
	return n
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestRunCommandProgressAndCancel: progress notifications arrive while a command runs, and a
// cancelled call leaves no process behind.
func TestRunCommandProgressAndCancel(t *testing.T) {
	t.Parallel()
	x := newExecEnv(t)
	var mu sync.Mutex
	var notes []string
	var times []time.Time
	x.g.c.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method != "notifications/progress" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		msg, _ := n.Params.AdditionalFields["message"].(string)
		notes = append(notes, msg)
		times = append(times, time.Now())
	})
	req := mcp.CallToolRequest{}
	req.Params.Name = "run_command"
	req.Params.Arguments = map[string]any{"edge": "runner", "command": "for i in 1 2 3; do echo $i; sleep 1; done"}
	req.Params.Meta = &mcp.Meta{ProgressToken: "p1"}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	start := time.Now()
	res, err := x.g.c.CallTool(ctx, req)
	end := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	out := decode[execOut](t, x.g.check(t, "run_command", res).Structured)
	if out.Stdout != "1\n2\n3\n" {
		t.Errorf("stdout %q", out.Stdout)
	}
	mu.Lock()
	joined := strings.Join(notes, "")
	early := 0
	for _, ts := range times {
		if end.Sub(ts) > 500*time.Millisecond {
			early++
		}
	}
	mu.Unlock()
	if !strings.Contains(joined, "1\n") || !strings.Contains(joined, "2\n") || early < 2 {
		t.Errorf("progress during the run: %q (%d arrived well before the end of a %v call)", joined, early, end.Sub(start))
	}

	// A unique sleep duration marks every process of the call (sh and both sleeps).
	b := randBytes(t, 4)
	marker := fmt.Sprintf("300.%d", uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8|uint32(b[3]))
	cctx, ccancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		req := mcp.CallToolRequest{}
		req.Params.Name = "run_command"
		req.Params.Arguments = map[string]any{"edge": "runner", "argv": []any{"sh", "-c", "sleep " + marker + " & sleep " + marker + "; wait"}}
		x.g.c.CallTool(cctx, req)
	}()
	if !waitFor(10*time.Second, func() bool { return countProcs(marker) >= 3 }) {
		t.Fatalf("command not started: %d processes", countProcs(marker))
	}
	ccancel()
	<-done
	if !waitFor(3*time.Second, func() bool { return countProcs(marker) == 0 }) {
		t.Errorf("%d processes left after the call was cancelled", countProcs(marker))
	}
}

// TestFanout runs one command over several edges, one of them stopped.
func TestFanout(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	g := f.startGateway(t, nil)
	var procs []*edgeProc
	for i, labels := range []string{"role=web,site=paris", "role=web,site=paris", "role=web,site=oslo", "role=db,site=paris"} {
		k := f.newEdgeKey(t)
		f.authorize(t, k, fmt.Sprintf("fan%d", i), labels)
		procs = append(procs, f.startEdge(t, k, g.addr, map[string]string{"EDGE_LABELS": "role=db"}))
		g.waitConnected(t, k.Fingerprint, nil)
	}
	kill(t, procs[1].Proc)
	if !waitFor(connectTimeout, func() bool { e, _ := g.edgeByFP(t, procs[1].Key.Fingerprint); return !e.Connected }) {
		t.Fatal("stopped edge still connected")
	}
	type fanOut struct {
		Matched   int `json:"matched"`
		Succeeded int `json:"succeeded"`
		Failed    int `json:"failed"`
		Results   []struct {
			Edge     string `json:"edge"`
			ExitCode int    `json:"exit_code"`
			Stdout   string `json:"stdout"`
			Error    string `json:"error"`
		} `json:"results"`
	}
	r := g.call(t, "run_on_edges", map[string]any{"target": "role=web", "argv": []any{"echo", "hi"}})
	if r.IsError {
		t.Fatal(r.Text)
	}
	out := decode[fanOut](t, r.Structured)
	if out.Matched != 3 || out.Succeeded != 2 || out.Failed != 1 || len(out.Results) != 3 {
		t.Fatalf("run_on_edges role=web: %+v", out)
	}
	for _, res := range out.Results {
		switch res.Edge {
		case "fan0", "fan2":
			if res.Stdout != "hi\n" || res.Error != "" || res.ExitCode != 0 {
				t.Errorf("%s: %+v", res.Edge, res)
			}
		case "fan1":
			if res.Error == "" || !strings.Contains(res.Error, "not connected") {
				t.Errorf("stopped edge: %+v", res)
			}
		default:
			t.Errorf("unexpected edge %s (reported labels must not select)", res.Edge)
		}
	}
	r = g.call(t, "run_on_edges", map[string]any{"target": "*", "command": "exit 3", "concurrency": 2})
	if out := decode[fanOut](t, r.Structured); r.IsError || out.Matched != 4 || out.Failed != 4 {
		t.Errorf("run_on_edges *: %s", r.Text)
	}
	if r := g.call(t, "run_on_edges", map[string]any{"target": "role=nothing", "argv": []any{"true"}}); !r.IsError {
		t.Errorf("no match: %s", r.Text)
	}
}

// TestFileTransfers: download_file inline and to dest_path, upload_file from source_path,
// FILES_DIR confinement, and EDGE_DOWNLOAD_DIRS.
func TestFileTransfers(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	k := f.newEdgeKey(t)
	f.authorize(t, k, "files", "")
	filesDir := t.TempDir()
	g := f.startGateway(t, map[string]string{"FILES_DIR": filesDir})
	edgeDir := t.TempDir()
	stateDir := t.TempDir()
	f.startEdge(t, k, g.addr, map[string]string{"EDGE_DOWNLOAD_DIRS": edgeDir, "EDGE_STATE_DIR": stateDir})
	g.waitConnected(t, k.Fingerprint, nil)

	os.WriteFile(filepath.Join(edgeDir, "hello.txt"), []byte("héllo\n"), 0o644)
	os.WriteFile(filepath.Join(edgeDir, "bin"), []byte{0, 1, 2, 255}, 0o644)
	type dlOut struct {
		Size      int64  `json:"size"`
		Bytes     int64  `json:"bytes"`
		SHA256    string `json:"sha256"`
		Truncated bool   `json:"truncated"`
		Encoding  string `json:"encoding"`
		Content   string `json:"content"`
		DestPath  string `json:"dest_path"`
	}
	r := g.call(t, "download_file", map[string]any{"edge": "files", "path": filepath.Join(edgeDir, "hello.txt")})
	if d := decode[dlOut](t, r.Structured); r.IsError || d.Encoding != "utf-8" || d.Content != "héllo\n" || d.Size != 7 || d.Truncated {
		t.Errorf("text download: %s", r.Text)
	}
	r = g.call(t, "download_file", map[string]any{"edge": "files", "path": filepath.Join(edgeDir, "bin"), "max_bytes": 3})
	if d := decode[dlOut](t, r.Structured); r.IsError || d.Encoding != "base64" || d.Content != "AAEC" || !d.Truncated || d.Size != 4 {
		t.Errorf("binary download: %s", r.Text)
	}
	for _, p := range []string{filepath.Join(stateDir, "rpc.log"), "/etc/hostname"} {
		if r := g.call(t, "download_file", map[string]any{"edge": "files", "path": p}); !r.IsError {
			t.Errorf("download of %s allowed: %s", p, r.Text)
		}
	}

	// A 40 MiB file: upload from FILES_DIR, download back into FILES_DIR, compare.
	big := make([]byte, 40<<20)
	rand.Read(big)
	sum := sha256.Sum256(big)
	os.WriteFile(filepath.Join(filesDir, "big.bin"), big, 0o600)
	target := filepath.Join(edgeDir, "big.bin")
	r = g.call(t, "upload_file", map[string]any{"edge": "files", "path": target, "source_path": "big.bin"})
	if u := decode[uploadOut](t, r.Structured); r.IsError || u.Size != int64(len(big)) || u.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("upload from source_path: %s", r.Text)
	}
	r = g.call(t, "download_file", map[string]any{"edge": "files", "path": target, "dest_path": filepath.Join(filesDir, "back", "big.bin")})
	if d := decode[dlOut](t, r.Structured); r.IsError || d.Bytes != int64(len(big)) || d.SHA256 != hex.EncodeToString(sum[:]) || d.DestPath != "back/big.bin" {
		t.Fatalf("download to dest_path: %s", r.Text)
	}
	if got, _ := os.ReadFile(filepath.Join(filesDir, "back", "big.bin")); sha256.Sum256(got) != sum {
		t.Error("downloaded file differs")
	}
	if r := g.call(t, "download_file", map[string]any{"edge": "files", "path": target, "dest_path": "back/big.bin"}); !r.IsError {
		t.Error("dest_path overwritten without overwrite")
	}

	// Escapes from FILES_DIR are refused, by name and by symlink.
	os.Symlink("/etc/passwd", filepath.Join(filesDir, "link"))
	for _, sp := range []string{"../x", "/etc/passwd", "link", filepath.Join(filesDir, "..", "x")} {
		if r := g.call(t, "upload_file", map[string]any{"edge": "files", "path": filepath.Join(edgeDir, "x"), "source_path": sp}); !r.IsError {
			t.Errorf("source_path %q accepted: %s", sp, r.Text)
		}
		if r := g.call(t, "download_file", map[string]any{"edge": "files", "path": target, "dest_path": sp}); !r.IsError {
			t.Errorf("dest_path %q accepted: %s", sp, r.Text)
		}
	}
	if _, err := os.Stat(filepath.Join(edgeDir, "x")); err == nil {
		t.Error("refused upload wrote a file")
	}
	ents, _ := os.ReadDir(filepath.Join(filesDir, "back"))
	if len(ents) != 1 {
		t.Errorf("FILES_DIR/back holds %d entries, want only big.bin (no partial files)", len(ents))
	}
}

// TestRunAsE2E: run_as switches user when the edge allows it, and is refused otherwise.
func TestRunAsE2E(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("run_as needs the edge to run as root")
	}
	if _, err := exec.LookPath("id"); err != nil {
		t.Skip("no id command")
	}
	f := newFixture(t)
	k := f.newEdgeKey(t)
	f.authorize(t, k, "asuser", "")
	g := f.startGateway(t, nil)
	f.startEdge(t, k, g.addr, map[string]string{"EDGE_ALLOW_RUN_AS": "nobody"})
	g.waitConnected(t, k.Fingerprint, nil)
	r := g.call(t, "run_command", map[string]any{"edge": "asuser", "argv": []any{"id", "-un"}, "run_as": "nobody"})
	if out := decode[execOut](t, r.Structured); r.IsError || out.Stdout != "nobody\n" {
		t.Errorf("run_as nobody: %s", r.Text)
	}
	if r := g.call(t, "run_command", map[string]any{"edge": "asuser", "argv": []any{"id"}, "run_as": "root"}); !r.IsError || !strings.Contains(r.Text, "EDGE_ALLOW_RUN_AS") {
		t.Errorf("run_as root: %s", r.Text)
	}
}
