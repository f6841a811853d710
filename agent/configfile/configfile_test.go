package configfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "ok")
	big := filepath.Join(dir, "big")
	link := filepath.Join(dir, "link")
	os.WriteFile(ok, []byte("hello"), 0o600)
	os.WriteFile(big, []byte("0123456789"), 0o600)
	os.Symlink(ok, link)
	for _, tc := range []struct {
		name, path, want string
		missing          bool
	}{
		{"regular file", ok, "", false},
		{"symlink followed", link, "", false},
		{"too large", big, "test file " + big + " is larger than 8 bytes", false},
		{"directory", dir, "is not a regular file", false},
		{"missing", filepath.Join(dir, "none"), "read test file", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, st, err := Read(tc.path, "test file", 8)
			switch {
			case tc.want == "" && (err != nil || string(data) != "hello" || !st.Exists || st != StatStamp(tc.path)):
				t.Fatalf("Read = %q, %+v, %v", data, st, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || st != (Stamp{})):
				t.Fatalf("err = %v, want one containing %q and a zero stamp", err, tc.want)
			case tc.missing != errors.Is(err, fs.ErrNotExist):
				t.Fatalf("missing file: errors.Is(err, fs.ErrNotExist) = %v", !tc.missing)
			}
		})
	}
	before := StatStamp(ok)
	os.WriteFile(ok+".new", []byte("other"), 0o600)
	os.Rename(ok+".new", ok)
	if StatStamp(ok) == before {
		t.Error("a file renamed into place has the old stamp")
	}
	if StatStamp(filepath.Join(dir, "none")) != (Stamp{}) {
		t.Error("a missing file's stamp is not zero")
	}
}
