package protocol

import (
	"slices"
	"testing"
)

func TestSafeEnv(t *testing.T) {
	tests := []struct {
		name, value string
		nameOK      bool
		valueOK     bool
	}{
		{"LANG", "C.UTF-8", true, true},
		{"LC_ALL", "en_US.UTF-8", true, true},
		{"LC_MESSAGES", "de_DE@euro", true, true},
		{"TZ", "Europe/Berlin", true, true},
		{"TZ", "UTC", true, true},
		{"TERM", "xterm-256color", true, true},
		{"COLUMNS", "80", true, true},
		{"LINES", "24", true, true},
		{"NO_COLOR", "1", true, true},
		{"TZ", "/etc/shadow", true, false},
		{"TZ", ":/etc/shadow", true, false},
		{"TZ", "../../tmp/x", true, false},
		{"LANG", "/tmp/locale", true, false},
		{"LANG", "en/../../x", true, false},
		{"TERM", "../x", true, false},
		{"TERM", "a/b", true, false},
		{"LANG", "C\n", true, false},
		{"PYTHONWARNINGS", "ignore::antigravity.Foo", false, true},
		{"BROWSER", "x", false, true},
		{"APT_CONFIG", "x", false, true},
		{"OPENSSL_CONF", "x", false, true},
		{"GIT_CONFIG_COUNT", "1", false, true},
		{"GIT_CONFIG_KEY_0", "x", false, true},
		{"SYSTEMD_EDITOR", "x", false, true},
		{"HOME", "x", false, true},
		{"http_proxy", "x", false, true},
		{"HTTPS_PROXY", "x", false, true},
		{"PATH", "x", false, true},
		{"LD_PRELOAD", "x", false, true},
		{"lang", "C", false, true},
		{"LC_FOO", "C", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			if got := SafeEnv(tc.name); got != tc.nameOK {
				t.Errorf("SafeEnv(%q) = %v, want %v", tc.name, got, tc.nameOK)
			}
			if got := SafeEnvValue(tc.name, tc.value); got != tc.valueOK {
				t.Errorf("SafeEnvValue(%q, %q) = %v, want %v", tc.name, tc.value, got, tc.valueOK)
			}
		})
	}
	names := SafeEnvNames()
	if !slices.IsSorted(names) || !slices.Contains(names, "LANG") || slices.ContainsFunc(names, ForbiddenEnv) {
		t.Errorf("SafeEnvNames() = %v", names)
	}
}
