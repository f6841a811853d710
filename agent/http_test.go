package main

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/tools"
)

// TestHTTPHandlerTokens checks which path wants which token, and that a refusal never reaches
// the MCP handler nor reads the body.
func TestHTTPHandlerTokens(t *testing.T) {
	reached := 0
	mcpH := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached++; io.WriteString(w, "mcp") })
	metricsH := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "metrics") })
	for _, tc := range []struct {
		name         string
		metricsToken string
		path, auth   string
		want         int
	}{
		{"healthz open", "", "/healthz", "", 200},
		{"mcp no token", "", "/mcp", "", 401},
		{"mcp wrong token", "", "/mcp", "Bearer nope", 401},
		{"mcp token without Bearer", "", "/mcp", "secret", 401},
		{"mcp token", "", "/mcp", "Bearer secret", 200},
		{"metrics with http token", "", "/metrics", "Bearer secret", 200},
		{"metrics no token", "", "/metrics", "", 401},
		{"metrics own token", "m", "/metrics", "Bearer m", 200},
		{"metrics http token refused when METRICS_TOKEN set", "m", "/metrics", "Bearer secret", 401},
		{"unknown path", "", "/other", "Bearer secret", 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &config{HTTPToken: "secret", MetricsToken: tc.metricsToken, MaxUploadBytes: 1 << 20}
			access := tools.Access{HTTPToken: cfg.HTTPToken}
			h := newHTTPHandler(cfg, access.ClientKnown, mcpH, metricsH, slog.New(slog.DiscardHandler))
			before := reached
			body := &countingBody{Reader: strings.NewReader(`{"jsonrpc":"2.0"}`)}
			req := httptest.NewRequest(http.MethodPost, tc.path, body)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.want, rec.Body.String())
			}
			if tc.want == 401 {
				if reached != before {
					t.Errorf("a refused request reached the MCP handler")
				}
				if body.n > 0 {
					t.Errorf("a refused request's body was read (%d bytes)", body.n)
				}
				if rec.Header().Get("WWW-Authenticate") == "" || rec.Header().Get("Connection") != "close" {
					t.Errorf("401 without WWW-Authenticate or Connection: close: %v", rec.Header())
				}
			}
		})
	}
}

type countingBody struct {
	io.Reader
	n int
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	b.n += n
	return n, err
}

// TestHealthcheck runs the subcommand against a live, a failing and a closed endpoint.
func TestHealthcheck(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	}))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer bad.Close()
	tlsOK := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer tlsOK.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	port := func(u string) string {
		_, p, _ := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(u, "https://"), "http://"))
		return p
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want int
	}{
		{"healthy, any address", map[string]string{"MCP_HTTP_ADDR": ":" + port(ok.URL)}, 0},
		{"healthy, loopback", map[string]string{"MCP_HTTP_ADDR": strings.TrimPrefix(ok.URL, "http://")}, 0},
		{"healthy over TLS", map[string]string{"MCP_HTTP_ADDR": "0.0.0.0:" + port(tlsOK.URL), "MCP_HTTP_TLS_CERT": "/c"}, 0},
		{"unhealthy", map[string]string{"MCP_HTTP_ADDR": strings.TrimPrefix(bad.URL, "http://")}, 1},
		{"nothing listening", map[string]string{"MCP_HTTP_ADDR": closed}, 1},
		{"bad address", map[string]string{"MCP_HTTP_ADDR": "nope"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr strings.Builder
			if got := healthcheck(func(k string) string { return tc.env[k] }, &stderr); got != tc.want {
				t.Errorf("exit %d, want %d; stderr: %s", got, tc.want, stderr.String())
			}
		})
	}
}

// TestHTTPOrigin: a browser request from another site is refused before the MCP handler;
// clients that send no Origin, the gateway's own origin and a local tool on another loopback
// port pass.
func TestHTTPOrigin(t *testing.T) {
	reached := 0
	mcpH := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached++ })
	cfg := &config{HTTPToken: "secret", MaxUploadBytes: 1 << 20}
	access := tools.Access{HTTPToken: cfg.HTTPToken}
	h := newHTTPHandler(cfg, access.ClientKnown, mcpH, nil, slog.New(slog.DiscardHandler))
	for _, tc := range []struct {
		name, host, origin string
		want               int
	}{
		{"no origin", "gw.example:3333", "", 200},
		{"same origin", "gw.example:3333", "https://gw.example:3333", 200},
		{"loopback tool on another port", "127.0.0.1:3333", "http://localhost:6274", 200},
		{"other site", "gw.example:3333", "https://evil.example", 403},
		{"rebinding: other site to loopback host", "127.0.0.1:3333", "http://evil.example", 403},
		{"loopback origin to a public host", "gw.example:3333", "http://127.0.0.1:6274", 403},
		{"null origin", "gw.example:3333", "null", 403},
		{"not a URL scheme", "gw.example:3333", "file://x", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := reached
			req := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader("{}"))
			req.Host = tc.host
			req.Header.Set("Authorization", "Bearer secret")
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.want, rec.Body)
			}
			if got := reached - before; (tc.want == 200) != (got == 1) {
				t.Errorf("MCP handler reached %d times, want %v", got, tc.want == 200)
			}
			if tc.want == 403 && !strings.Contains(rec.Body.String(), "is not allowed") {
				t.Errorf("refusal does not say why: %q", rec.Body)
			}
		})
	}
}
