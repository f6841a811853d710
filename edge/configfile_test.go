package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestApplyConfigFile: --config applies the file enroll writes, below the environment and the
// flags; a broken line is named; the command's own --config (enroll) is left alone.
func TestApplyConfigFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "edge.env")
	os.WriteFile(file, []byte("# written by enroll\nEDGE_GATEWAY=gw.example:2222\nexport EDGE_NAME=\"pi7\"\nEDGE_LABELS='site=lab'\n\n"), 0o600)
	bad := filepath.Join(t.TempDir(), "bad.env")
	os.WriteFile(bad, []byte("EDGE_GATEWAY=x\nPATH=/tmp\n"), 0o600)
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		wantArgs []string
		wantEnv  map[string]string
		wantErr  string
	}{
		{"applied", []string{"--config", file, "run"}, nil, []string{"run"},
			map[string]string{"EDGE_GATEWAY": "gw.example:2222", "EDGE_NAME": "pi7", "EDGE_LABELS": "site=lab"}, ""},
		{"environment wins", []string{"--config=" + file}, map[string]string{"EDGE_NAME": "from-env"}, []string{},
			map[string]string{"EDGE_NAME": "from-env", "EDGE_GATEWAY": "gw.example:2222"}, ""},
		{"other flags kept", []string{"--name", "x", "-config", file, "pubkey"}, nil, []string{"--name", "x", "pubkey"}, nil, ""},
		{"enroll's own --config", []string{"enroll", "--config", file, "S"}, nil, []string{"enroll", "--config", file, "S"}, map[string]string{}, ""},
		{"not an edge setting", []string{"--config", bad}, nil, nil, nil, "line 2"},
		{"missing file", []string{"--config", file + ".none"}, nil, nil, nil, "no such file"},
		{"no file named", []string{"--config"}, nil, nil, nil, "needs a file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range tc.env {
				env[k] = v
			}
			lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
			set := func(k, v string) error { env[k] = v; return nil }
			args, err := applyConfigFile(tc.args, lookup, set)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(args, tc.wantArgs) {
				t.Fatalf("args %q, %v; want %q", args, err, tc.wantArgs)
			}
			for k, v := range tc.wantEnv {
				if env[k] != v {
					t.Errorf("%s = %q, want %q", k, env[k], v)
				}
			}
			if tc.name == "enroll's own --config" && len(env) != 0 {
				t.Errorf("enroll's --config applied to the environment: %v", env)
			}
		})
	}
}
