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
