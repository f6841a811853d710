package main

import (
	"net"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestLoadConfigNamesTheBadVariable(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string // substring of the error; "" = valid
	}{
		{map[string]string{}, ""},
		{map[string]string{"GATEWAY_MODE": "sideways"}, "GATEWAY_MODE"},
		{map[string]string{"GATEWAY_MODE": "forward"}, ""},
		{map[string]string{"GATEWAY_MODE": "both"}, ""},
		{map[string]string{"SSH_PORT": "70000"}, "SSH_PORT"},
		{map[string]string{"SSH_PORT": "abc"}, "SSH_PORT"},
		{map[string]string{"SSH_BIND": "not-an-ip"}, "SSH_BIND"},
		{map[string]string{"KEEPALIVE_INTERVAL": "soon"}, `KEEPALIVE_INTERVAL="soon" is not a duration: a number with a unit, e.g. 30s, 5m or 1h`},
		{map[string]string{"SSH_PORT": "2k"}, `SSH_PORT="2k" is not a whole number, e.g. 2222`},
		{map[string]string{"SSH_MAX_STARTUPS": "10:30"}, "SSH_MAX_STARTUPS"},
		{map[string]string{"SSH_MAX_STARTUPS": "100:150:200"}, "SSH_MAX_STARTUPS"},
		{map[string]string{"SSH_MAX_STARTUPS": "100:30:50"}, "SSH_MAX_STARTUPS"},
		{map[string]string{"SSH_MAX_STARTUPS": "10:30:100"}, ""},
		{map[string]string{"SSH_PER_SOURCE_MAX_STARTUPS": "0"}, "SSH_PER_SOURCE_MAX_STARTUPS"},
		{map[string]string{"SSH_PER_SOURCE_MAX_STARTUPS": "500"}, ""},
		{map[string]string{"GATEWAY_ID": "gw.1"}, "GATEWAY_ID"},
		{map[string]string{"GATEWAY_ID": strings.Repeat("g", 65)}, "GATEWAY_ID"},
		{map[string]string{"GATEWAY_ID": "gw-1_a"}, ""},
		{map[string]string{"CLUSTER_NATS_CREDS": "/x.creds"}, "CLUSTER_NATS_URL"},
		{map[string]string{"CLUSTER_NATS_URL": "nats://127.0.0.1:4222", "GATEWAY_MODE": "forward"}, "CLUSTER_NATS_URL"},
		{map[string]string{"CLUSTER_NATS_URL": "nats://127.0.0.1:4222"}, ""},
		{map[string]string{"EXEC_TIMEOUT": "2h"}, "EXEC_TIMEOUT"},
		{map[string]string{"MCP_TRANSPORT": "carrier-pigeon"}, "MCP_TRANSPORT"},
		{map[string]string{"MCP_TRANSPORT": "http"}, "MCP_HTTP_TOKEN"},
		{map[string]string{"MCP_TRANSPORT": "http", "MCP_HTTP_TOKEN": "t"}, ""},
		{map[string]string{"MCP_TRANSPORT": "http", "MCP_HTTP_TOKEN": "t", "MCP_HTTP_TLS_CERT": "/c"}, "MCP_HTTP_TLS_KEY"},
		{map[string]string{"MCP_TRANSPORT": "http", "MCP_HTTP_TOKEN": "t", "MCP_HTTP_TLS_CERT": "/nonexistent/c", "MCP_HTTP_TLS_KEY": "/nonexistent/k"}, "MCP_HTTP_TLS_CERT"},
		{map[string]string{"MAX_OUTPUT_BYTES": "0"}, "MAX_OUTPUT_BYTES"},
		{map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{map[string]string{"PUBLIC_ADDR": "nohost"}, "PUBLIC_ADDR"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(keysOf(tc.env), ","), func(t *testing.T) {
			t.Setenv("KEYS_DIR", t.TempDir())
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := loadConfig()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid settings refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v does not name %s", err, tc.want)
			}
		})
	}
}

func TestDefaultsFollowKeysAndStateDirs(t *testing.T) {
	t.Setenv("KEYS_DIR", "/k")
	t.Setenv("STATE_DIR", "/s")
	c, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		c.HostKeyFile:    "/k/host_ed25519",
		c.AuthorizedKeys: "/k/authorized_keys",
		c.AuditLog:       "/s/audit.jsonl",
		c.FilesDir:       "/s/files",
	}
	for got, w := range want {
		if got != w {
			t.Errorf("got %s, want %s", got, w)
		}
	}
	addr := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 4022}
	if got := c.publicAddr(addr); got != "127.0.0.1:4022" {
		t.Errorf("publicAddr = %s", got)
	}
}

func keysOf(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	if len(ks) == 0 {
		return []string{"defaults"}
	}
	return ks
}

// TestHelpNamesEverySetting: --help lists every variable the gateway reads.
func TestHelpNamesEverySetting(t *testing.T) {
	typ := reflect.TypeOf(config{})
	for i := range typ.NumField() {
		name := typ.Field(i).Tag.Get("envconfig")
		if name == "" {
			continue
		}
		if !regexp.MustCompile(`\b` + name + `\b`).MatchString(usage) {
			t.Errorf("--help does not name %s", name)
		}
	}
}
