package rpc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// withinTree is a directory layout for the Within tests:
//
//	base/allowed/            a directory the gateway allows
//	base/allowed/escape  ->  outside (a symlink leading out)
//	base/allowed/f.txt       a file inside it
//	base/other/secret        a file beside it
//	outside/secret           a file elsewhere
type withinTree struct{ base, allowed, other, outside string }

func newWithinTree(t *testing.T) withinTree {
	t.Helper()
	w := withinTree{base: t.TempDir(), outside: t.TempDir()}
	w.allowed, w.other = filepath.Join(w.base, "allowed"), filepath.Join(w.base, "other")
	for _, d := range []string{w.allowed, w.other} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(w.allowed, "f.txt"), filepath.Join(w.other, "secret"), filepath.Join(w.outside, "secret")} {
		if err := os.WriteFile(f, []byte("content of "+filepath.Base(f)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(w.outside, filepath.Join(w.allowed, "escape")); err != nil {
		t.Fatal(err)
	}
	return w
}

// withinCase is one request under a gateway confinement, for uploads and downloads alike.
type withinCase struct {
	name   string
	dirs   func(w withinTree) []string // the edge's own EDGE_*_DIRS
	within func(w withinTree) []string
	path   func(w withinTree) string
	code   string
	msg    func(w withinTree) []string // parts of the message
}

func noDirs(withinTree) []string { return nil }

// withinCases are the confinement rules; a file name "new" is one an upload creates and a
// download finds missing, so each direction fills in what success means.
func withinCases(file string) []withinCase {
	allowed := func(w withinTree) []string { return []string{w.allowed} }
	return []withinCase{
		{"inside within", noDirs, allowed,
			func(w withinTree) string { return filepath.Join(w.allowed, file) }, "", nil},
		{"inside within, below the edge's dir", func(w withinTree) []string { return []string{w.base} }, allowed,
			func(w withinTree) string { return filepath.Join(w.allowed, file) }, "", nil},
		{"inside within, the edge's dir narrower", allowed, func(w withinTree) []string { return []string{w.base} },
			func(w withinTree) string { return filepath.Join(w.allowed, file) }, "", nil},
		{"inside one of several", noDirs, func(w withinTree) []string { return []string{w.other + "-nope", w.allowed} },
			func(w withinTree) string { return filepath.Join(w.allowed, file) }, "", nil},
		{"outside within", noDirs, func(w withinTree) []string { return []string{w.allowed, w.base + "/third"} },
			func(w withinTree) string { return filepath.Join(w.other, "secret") }, protocol.CodePolicy,
			func(w withinTree) []string { return []string{"gateway's policy", w.allowed + "," + w.base + "/third"} }},
		{"the within directory itself", noDirs, allowed,
			func(w withinTree) string { return w.allowed }, protocol.CodePolicy,
			func(w withinTree) []string { return []string{w.allowed} }},
		{"within but outside the edge's dirs", func(w withinTree) []string { return []string{w.other} }, allowed,
			func(w withinTree) string { return filepath.Join(w.allowed, file) }, protocol.CodePolicy,
			func(withinTree) []string { return []string{"this edge's"} }},
		{"symlink escape", noDirs, allowed,
			func(w withinTree) string { return filepath.Join(w.allowed, "escape", "secret") }, protocol.CodePolicy, nil},
		{"within names a symlink out of the edge's dir", allowed, func(w withinTree) []string { return []string{filepath.Join(w.allowed, "escape")} },
			func(w withinTree) string { return filepath.Join(w.allowed, "escape", "secret") }, protocol.CodePolicy, nil},
		{"dotdot", noDirs, allowed,
			func(w withinTree) string { return w.allowed + "/../other/secret" }, protocol.CodePolicy, nil},
		{"within not clean", noDirs, func(w withinTree) []string { return []string{w.allowed + "/"} },
			func(w withinTree) string { return filepath.Join(w.allowed, file) }, protocol.CodeBadRequest,
			func(withinTree) []string { return []string{"within[0]", "not a clean path"} }},
	}
}

// checkWithin fails unless o has the case's code and message parts.
func checkWithin(t *testing.T, w withinTree, tc withinCase, o outcome) {
	t.Helper()
	if o.code() != tc.code {
		t.Fatalf("code %q (%v), want %q", o.code(), o.err, tc.code)
	}
	if tc.msg == nil {
		return
	}
	for _, part := range tc.msg(w) {
		if !strings.Contains(o.err.Message, part) {
			t.Errorf("message %q does not contain %q", o.err.Message, part)
		}
	}
}

func TestUploadWithin(t *testing.T) {
	body := []byte("uploaded")
	for _, tc := range withinCases("new") {
		t.Run(tc.name, func(t *testing.T) {
			w := newWithinTree(t)
			h := newHarness(t, Config{UploadDirs: tc.dirs(w)})
			target := tc.path(w)
			_, o := h.upload(protocol.UploadParams{Path: target, Within: tc.within(w), Size: int64(len(body)),
				SHA256: sum(body), Mode: 0o644, Overwrite: true}, body)
			checkWithin(t, w, tc, o)
			got, err := os.ReadFile(target)
			if tc.code == "" && (err != nil || string(got) != string(body)) {
				t.Fatalf("%s holds %q (%v) after the upload", target, got, err)
			}
			if got, _ := os.ReadFile(filepath.Join(w.outside, "secret")); string(got) != "content of secret" {
				t.Fatalf("the file outside was changed: %q", got)
			}
			if got, _ := os.ReadFile(filepath.Join(w.other, "secret")); string(got) != "content of secret" {
				t.Fatalf("the file beside the allowed directory was changed: %q", got)
			}
			if ents, _ := os.ReadDir(w.outside); len(ents) != 1 {
				t.Fatalf("outside holds %d entries, want only secret", len(ents))
			}
		})
	}
}

func TestDownloadWithin(t *testing.T) {
	for _, tc := range withinCases("f.txt") {
		t.Run(tc.name, func(t *testing.T) {
			w := newWithinTree(t)
			h := newHarness(t, Config{DownloadDirs: tc.dirs(w)})
			var res protocol.DownloadResult
			o := h.open(protocol.MethodDownload, protocol.DownloadParams{Path: tc.path(w), Within: tc.within(w), MaxBytes: 1 << 20}).wait(&res)
			checkWithin(t, w, tc, o)
			switch {
			case tc.code == "" && string(o.data) != "content of f.txt":
				t.Fatalf("downloaded %q, result %+v", o.data, res)
			case tc.code != "" && len(o.data) != 0:
				t.Fatalf("a refused download sent %d bytes", len(o.data))
			}
		})
	}
}

// TestUploadWithinCreateDirs: create_dirs makes directories below a Within prefix, inside it.
func TestUploadWithinCreateDirs(t *testing.T) {
	w := newWithinTree(t)
	h := newHarness(t, Config{})
	target := filepath.Join(w.allowed, "a", "b", "f")
	body := []byte("x")
	_, o := h.upload(protocol.UploadParams{Path: target, Within: []string{w.allowed}, Size: 1, SHA256: sum(body),
		Mode: 0o644, CreateDirs: true}, body)
	if o.err != nil {
		t.Fatal(o.err)
	}
	if got, err := os.ReadFile(target); err != nil || string(got) != "x" {
		t.Fatalf("%s: %q, %v", target, got, err)
	}
}
