package protocol

import (
	"fmt"
	"strings"
	"testing"
)

// checkValidate fails unless err is nil for want "" or, otherwise, an error whose message
// contains want and is one line.
func checkValidate(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("Validate() = %v, want nil", err)
	case want != "" && err == nil:
		t.Fatalf("Validate() = nil, want an error containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("Validate() = %q, want it to contain %q", err, want)
	case err != nil && strings.ContainsAny(err.Error(), "\n\x00"):
		t.Fatalf("Validate() message %q is not one printable line", err)
	}
}

func TestExecParamsValidate(t *testing.T) {
	exec := func(edit func(p *ExecParams)) ExecParams {
		p := ExecParams{Argv: []string{"echo", "hi"}, TimeoutMs: 1000, MaxOutputBytes: 10}
		edit(&p)
		return p
	}
	many := make([]string, MaxArgv+1)
	for i := range many {
		many[i] = "x"
	}
	bigEnv := map[string]string{}
	for i := range MaxEnv + 1 {
		bigEnv[fmt.Sprintf("V%d", i)] = ""
	}
	half := strings.Repeat("a", MaxArgvBytes/2)
	tests := []struct {
		name string
		p    ExecParams
		want string // "" = valid; else part of the message
	}{
		{"argv", exec(func(*ExecParams) {}), ""},
		{"command", exec(func(p *ExecParams) { p.Argv, p.Command = nil, "echo hi | wc -c" }), ""},
		{"both", exec(func(p *ExecParams) { p.Command = "true" }), "exactly one of argv or command"},
		{"neither", exec(func(p *ExecParams) { p.Argv = nil }), "exactly one of argv or command"},
		{"too many argv", exec(func(p *ExecParams) { p.Argv = many }), fmt.Sprintf("argv has %d elements (max %d)", MaxArgv+1, MaxArgv)},
		{"argv[0] empty", exec(func(p *ExecParams) { p.Argv = []string{"", "x"} }), "argv[0] is empty"},
		{"NUL in argv[0]", exec(func(p *ExecParams) { p.Argv = []string{"ec\x00ho"} }), "argv[0] contains a NUL byte"},
		{"NUL in argv[3]", exec(func(p *ExecParams) { p.Argv = []string{"echo", "a", "b", "c\x00"} }), "argv[3] contains a NUL byte"},
		{"argv at the byte bound", exec(func(p *ExecParams) { p.Argv = []string{half, half} }), ""},
		{"argv over the byte bound", exec(func(p *ExecParams) { p.Argv = []string{half, half, "x"} }),
			fmt.Sprintf("argv is %d bytes in total (max %d)", MaxArgvBytes+1, MaxArgvBytes)},
		{"command at the bound", exec(func(p *ExecParams) { p.Argv, p.Command = nil, strings.Repeat("a", MaxStringLen) }), ""},
		{"command too long", exec(func(p *ExecParams) { p.Argv, p.Command = nil, strings.Repeat("a", MaxStringLen+1) }),
			fmt.Sprintf("command is %d bytes (max %d)", MaxStringLen+1, MaxStringLen)},
		{"NUL in command", exec(func(p *ExecParams) { p.Argv, p.Command = nil, "echo a\x00b" }), "command contains a NUL byte"},
		{"cwd", exec(func(p *ExecParams) { p.Cwd = "/tmp" }), ""},
		{"cwd too long", exec(func(p *ExecParams) { p.Cwd = "/" + strings.Repeat("d", MaxPathLen) }),
			fmt.Sprintf("cwd is %d bytes (max %d)", MaxPathLen+1, MaxPathLen)},
		{"NUL in cwd", exec(func(p *ExecParams) { p.Cwd = "/tmp\x00/x" }), "cwd contains a NUL byte"},
		{"env", exec(func(p *ExecParams) { p.Env = map[string]string{"FOO": "b a$r"} }), ""},
		{"too many env", exec(func(p *ExecParams) { p.Env = bigEnv }), fmt.Sprintf("env has %d entries (max %d)", MaxEnv+1, MaxEnv)},
		{"env name with =", exec(func(p *ExecParams) { p.Env = map[string]string{"A=B": "c"} }), `env name "A=B" is invalid`},
		{"empty env name", exec(func(p *ExecParams) { p.Env = map[string]string{"": "c"} }), `env name "" is invalid`},
		{"env name with NUL", exec(func(p *ExecParams) { p.Env = map[string]string{"A\x00": "c"} }), "is invalid"},
		{"env value too long", exec(func(p *ExecParams) { p.Env = map[string]string{"BIG": strings.Repeat("v", MaxStringLen+1)} }),
			fmt.Sprintf(`env "BIG": value is %d bytes (max %d)`, MaxStringLen+1, MaxStringLen)},
		{"NUL in env value", exec(func(p *ExecParams) { p.Env = map[string]string{"A": "ok", "B": "x\x00y"} }), `env "B": value contains a NUL byte`},
		{"no timeout", exec(func(p *ExecParams) { p.TimeoutMs = 0 }), "timeout_ms must be positive"},
		{"no output bound", exec(func(p *ExecParams) { p.MaxOutputBytes = 0 }), "max_output_bytes must be positive"},
		{"run_as", exec(func(p *ExecParams) { p.RunAs = "www-data" }), ""},
		{"bad run_as", exec(func(p *ExecParams) { p.RunAs = "../root" }), "run_as"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { checkValidate(t, tc.p.Validate(), tc.want) })
	}
}

func TestJobStartParamsValidate(t *testing.T) {
	ok := ExecParams{Argv: []string{"cat"}, TimeoutMs: 1000, MaxOutputBytes: 10}
	nul := ok
	nul.Argv = []string{"cat", "a\x00"}
	frames := ok
	frames.Stdin = true
	tests := []struct {
		name string
		p    JobStartParams
		want string
	}{
		{"argv and stdin", JobStartParams{Exec: ok, StdinData: "input\x00 may be binary"}, ""},
		{"stdin as frames", JobStartParams{Exec: frames}, "stdin is sent inline"},
		{"stdin too long", JobStartParams{Exec: ok, StdinData: strings.Repeat("i", MaxJSONFrame/2+1)}, "stdin_data is"},
		{"exec rules apply", JobStartParams{Exec: nul}, "argv[1] contains a NUL byte"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { checkValidate(t, tc.p.Validate(), tc.want) })
	}
}

// withinCases are the confinement rules UploadParams and DownloadParams share.
func withinCases() []struct {
	name   string
	path   string
	within []string
	want   string
} {
	tooMany := make([]string, MaxWithin+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("/srv/d%d", i)
	}
	long := "/" + strings.Repeat("p", MaxPathLen)
	return []struct {
		name   string
		path   string
		within []string
		want   string
	}{
		{"plain", "/srv/app/f", nil, ""},
		{"within", "/srv/app/f", []string{"/srv/app", "/var/log"}, ""},
		{"within root", "/srv/app/f", []string{"/"}, ""},
		{"relative path", "srv/app/f", nil, `path "srv/app/f" must be absolute`},
		{"empty path", "", nil, `path "" must be absolute`},
		{"path too long", long, nil, fmt.Sprintf("path is %d bytes (max %d)", len(long), MaxPathLen)},
		{"NUL in path", "/srv/a\x00b", nil, "path contains a NUL byte"},
		{"too many within", "/srv/d1/f", tooMany, fmt.Sprintf("within has %d entries (max %d)", MaxWithin+1, MaxWithin)},
		{"relative within", "/srv/app/f", []string{"/srv", "srv/app"}, `within[1] "srv/app" must be absolute`},
		{"empty within entry", "/srv/app/f", []string{""}, `within[0] "" must be absolute`},
		{"within not clean", "/srv/app/f", []string{"/srv/app/"}, `within[0] "/srv/app/" is not a clean path: use "/srv/app"`},
		{"within with dotdot", "/srv/app/f", []string{"/srv/app/../etc"}, `use "/srv/etc"`},
		{"NUL in within", "/srv/app/f", []string{"/srv/a\x00"}, "within[0] contains a NUL byte"},
		{"within too long", "/srv/app/f", []string{long}, fmt.Sprintf("within[0] is %d bytes (max %d)", len(long), MaxPathLen)},
	}
}

func TestUploadParamsValidate(t *testing.T) {
	sha := strings.Repeat("a", 64)
	for _, tc := range withinCases() {
		t.Run(tc.name, func(t *testing.T) {
			p := UploadParams{Path: tc.path, Within: tc.within, SHA256: sha, Mode: 0o644}
			checkValidate(t, p.Validate(), tc.want)
		})
	}
	tests := []struct {
		name string
		p    UploadParams
		want string
	}{
		{"trailer", UploadParams{Path: "/x", SHA256Trailer: true}, ""},
		{"negative size", UploadParams{Path: "/x", SHA256: sha, Size: -1}, "size is negative"},
		{"bad sha256", UploadParams{Path: "/x", SHA256: "abc"}, "sha256 must be 64 hex characters"},
		{"sha256 and trailer", UploadParams{Path: "/x", SHA256: sha, SHA256Trailer: true}, "sha256 must be empty"},
		{"file type bits", UploadParams{Path: "/x", SHA256: sha, Mode: 0o100644}, "bits beyond permissions"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { checkValidate(t, tc.p.Validate(), tc.want) })
	}
}

func TestDownloadParamsValidate(t *testing.T) {
	for _, tc := range withinCases() {
		t.Run(tc.name, func(t *testing.T) {
			p := DownloadParams{Path: tc.path, Within: tc.within, MaxBytes: 10}
			checkValidate(t, p.Validate(), tc.want)
		})
	}
	t.Run("negative max_bytes", func(t *testing.T) {
		checkValidate(t, (&DownloadParams{Path: "/x", MaxBytes: -1}).Validate(), "max_bytes is negative")
	})
}

func TestForbiddenEnv(t *testing.T) {
	tests := []struct {
		name      string
		forbidden bool
	}{
		{"PATH", true},
		{"path", true},
		{"LD_PRELOAD", true},
		{"ld_library_path", true},
		{"DYLD_INSERT_LIBRARIES", true},
		{"GCONV_PATH", true},
		{"gconv_path", true},
		{"BASH_ENV", true},
		{"BASH_FUNC_ls%%", true},
		{"MALLOC_CHECK_", true},
		{"PYTHONPATH", true},
		{"NODE_OPTIONS", true},
		{"HOME", false},
		{"LANG", false},
		{"FOO", false},
		{"XPATH", false},
		{"MY_LD_PRELOAD", false},
	}
	for _, tc := range tests {
		if got := ForbiddenEnv(tc.name); got != tc.forbidden {
			t.Errorf("ForbiddenEnv(%q) = %v, want %v", tc.name, got, tc.forbidden)
		}
	}
}
