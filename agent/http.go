package main

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/server"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/tools"
)

// HTTP server limits. No write timeout: a tool call may stream progress for as long as
// EXEC_TIMEOUT_MAX.
const (
	httpReadHeaderTimeout = 10 * time.Second
	httpIdleTimeout       = 2 * time.Minute
	httpMaxHeaderBytes    = 64 << 10
	// httpSessionIdleTTL forgets MCP sessions whose client vanished without a DELETE, so a
	// gateway that runs for months does not accumulate them.
	httpSessionIdleTTL = time.Hour
)

// serveHTTP serves MCP over streamable HTTP at /mcp and the metrics at /metrics, both guarded
// by bearer tokens, and an unauthenticated /healthz; over TLS when a certificate is configured.
// It returns when ctx is done, after in-flight requests finish (bounded by callCtx, which the
// caller cancels after the shutdown grace).
func serveHTTP(ctx, callCtx context.Context, cfg *config, s *server.MCPServer, access tools.Access, metrics http.Handler, log *slog.Logger) error {
	mcpHandler := server.NewStreamableHTTPServer(s,
		server.WithEndpointPath("/mcp"),
		server.WithStreamableHTTPLogger(log),
		server.WithSessionIdleTTL(httpSessionIdleTTL),
		server.WithHTTPContextFunc(func(ctx context.Context, r *http.Request) context.Context {
			return tools.WithBearer(ctx, bearer(r))
		}),
	)
	srv := &http.Server{
		Handler:           newHTTPHandler(cfg, access.ClientKnown, mcpHandler, metrics, log),
		ReadHeaderTimeout: httpReadHeaderTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return callCtx },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	scheme := "http"
	if cfg.tlsCert != nil {
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: cfg.tlsCert.get}
		scheme = "https"
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return errors.New("MCP_HTTP_ADDR: " + err.Error())
	}
	if srv.TLSConfig != nil {
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	if shortToken(cfg.HTTPToken) {
		log.Warn("MCP_HTTP_TOKEN is short: a bearer token guards full control of the fleet; use at least 32 random characters (openssl rand -hex 32)",
			"length", len(cfg.HTTPToken))
	}
	log.Info("mcp http listening", "addr", ln.Addr().String(), "scheme", scheme, "path", "/mcp")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err = srv.Shutdown(shutCtx)
	mcpHandler.Shutdown(shutCtx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// newHTTPHandler routes /healthz (open), /mcp (MCP_HTTP_TOKEN) and /metrics (METRICS_TOKEN,
// else MCP_HTTP_TOKEN). Request bodies are bounded by the largest upload a call may carry.
func newHTTPHandler(cfg *config, known func(token string) bool, mcpHandler, metrics http.Handler, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	// base64 of MAX_UPLOAD_BYTES plus room for the JSON-RPC envelope.
	maxBody := cfg.MaxUploadBytes/3*4 + 1<<20
	mux.Handle("/mcp", requireClient(known, "MCP_HTTP_TOKEN or a POLICY_FILE client", log, checkOrigin(log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		mcpHandler.ServeHTTP(w, r)
	}))))
	if metrics != nil {
		token, name := cfg.MetricsToken, "METRICS_TOKEN"
		if token == "" {
			token, name = cfg.HTTPToken, "MCP_HTTP_TOKEN"
		}
		mux.Handle("/metrics", requireToken(token, name, log, metrics))
	}
	return mux
}

// requireToken is requireClient for one token.
func requireToken(token, setting string, log *slog.Logger, next http.Handler) http.Handler {
	return requireClient(func(got string) bool {
		return token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
	}, setting, log, next)
}

// checkOrigin refuses (403) a request whose Origin header names another site than the one it
// was sent to, as the MCP transport rules require against DNS rebinding and cross-site
// requests from a browser. Clients that are not browsers send no Origin and pass; a loopback
// origin is accepted for a request to a loopback host (a local Inspector on another port).
func checkOrigin(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" || originAllowed(origin, r.Host) {
			next.ServeHTTP(w, r)
			return
		}
		log.Warn("http request refused: cross-origin", "origin", oneLine(origin), "host", oneLine(r.Host), "remote_addr", r.RemoteAddr)
		http.Error(w, "Origin "+strconv.Quote(oneLine(origin))+" is not allowed: send requests from the gateway's own origin, or from a client that sends no Origin", http.StatusForbidden)
	})
}

// originAllowed reports whether origin (scheme://host[:port]) may call a server reached as host.
func originAllowed(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	if strings.EqualFold(u.Host, host) {
		return true
	}
	return isLoopback(u.Hostname()) && isLoopback(hostOnly(host))
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// oneLine bounds header text for a log line or an error message.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// bearer is the request's bearer token, "" when it has none.
func bearer(r *http.Request) string {
	v, ok := strings.CutPrefix(strings.TrimSpace(r.Header.Get("Authorization")), "Bearer ")
	if !ok {
		return ""
	}
	return strings.TrimSpace(v)
}

// requireClient answers 401 at once to a request whose bearer token names no client: before
// any MCP work, without reading the body, and closing the connection so a guesser holds
// nothing open.
func requireClient(known func(token string) bool, setting string, log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !known(bearer(r)) {
			log.Debug("http request refused: missing or wrong bearer token", "path", r.URL.Path, "remote_addr", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="mcp-ssh-gateway"`)
			w.Header().Set("Connection", "close")
			http.Error(w, "missing or wrong bearer token ("+setting+")", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
