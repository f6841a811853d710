package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

const (
	httpToken    = "e2e-http-token-0123456789"
	metricsToken = "e2e-metrics-token"
	// refuseBound is a generous bound on answering a request with a wrong token: it is
	// refused before any MCP work, so anything near it means a worker was held.
	refuseBound = 2 * time.Second
)

// httpGateway is a gateway started with MCP_TRANSPORT=http, and its base URL.
type httpGateway struct {
	*gateway
	base   string // scheme://127.0.0.1:port
	client *http.Client
}

// startHTTPGateway runs the gateway over HTTP (TLS when certFile is set) on a port the kernel
// picks, and connects an mcp-go streamable HTTP client with the bearer token. The HTTP
// address is the one thing read from the log: it is needed before any MCP call can be made.
func (f *fixture) startHTTPGateway(t *testing.T, certFile, keyFile string, pool *x509.CertPool) *httpGateway {
	t.Helper()
	env := map[string]string{
		"MCP_TRANSPORT":  "http",
		"MCP_HTTP_ADDR":  "127.0.0.1:0",
		"MCP_HTTP_TOKEN": httpToken,
		"METRICS_TOKEN":  metricsToken,
	}
	scheme := "http"
	hc := &http.Client{Transport: &http.Transport{}, Timeout: callTimeout}
	if certFile != "" {
		env["MCP_HTTP_TLS_CERT"], env["MCP_HTTP_TLS_KEY"] = certFile, keyFile
		scheme = "https"
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	g := f.spawnGateway(t, env)
	var addr string
	if !waitFor(10*time.Second, func() bool { addr = loggedAddr(g.Stderr(), "mcp http listening"); return addr != "" }) {
		t.Fatalf(`gateway never logged {"msg":"mcp http listening","addr":…}:\n%s`, tail(g.Stderr(), 3000))
	}
	h := &httpGateway{gateway: g, base: scheme + "://" + addr, client: hc}
	c, err := h.dial(t, httpToken)
	if err != nil {
		t.Fatalf("MCP over HTTP with the token: %v\n%s", err, tail(g.Stderr(), 3000))
	}
	g.connect(t, c)
	return h
}

// dial makes and starts an MCP client with token ("" sends none); it is closed at cleanup.
func (h *httpGateway) dial(t *testing.T, token string) (*client.Client, error) {
	t.Helper()
	opts := []transport.StreamableHTTPCOption{transport.WithHTTPBasicClient(h.client)}
	if token != "" {
		opts = append(opts, transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + token}))
	}
	c, err := client.NewStreamableHttpClient(h.base+"/mcp", opts...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// newClient connects and initializes an MCP client with token ("" sends none).
func (h *httpGateway) newClient(t *testing.T, token string) (*client.Client, error) {
	t.Helper()
	c, err := h.dial(t, token)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := localfleet.Initialize(ctx, c); err != nil {
		return nil, err
	}
	return c, nil
}

// loggedAddr is the addr of the first JSON log line {"msg":msg,"addr":…} in log, or "".
func loggedAddr(log, msg string) string {
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == msg && line.Addr != "" {
			return line.Addr
		}
	}
	return ""
}

// get does one HTTP request with an optional bearer token and returns status, body, duration.
func (h *httpGateway) get(t *testing.T, method, path, token string) (int, string, time.Duration) {
	t.Helper()
	code, body, d, err := h.do(method, path, token)
	if err != nil {
		t.Fatal(err)
	}
	return code, body, d
}

// do is get for any goroutine.
func (h *httpGateway) do(method, path, token string) (int, string, time.Duration, error) {
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
	}
	req, err := http.NewRequest(method, h.base+path, body)
	if err != nil {
		return 0, "", 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	start := time.Now()
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, "", 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), time.Since(start), nil
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns a pool trusting it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mcp-ssh-gateway e2e"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// metricValue finds `name{labels} value` (labels as Prometheus prints them, "" for none).
func metricValue(text, name, labels string) (float64, bool) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name+labels) + ` ([0-9.eE+-]+)$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

// TestHTTPTransport drives the gateway over streamable HTTP, plain and with TLS: MCP with the
// token works end to end (a command on a live edge), without it or with a wrong one it is
// refused at once, /healthz is open, /metrics wants its token and counts what happened, the
// healthcheck subcommand works, and SIGTERM stops the gateway with exit 0.
func TestHTTPTransport(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"plain", false}, {"tls", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			k := f.newEdgeKey(t)
			f.authorize(t, k, "web", "")
			var certFile, keyFile string
			var pool *x509.CertPool
			if tc.tls {
				certFile, keyFile, pool = selfSigned(t, f.Dir)
			}
			h := f.startHTTPGateway(t, certFile, keyFile, pool)
			f.startEdge(t, k, h.addr, nil)
			h.waitConnected(t, k.Fingerprint, nil)

			r := h.call(t, "run_command", map[string]any{"edge": "web", "argv": []any{"echo", "over-http"}})
			if out := decode[execOut](t, r.Structured); r.IsError || out.ExitCode != 0 || out.Stdout != "over-http\n" {
				t.Fatalf("run_command over HTTP: isError=%v %+v", r.IsError, out)
			}

			// Without the token, and with a wrong one, the MCP client is refused.
			for _, token := range []string{"", "wrong-token"} {
				start := time.Now()
				_, err := h.newClient(t, token)
				if err == nil {
					t.Fatalf("MCP client with token %q was served", token)
				}
				if !errors.Is(err, transport.ErrAuthorizationRequired) && !errors.Is(err, transport.ErrUnauthorized) {
					t.Errorf("token %q: error %v, want 401 unauthorized", token, err)
				}
				if d := time.Since(start); d > refuseBound {
					t.Errorf("token %q refused after %v, want under %v", token, d, refuseBound)
				}
			}

			// Many wrong tokens at once are all refused quickly, and a good call still works.
			var wg sync.WaitGroup
			slow := make(chan time.Duration, 64)
			for range 64 {
				wg.Go(func() {
					code, _, d, err := h.do(http.MethodPost, "/mcp", "guess")
					if err != nil || code != http.StatusUnauthorized || d > refuseBound {
						slow <- d
					}
				})
			}
			wg.Wait()
			close(slow)
			for d := range slow {
				t.Errorf("a wrong-token request took %v or was not answered 401", d)
			}
			if st := h.status(t, nil); st.Totals.Connected != 1 {
				t.Errorf("get_status after the refused requests: %+v", st.Totals)
			}

			for _, c := range []struct {
				method, path, token string
				want                int
			}{
				{http.MethodGet, "/healthz", "", http.StatusOK},
				{http.MethodPost, "/mcp", "", http.StatusUnauthorized},
				{http.MethodGet, "/metrics", "", http.StatusUnauthorized},
				{http.MethodGet, "/metrics", httpToken, http.StatusUnauthorized}, // METRICS_TOKEN is set
				{http.MethodGet, "/metrics", metricsToken, http.StatusOK},
			} {
				if code, body, _ := h.get(t, c.method, c.path, c.token); code != c.want {
					t.Errorf("%s %s with token %q: %d, want %d: %.200s", c.method, c.path, c.token, code, c.want, body)
				}
			}

			_, text, _ := h.get(t, http.MethodGet, "/metrics", metricsToken)
			for _, m := range []struct {
				name, labels string
				min          float64
			}{
				{"mcp_ssh_gateway_edges_connected", "", 1},
				{"mcp_ssh_gateway_edge_handshakes_total", `{outcome="ok"}`, 1},
				{"mcp_ssh_gateway_rpcs_total", `{method="exec",outcome="ok"}`, 1},
				{"mcp_ssh_gateway_rpc_duration_seconds_count", `{method="exec",outcome="ok"}`, 1},
				{"mcp_ssh_gateway_rpc_bytes_total", `{direction="from_edge"}`, float64(len("over-http\n"))},
				{"mcp_ssh_gateway_rpcs_in_flight", "", 0},
				{"mcp_ssh_gateway_audit_lines_total", "", 3}, // connect, intent, outcome
			} {
				v, ok := metricValue(text, m.name, m.labels)
				if !ok || v < m.min {
					t.Errorf("metric %s%s = %v (found %v), want at least %v", m.name, m.labels, v, ok, m.min)
				}
			}
			if t.Failed() {
				t.Logf("metrics:\n%s", tail(text, 4000))
			}

			// The healthcheck subcommand (the container's HEALTHCHECK) sees the live gateway.
			hc := func(addr string) error {
				cmd := exec.Command(gatewayBin, "healthcheck")
				cmd.Env = append(localfleet.BaseEnv(f.Dir), "MCP_HTTP_ADDR="+addr, "MCP_HTTP_TLS_CERT="+certFile)
				out, err := cmd.CombinedOutput()
				if err != nil {
					return fmt.Errorf("%v: %s", err, out)
				}
				return nil
			}
			if err := hc(strings.TrimPrefix(strings.TrimPrefix(h.base, "https://"), "http://")); err != nil {
				t.Errorf("healthcheck against the running gateway: %v", err)
			}
			if err := hc("127.0.0.1:" + strconv.Itoa(freePort(t))); err == nil {
				t.Errorf("healthcheck against a closed port exited 0")
			}

			// SIGTERM: stop serving, close the tunnels, exit 0.
			h.Signal(syscall.SIGTERM)
			select {
			case <-h.Done():
				if err := h.Err(); err != nil {
					t.Errorf("gateway exited with %v after SIGTERM, want 0", err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("gateway still running 15 s after SIGTERM")
			}
		})
	}
}
