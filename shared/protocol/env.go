package protocol

import (
	"slices"
	"strings"
)

// loaderEnvNames are variables that change which code a process loads, or what its shell or
// interpreter runs before the program's own code (compared upper-cased).
var loaderEnvNames = []string{
	"PATH", "GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH", "MALLOC_TRACE",
	"NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TMPDIR", "TZDIR", "GLIBC_TUNABLES",
	"BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "IFS", "CDPATH", "PS4", "PROMPT_COMMAND",
	"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PERL5LIB", "PERL5OPT", "PERLLIB", "RUBYLIB",
	"RUBYOPT", "NODE_OPTIONS", "NODE_PATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "GIT_EXEC_PATH",
	"GIT_CONFIG_GLOBAL", "GIT_SSH", "GIT_SSH_COMMAND", "EDITOR", "VISUAL", "PAGER", "SSL_CERT_FILE",
}

// loaderEnvPrefixes are whole families of such variables: the dynamic loader's (LD_, DYLD_),
// the C library's allocator hooks and exported bash functions.
var loaderEnvPrefixes = []string{"LD_", "DYLD_", "MALLOC_", "BASH_FUNC_"}

// ForbiddenEnv reports whether name (in any case) is a variable that changes which code a
// process loads: PATH, the dynamic loader's LD_* and the like. A caller may not set one while
// an executable allowlist is in force, or the allowlist would mean nothing.
func ForbiddenEnv(name string) bool {
	up := strings.ToUpper(name)
	if slices.Contains(loaderEnvNames, up) {
		return true
	}
	for _, p := range loaderEnvPrefixes {
		if strings.HasPrefix(up, p) {
			return true
		}
	}
	return false
}

// safeEnvNames are the only variables a caller may set while an executable allowlist is in
// force: presentation settings (locale, time zone, terminal size and colour) that no common
// program reads as code, a path, a command, a configuration file or a proxy. Everything else
// is refused, because a denylist cannot be complete: PYTHONWARNINGS with BROWSER ran a shell
// through an allowlisted Python program, and APT_CONFIG, OPENSSL_CONF, GIT_CONFIG_*,
// SYSTEMD_EDITOR, HOME or http_proxy change what an allowed program loads or runs. The
// locale categories are listed one by one rather than as LC_*, so that no future or
// program-specific LC_ variable is accepted unseen.
var safeEnvNames = []string{
	"LANG", "LANGUAGE", "LC_ALL", "LC_ADDRESS", "LC_COLLATE", "LC_CTYPE", "LC_IDENTIFICATION",
	"LC_MEASUREMENT", "LC_MESSAGES", "LC_MONETARY", "LC_NAME", "LC_NUMERIC", "LC_PAPER",
	"LC_TELEPHONE", "LC_TIME", "TZ", "TERM", "NO_COLOR", "COLUMNS", "LINES",
}

// SafeEnvNames returns the variables SafeEnv accepts, sorted, for messages and documentation.
func SafeEnvNames() []string { return slices.Sorted(slices.Values(safeEnvNames)) }

// SafeEnv reports whether a caller may set the variable name (exact, case-sensitive, as the
// environment is) while an executable allowlist is in force. It is an allowlist: see
// safeEnvNames for the set and why it is closed. The edge applies it to every exec and job;
// the gateway may apply the same rule to refuse early.
func SafeEnv(name string) bool { return slices.Contains(safeEnvNames, name) }

// SafeEnvValue reports whether value is acceptable for a variable SafeEnv accepts: short,
// printable ASCII from a small set, and never a path (no leading '/', no "..") — glibc reads
// a locale or a TZ value that looks like a path as a file to load. TZ alone may contain '/'
// inside it (Area/City, resolved under the system zoneinfo directory).
func SafeEnvValue(name, value string) bool {
	if len(value) > 128 || strings.HasPrefix(value, "/") || strings.HasPrefix(value, ":/") || strings.Contains(value, "..") {
		return false
	}
	for _, r := range value {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("._-+@,=:", r):
		case r == '/' && name == "TZ":
		default:
			return false
		}
	}
	return true
}
