package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// healthcheckTimeout bounds `mcp-ssh-gateway healthcheck` (the container's HEALTHCHECK).
const healthcheckTimeout = 5 * time.Second

// healthcheck GETs /healthz of the gateway running on this host, at the port of MCP_HTTP_ADDR
// (https when MCP_HTTP_TLS_CERT is set). It exists so that an image without a shell or curl
// can have a HEALTHCHECK. It sends no token and reads nothing else: 0 healthy, 1 not.
func healthcheck(getenv func(string) string, stderr io.Writer) int {
	addr := getenv("MCP_HTTP_ADDR")
	if addr == "" {
		addr = ":3333"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: MCP_HTTP_ADDR=%q is not [host]:port\n", addr)
		return 1
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	scheme := "http"
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	if getenv("MCP_HTTP_TLS_CERT") != "" {
		// Liveness of our own process on this host: the certificate names the public host,
		// not 127.0.0.1, and no secret is sent, so it is not verified here.
		scheme = "https"
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	ctx, cancel := context.WithTimeout(context.Background(), healthcheckTimeout)
	defer cancel()
	url := scheme + "://" + net.JoinHostPort(host, port) + "/healthz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return 1
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "healthcheck: GET %s: %s\n", url, resp.Status)
		return 1
	}
	return 0
}
