package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// certCheckEvery bounds how often the certificate files are looked at for a renewal.
const certCheckEvery = 30 * time.Second

// certFile serves the TLS certificate of MCP_HTTP_TLS_CERT / MCP_HTTP_TLS_KEY and reloads it
// when the files change (a renewed certificate needs no restart). A renewal that does not load
// keeps the previous certificate.
type certFile struct {
	certPath, keyPath string

	mu      sync.Mutex
	cert    *tls.Certificate
	modTime time.Time
	checked time.Time
}

// loadCertFile loads the pair once, so a bad file stops the gateway at start.
func loadCertFile(certPath, keyPath string) (*certFile, error) {
	c := &certFile{certPath: certPath, keyPath: keyPath}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *certFile) load() error {
	st, err := os.Stat(c.certPath)
	if err != nil {
		return fmt.Errorf("MCP_HTTP_TLS_CERT: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(c.certPath, c.keyPath)
	if err != nil {
		return fmt.Errorf("MCP_HTTP_TLS_CERT/MCP_HTTP_TLS_KEY: %w", err)
	}
	c.cert, c.modTime = &cert, st.ModTime()
	return nil
}

// get is tls.Config.GetCertificate.
func (c *certFile) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.checked) >= certCheckEvery {
		c.checked = now
		if st, err := os.Stat(c.certPath); err == nil && !st.ModTime().Equal(c.modTime) {
			_ = c.load() // on failure the previous pair stays; retried at the next check
		}
	}
	return c.cert, nil
}
