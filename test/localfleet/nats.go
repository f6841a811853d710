package localfleet

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// natsReadyWait bounds how long StartNATS and Restart wait for the server to accept clients.
const natsReadyWait = 15 * time.Second

// NATS is an in-process NATS server with JetStream, on 127.0.0.1 and a port the kernel
// picked, keeping its JetStream store under the directory StartNATS was given: the
// coordination layer of a cluster of gateways (CLUSTER_NATS_URL). Stop and Restart take it
// away and bring it back on the same port with the same store, so that gateways reconnect
// and find their KV buckets again. Its methods are safe for concurrent use.
type NATS struct {
	mu   sync.Mutex
	dir  string
	port int
	srv  *natsserver.Server // nil while stopped
}

// StartNATS starts a NATS server with JetStream, its store under dir (which must exist). The
// caller must Stop it.
func StartNATS(dir string) (*NATS, error) {
	n := &NATS{dir: dir, port: -1} // -1: a random port
	if err := n.start(); err != nil {
		return nil, err
	}
	return n, nil
}

// start runs a server on n.port (a random one when -1) and records the port it got; n.mu
// held or n not shared yet.
func (n *NATS) start() error {
	opts := &natsserver.Options{
		ServerName:         "localfleet",
		Host:               "127.0.0.1",
		Port:               n.port,
		JetStream:          true,
		StoreDir:           filepath.Join(n.dir, "jetstream"),
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  1 << 30,
		NoSigs:             true,
		NoLog:              true,
	}
	srv, err := natsserver.NewServer(opts)
	if err != nil {
		return fmt.Errorf("nats server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(natsReadyWait) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("nats server on 127.0.0.1:%d not ready within %v", n.port, natsReadyWait)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		srv.WaitForShutdown()
		return errors.New("nats server started without JetStream")
	}
	addr, ok := srv.Addr().(*net.TCPAddr)
	if !ok {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("nats server listens on %v, not a TCP address", srv.Addr())
	}
	n.port = addr.Port
	n.srv = srv
	return nil
}

// URL is the nats://127.0.0.1:port address gateways dial (CLUSTER_NATS_URL); it stays the
// same across Stop and Restart.
func (n *NATS) URL() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return "nats://127.0.0.1:" + strconv.Itoa(n.port)
}

// Running reports whether the server is up (not stopped).
func (n *NATS) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv != nil
}

// Stop shuts the server down, closing every client connection, and returns once it is gone.
// It may be called more than once.
func (n *NATS) Stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv == nil {
		return
	}
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	n.srv = nil
}

// Restart starts the server again on the same port with the same JetStream store (a running
// server is stopped first). Binding the port again is retried for a few seconds, in case the
// kernel is slow to release it.
func (n *NATS) Restart() error {
	n.Stop()
	n.mu.Lock()
	defer n.mu.Unlock()
	deadline := time.Now().Add(natsReadyWait)
	for {
		err := n.start()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("restart nats on port %d: %w", n.port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
