// Package policy is the gateway's guardrails: which MCP client has
// which role, and which calls a role may make on which edges. It is pure logic plus a file
// watcher; the MCP tools ask it and enforce the answer.
//
// A policy is YAML:
//
//	clients:
//	  stdio: {role: admin}
//	  http:
//	    - {name: openwebui, token_sha256: "<hex sha256 of the token>", role: viewer}
//	roles:
//	  viewer:
//	    - edges: "env=prod"
//	      tools: [get_status, find_edges, get_device_info, run_command, download_file]
//	      commands: [uptime, df, journalctl]
//	      shell: false
//	      paths: [/var/log/]
//	      max_timeout_seconds: 60
//	  admin:
//	    - {edges: "*", tools: ["*"], approval: [upload_file]}
//	approval_timeout_seconds: 120
//
// A call is allowed when one rule of the caller's role allows all of it:
//
//   - edges: a label Selector over the edge's gateway-bound labels ("*" or absent = every
//     edge). Tools that address no edge (Request.Edge "" and no labels) skip it.
//   - tools: the tool's name, or "*". Required.
//   - commands (absent = any): argv[0] must be one of them. A bare name matches only the
//     identical bare argv[0], which the edge resolves with its own PATH; an absolute path
//     matches only the identical path after cleaning, and an argv[0] with a ".." element
//     never matches. Where commands apply, a shell string (Request.Command) is refused and so
//     is setting PATH or any loader variable (LD_*, BASH_ENV, PYTHONPATH, …: protocol.ForbiddenEnv,
//     the list the edge applies).
//   - shell (absent = allowed unless commands is set): false refuses shell strings.
//     `shell: true` together with commands is a Parse error.
//   - paths (absent = any): the edge path must be absolute, without a ".." element, and
//     after cleaning equal to or under one of the prefixes (/var/log/ covers /var/log and
//     /var/log/syslog, not /var/logs/x). Decision.Paths hands them to the edge to enforce again
//     (symlinks are only visible there).
//   - max_timeout_seconds (absent = no limit): a call asking more is refused.
//   - approval: tools of the rule that wait for a person; "*" = all of them. Among several
//     allowing rules, one without approval is preferred.
//
// Files are decoded strictly: unknown or duplicate keys, a key without a value (so a
// `commands:` whose items were commented out cannot mean "any command"), an empty
// commands or paths list, and a second YAML document are errors, each one line with the
// file's line number. Without clients.stdio the stdio client has no role and no access;
// without a POLICY_FILE, AllowAll makes every client admin. HTTP client names "http" and
// "stdio" are reserved for the gateway's own clients (MCP_HTTP_TOKEN is client "http", role
// admin, which the file must then define to give it any access).
//
// A Policy is immutable. Watcher keeps the current one of a file and swaps in each good
// change; a broken or deleted file keeps the last good policy.
package policy
