package rpc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// The tests in this file repeat the attacks of issue 20, items 3 to 6, each bounded in count
// and time, and check that they fail.

// markerScript is a #!/bin/sh program that creates marker when it runs.
func markerScript(marker string) []byte {
	return []byte("#!/bin/sh\ntouch '" + marker + "'\necho pwned\n")
}

// eventually reports whether cond holds within d (polled): for effects of a process that
// may land just after the RPC answered.
func eventually(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// TestProbesRunOnlySystemTools (item 3): a jq uploaded into a directory on the edge's PATH
// is not what get_device_info refresh:true runs; probes take executables from the root-owned
// system directories only.
func TestProbesRunOnlySystemTools(t *testing.T) {
	bin := t.TempDir()
	marker := filepath.Join(t.TempDir(), "ran")
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	h := newHarness(t, Config{ProbeTimeout: 2 * time.Second})
	for _, tool := range []string{"jq", "git", "apt-get", "systemctl"} {
		body := markerScript(marker)
		if _, o := h.upload(protocol.UploadParams{Path: filepath.Join(bin, tool), Size: int64(len(body)), SHA256: sum(body), Mode: 0o755}, body); o.err != nil {
			t.Fatalf("upload %s: %v", tool, o.err)
		}
	}
	var d protocol.DeviceInfo
	if o := h.open(protocol.MethodDeviceInfo, protocol.DeviceInfoParams{Refresh: true}).wait(&d); o.err != nil {
		t.Fatalf("device_info: %v", o.err)
	}
	if eventually(200*time.Millisecond, func() bool { return exists(marker) }) {
		t.Errorf("get_device_info refresh:true ran an uploaded tool from the edge's PATH (%s)", bin)
	}
	for name, p := range d.Capabilities.Tools {
		if strings.HasPrefix(p, bin) {
			t.Errorf("tool %s reported at %s, from the edge's PATH", name, p)
		}
	}
}

func TestTrustedExecutable(t *testing.T) {
	tmp := t.TempDir() // below /tmp, writable by all
	tool := filepath.Join(tmp, "tool")
	if err := os.WriteFile(tool, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		ok   bool
	}{
		{"system shell", "/bin/sh", true},
		{"below a world-writable directory", tool, false},
		{"missing", filepath.Join(tmp, "none"), false},
		{"a directory", "/usr/bin", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := trustedExecutable(tc.path); (err == nil) != tc.ok {
				t.Fatalf("trustedExecutable(%s) = %v, want ok %v", tc.path, err, tc.ok)
			}
		})
	}
	if p, ok := lookSystemTool("sh"); !ok || !strings.HasSuffix(p, "/sh") {
		t.Errorf("lookSystemTool(sh) = %q, %v", p, ok)
	}
	if _, ok := lookSystemTool("../bin/sh"); ok {
		t.Error("lookSystemTool accepted a name with a slash")
	}
}

// TestUploadsCannotSubvertAllowlist (item 3): with EDGE_ALLOW_COMMANDS in force an upload can
// neither replace an allowed executable (with 0755) nor put a program into a directory on the
// edge's PATH; without EDGE_UPLOAD_DIRS it cannot write at all. The allowed program still
// prints "genuine" afterwards.
func TestUploadsCannotSubvertAllowlist(t *testing.T) {
	base := t.TempDir()
	for _, d := range []string{"bin", "path", "data"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tool := filepath.Join(base, "bin", "tool")
	if err := os.WriteFile(tool, []byte("#!/bin/sh\necho genuine\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", filepath.Join(base, "path")+":"+os.Getenv("PATH"))
	allowed, err := ResolveAllowCommands([]string{tool})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		uploadDirs []string
		path       string
		code       string
		msg        string // in the error
	}{
		{"overwrite allowed executable, no EDGE_UPLOAD_DIRS", nil, tool, protocol.CodePolicy, "EDGE_UPLOAD_DIRS"},
		{"anywhere, no EDGE_UPLOAD_DIRS", nil, filepath.Join(base, "data", "x"), protocol.CodePolicy, "uploads are disabled"},
		{"overwrite allowed executable inside EDGE_UPLOAD_DIRS", []string{base}, tool, protocol.CodePolicy, "EDGE_ALLOW_COMMANDS"},
		{"beside allowed executable", []string{base}, filepath.Join(base, "bin", "other"), protocol.CodePolicy, "holds executables"},
		{"into a PATH directory", []string{base}, filepath.Join(base, "path", "jq"), protocol.CodePolicy, "PATH"},
		{"ordinary file inside EDGE_UPLOAD_DIRS", []string{base}, filepath.Join(base, "data", "x"), "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{AllowCommands: allowed, UploadDirs: tc.uploadDirs})
			body := []byte("#!/bin/sh\necho pwned\n")
			_, o := h.upload(protocol.UploadParams{Path: tc.path, Size: int64(len(body)), SHA256: sum(body), Mode: 0o755, Overwrite: true}, body)
			if o.code() != tc.code || (o.err != nil && !strings.Contains(o.err.Message, tc.msg)) {
				t.Fatalf("upload %s: %v, want code %q naming %q", tc.path, o.err, tc.code, tc.msg)
			}
			ex := h.open(protocol.MethodExec, execParams(tool)).wait(nil)
			if ex.err != nil || strings.TrimSpace(string(ex.stdout)) != "genuine" {
				t.Fatalf("allowed executable after the upload: %q %v, want genuine", ex.stdout, ex.err)
			}
		})
	}
}

// TestExecRefusesErrDot (item 3): a "." in the edge's PATH does not make a bare name run a
// file in the working directory, allowlist or not.
func TestExecRefusesErrDot(t *testing.T) {
	cwd := t.TempDir()
	t.Chdir(cwd)
	t.Setenv("PATH", ".:"+os.Getenv("PATH"))
	tests := []struct {
		name string
		argv []string
	}{
		{"bare name through '.'", []string{"dottool"}},
		{"relative path", []string{"./dottool"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "ran")
			if err := os.WriteFile(filepath.Join(cwd, "dottool"), markerScript(marker), 0o755); err != nil {
				t.Fatal(err)
			}
			h := newHarness(t, Config{})
			p := execParams(tc.argv...)
			p.Cwd = cwd
			o := h.open(protocol.MethodExec, p).wait(nil)
			if o.code() != protocol.CodePolicy || exists(marker) {
				t.Fatalf("exec %v: %q %v (ran: %v), want a policy refusal", tc.argv, o.stdout, o.err, exists(marker))
			}
		})
	}
}

// TestBusyboxApplets (item 4): with /…/uptime (a link to a multi-call binary) allowed, a link
// named sh to the same binary is refused, and the allowed applet runs as itself, with argv[0]
// the allowed path, even when named through another link with the same base name.
func TestBusyboxApplets(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, other := t.TempDir(), t.TempDir()
	link := func(target, name string) string {
		t.Helper()
		if err := os.Symlink(target, name); err != nil {
			t.Fatal(err)
		}
		return name
	}
	busybox := link(exe, filepath.Join(bin, "busybox"))
	uptime := link(busybox, filepath.Join(bin, "uptime"))
	sh := link(busybox, filepath.Join(bin, "sh"))
	otherUptime := link(busybox, filepath.Join(other, "uptime"))
	otherSh := link(busybox, filepath.Join(other, "sh"))
	t.Setenv(testBusyboxEnv, "1")
	allowed, err := ResolveAllowCommands([]string{uptime})
	if err != nil {
		t.Fatal(err)
	}
	if len(allowed) != 1 || allowed[0] != uptime {
		t.Errorf("allowlist resolved to %v, want [%s] (the link, not its target)", allowed, uptime)
	}
	h := newHarness(t, Config{AllowCommands: allowed})
	tests := []struct {
		name string
		argv []string
		code string
		out  string
	}{
		{"allowed applet", []string{uptime}, "", "applet uptime \n"},
		{"sh applet of the same binary", []string{sh, "-c", "echo pwned"}, protocol.CodePolicy, ""},
		{"sh applet elsewhere", []string{otherSh, "-c", "echo pwned"}, protocol.CodePolicy, ""},
		{"the multi-call binary itself", []string{busybox, "sh", "-c", "echo pwned"}, protocol.CodePolicy, ""},
		{"allowed applet through another link", []string{otherUptime, "-p"}, "", "applet uptime -p\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := h.open(protocol.MethodExec, execParams(tc.argv...)).wait(nil)
			if o.code() != tc.code || string(o.stdout) != tc.out {
				t.Fatalf("exec %v: stdout %q, %v; want %q, code %q", tc.argv, o.stdout, o.err, tc.out, tc.code)
			}
			if tc.code != "" {
				if _, job := h.startJob(protocol.JobStartParams{Exec: execParams(tc.argv...)}); job.code() != tc.code {
					t.Fatalf("job_start %v: %v, want code %s", tc.argv, job.err, tc.code)
				}
			}
		})
	}
	pr, err := h.srv.prepare(&protocol.ExecParams{Argv: []string{otherUptime}})
	if err != nil || pr.path != uptime || pr.args[0] != uptime {
		t.Errorf("prepare: path %s argv[0] %v (%v), want both %s", pr.path, pr.args, err, uptime)
	}
}

// TestEnvAllowlist (item 5): under an allowlist the caller may set only protocol.SafeEnv
// names, with plain values; the PYTHONWARNINGS+BROWSER shell through an allowed python3 does
// not run.
func TestEnvAllowlist(t *testing.T) {
	echo := mustLookPath(t, "echo")
	allowed := []string{echo}
	python, pyErr := filepath.Abs("/usr/bin/python3")
	if _, err := os.Stat(python); err == nil && pyErr == nil {
		allowed = append(allowed, python)
	}
	allowed, err := ResolveAllowCommands(allowed)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Config{AllowCommands: allowed})
	tests := []struct {
		name, key, value string
		ok               bool
	}{
		{"locale", "LANG", "C.UTF-8", true},
		{"locale category", "LC_TIME", "en_GB.UTF-8", true},
		{"time zone", "TZ", "Europe/Berlin", true},
		{"terminal", "TERM", "xterm-256color", true},
		{"columns", "COLUMNS", "120", true},
		{"no colour", "NO_COLOR", "1", true},
		{"PYTHONWARNINGS", "PYTHONWARNINGS", "ignore::antigravity.Foo", false},
		{"BROWSER", "BROWSER", "/tmp/x", false},
		{"APT_CONFIG", "APT_CONFIG", "/tmp/apt.conf", false},
		{"OPENSSL_CONF", "OPENSSL_CONF", "/tmp/openssl.cnf", false},
		{"GIT_CONFIG_COUNT", "GIT_CONFIG_COUNT", "1", false},
		{"GIT_CONFIG_KEY_0", "GIT_CONFIG_KEY_0", "core.pager", false},
		{"SYSTEMD_EDITOR", "SYSTEMD_EDITOR", "sh", false},
		{"HOME", "HOME", "/tmp", false},
		{"proxy", "https_proxy", "http://evil:3128", false},
		{"lower-case name", "lang", "C", false},
		{"locale as a path", "LANG", "/tmp/locale", false},
		{"locale with ..", "LC_ALL", "../../tmp/x", false},
		{"time zone file", "TZ", "/etc/shadow", false},
		{"time zone ..", "TZ", "../../../tmp/tz", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := execParams(echo, "hi")
			p.Env = map[string]string{tc.key: tc.value}
			o := h.open(protocol.MethodExec, p).wait(nil)
			if tc.ok != (o.err == nil) {
				t.Fatalf("env %s=%q: %v, want ok %v", tc.key, tc.value, o.err, tc.ok)
			}
			if !tc.ok && (o.code() != protocol.CodePolicy || !strings.Contains(o.err.Message, tc.key)) {
				t.Fatalf("refusal %v does not name %s", o.err, tc.key)
			}
		})
	}
	t.Run("PYTHONWARNINGS and BROWSER through python3", func(t *testing.T) {
		if len(allowed) < 2 {
			t.Skip("no /usr/bin/python3")
		}
		dir := t.TempDir()
		marker := filepath.Join(dir, "ran")
		browser := filepath.Join(dir, "browser")
		if err := os.WriteFile(browser, markerScript(marker), 0o755); err != nil {
			t.Fatal(err)
		}
		p := execParams(python, "-c", "pass")
		p.Env = map[string]string{"PYTHONWARNINGS": "ignore::antigravity.Foo", "BROWSER": browser}
		o := h.open(protocol.MethodExec, p).wait(nil)
		if ran := eventually(time.Second, func() bool { return exists(marker) }); ran || o.code() != protocol.CodePolicy {
			t.Fatalf("python3 with PYTHONWARNINGS+BROWSER: %v; the browser ran: %v", o.err, ran)
		}
	})
}

// TestStateDirSymlink (item 6): with EDGE_STATE_DIR a symlink, the real directory is as
// protected as the configured name: rpc.log is not downloadable and a pid file cannot be
// uploaded into a job's journal, through either path.
func TestStateDirSymlink(t *testing.T) {
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "state")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Config{StateDir: link})
	h.open(protocol.MethodExec, execParams("true")).wait(nil) // writes rpc.log
	if !exists(filepath.Join(real, rpcLogFile)) {
		t.Fatal("no rpc.log in the real state directory")
	}
	jobDir := filepath.Join(real, jobsDirName, "0123456789abcdef")
	if err := os.MkdirAll(jobDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, root := range []string{real, link} {
		for _, name := range []string{rpcLogFile, filepath.Join(jobsDirName, "0123456789abcdef", "meta.json")} {
			t.Run("download "+filepath.Join(root, name), func(t *testing.T) {
				if name != rpcLogFile {
					if err := os.WriteFile(filepath.Join(real, name), []byte("{}"), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				o := h.open(protocol.MethodDownload, protocol.DownloadParams{Path: filepath.Join(root, name), MaxBytes: 1 << 20}).wait(nil)
				if o.code() != protocol.CodePolicy || len(o.data) != 0 {
					t.Fatalf("download: %d bytes, %v; want a policy refusal", len(o.data), o.err)
				}
			})
		}
		t.Run("upload a pid file under "+root, func(t *testing.T) {
			body := []byte(`{"pgid":1,"start":0}`)
			path := filepath.Join(root, jobsDirName, "0123456789abcdef", jobPidFile)
			if _, o := h.upload(protocol.UploadParams{Path: path, Size: int64(len(body)), SHA256: sum(body), Mode: 0o600, Overwrite: true}, body); o.code() != protocol.CodePolicy {
				t.Fatalf("upload %s: %v, want a policy refusal", path, o.err)
			}
		})
	}
}

// running reports whether pid is a live process, not a zombie (a killed child of the test
// stays one until it is waited for).
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// TestJobCancelVerifiesGroup (item 6): a forged pid file naming an unrelated process group,
// even one written as the edge would (0600, the edge's user, the victim's true start time),
// does not make cancel_command kill it; a forged exit.json that the supervisor did not write
// (open to others, or another owner) is not believed. The job itself is then cancelled.
func TestJobCancelVerifiesGroup(t *testing.T) {
	h := newHarness(t, Config{})
	st, o := h.startJob(protocol.JobStartParams{Exec: execParams("sleep", "60")})
	if o.err != nil {
		t.Fatal(o.err)
	}
	dir := filepath.Join(h.srv.jobsDir(), st.ID)
	genuine := readPid(t, dir)

	victim := exec.Command("sleep", "60")
	victim.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-victim.Process.Pid, syscall.SIGKILL)
		_ = victim.Wait()
	})
	vs, err := readProcStat(victim.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	forged := []jobPid{
		{Pgid: victim.Process.Pid, Start: vs.start}, // the victim, exactly
		{Pgid: victim.Process.Pid, Start: genuine.Start},
		{Pgid: genuine.Pgid, Start: genuine.Start + 1}, // the job's pid, another start: reused
	}
	for _, rec := range forged {
		if err := writeJSONFile(filepath.Join(dir, jobPidFile), rec); err != nil {
			t.Fatal(err)
		}
		var after protocol.JobStatus
		o := h.open(protocol.MethodJobCancel, protocol.JobRef{ID: st.ID}).wait(&after)
		if o.err == nil || !strings.Contains(o.err.Message, "refusing to kill") {
			t.Errorf("cancel with forged pid %+v: %v, want a refusal", rec, o.err)
		}
		if !running(victim.Process.Pid) {
			t.Fatalf("cancel_command killed the unrelated process group %d (forged pid %+v)", victim.Process.Pid, rec)
		}
	}
	if exists(filepath.Join(dir, jobCancelFile)) {
		t.Error("a refused cancel left the cancel marker")
	}

	forgedExit := []struct {
		name  string
		mode  os.FileMode
		owner int
	}{
		{"open to others", 0o644, os.Geteuid()},
		{"another owner", 0o600, 65534},
	}
	for _, fe := range forgedExit {
		if fe.owner != os.Geteuid() && os.Geteuid() != 0 {
			continue // only root can give a file away
		}
		path := filepath.Join(dir, jobExitFile)
		if err := os.WriteFile(path, []byte(`{"status":"exited","exit_code":0,"finished_at":"2026-01-01T00:00:00Z"}`), fe.mode); err != nil {
			t.Fatal(err)
		}
		_ = os.Chmod(path, fe.mode)
		if err := os.Chown(path, fe.owner, -1); err != nil {
			t.Fatal(err)
		}
		if got := h.getJob(st.ID, 0, 0); got.Status != protocol.JobRunning {
			t.Errorf("forged exit.json (%s) believed: status %s", fe.name, got.Status)
		}
		_ = os.Remove(path)
	}

	if err := writeJSONFile(filepath.Join(dir, jobPidFile), genuine); err != nil {
		t.Fatal(err)
	}
	var cancelled protocol.JobStatus
	if o := h.open(protocol.MethodJobCancel, protocol.JobRef{ID: st.ID}).wait(&cancelled); o.err != nil || cancelled.Status != protocol.JobKilled {
		t.Fatalf("cancel of the genuine job: %+v %v", cancelled, o.err)
	}
}
