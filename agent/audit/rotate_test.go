package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func verifyFiles(t *testing.T, files []string) (int, error) {
	t.Helper()
	total, prev := 0, ""
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n, last, err := VerifyFrom(bytes.NewReader(b), prev, i > 0)
		total += n
		if err != nil {
			return total, err
		}
		prev = last
	}
	return total, nil
}

func TestRotationKeepsTheChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := OpenSize(path, 2000, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 40 {
		l.Write(Event{Event: "intent", Tool: "run_command", Argv: []string{"echo", strings.Repeat("x", 50)}})
	}
	l.Close()
	// Reopening goes on with the same chain, also right after a rotation.
	l, err = OpenSize(path, 2000, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		l.Write(Event{Event: "outcome"})
	}
	l.Close()
	files, err := Files(path)
	if err != nil || len(files) < 3 {
		t.Fatalf("files = %v, %v; want several", files, err)
	}
	for _, f := range files {
		if st, _ := os.Stat(f); st.Size() > 2000 || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %d bytes, mode %v", f, st.Size(), st.Mode())
		}
	}
	if n, err := verifyFiles(t, files); err != nil || n != 50 {
		t.Fatalf("verify = %d, %v; want 50 lines intact", n, err)
	}
	// A missing middle file breaks the chain.
	if _, err := verifyFiles(t, append([]string{files[0]}, files[2:]...)); err == nil || !strings.Contains(err.Error(), "removed") {
		t.Fatalf("verify without file 2 = %v", err)
	}
	// An edited line breaks it too.
	b, _ := os.ReadFile(files[1])
	os.WriteFile(files[1], bytes.Replace(b, []byte("echo"), []byte("ecHo"), 1), 0o600)
	if _, err := verifyFiles(t, files); err == nil {
		t.Fatal("an edited line passed verification")
	}
}
