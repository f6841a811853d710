package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestChainSurvivesReopenAndDetectsEdits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Write(Event{Event: "intent", RequestID: "r1", Tool: "run_command", Argv: []string{"true"}})
	l.Write(Event{Event: "outcome", RequestID: "r1", ExitCode: Ptr(0), Outcome: "ok"})
	l.Close()
	// Reopen: the chain continues from the last line on disk.
	l, err = Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Write(Event{Event: "edge_connect", Edge: "pi"})
	l.Close()

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := Verify(bytes.NewReader(data)); err != nil || n != 3 {
		t.Fatalf("Verify = %d, %v; want 3 lines, no error", n, err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}

	lines := strings.SplitAfter(string(data), "\n")
	tests := []struct {
		name string
		log  string
	}{
		{"edited line", lines[0] + strings.Replace(lines[1], `"ok"`, `"error"`, 1) + lines[2]},
		{"removed line", lines[0] + lines[2]},
		{"garbage", lines[0] + "not json\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Verify(strings.NewReader(tc.log)); err == nil {
				t.Fatal("Verify accepted a tampered log")
			}
		})
	}
}

func TestNilLoggerDiscards(t *testing.T) {
	var l *Logger
	l.Write(Event{Event: "intent"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}
