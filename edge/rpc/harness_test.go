package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/goleak"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// testSupervisorEnv makes the test binary act as the job supervisor (RunJob), as the
// edge binary does with its job-supervise subcommand.
const testSupervisorEnv = "RPC_TEST_JOB_SUPERVISOR"

// testBusyboxEnv makes the test binary act as a multi-call binary (TestBusyboxApplets):
// started through a link named after one of testApplets it prints that applet's name and its
// arguments, as busybox picks the program to be from filepath.Base(argv[0]).
const testBusyboxEnv = "RPC_TEST_BUSYBOX"

var testApplets = []string{"uptime", "sh"}

func TestMain(m *testing.M) {
	if os.Getenv(testBusyboxEnv) == "1" {
		applet, args := filepath.Base(os.Args[0]), os.Args[1:]
		if applet == "busybox" && len(args) > 0 { // busybox APPLET ARGS…
			applet, args = args[0], args[1:]
		}
		if slices.Contains(testApplets, applet) {
			fmt.Printf("applet %s %s\n", applet, strings.Join(args, " "))
			os.Exit(0)
		}
	}
	if os.Getenv(testSupervisorEnv) == "1" {
		os.Exit(RunJob(testJobCommand(), os.Args[1:]))
	}
	os.Setenv(testSupervisorEnv, "1")
	goleak.VerifyTestMain(m)
}

// testJobCommand runs the test binary itself as the supervisor.
func testJobCommand() []string {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return []string{exe}
}

// harness runs a Server behind a real yamux session pair, as the tunnel does.
type harness struct {
	t      *testing.T
	srv    *Server
	client *yamux.Session
	cfg    Config
}

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if cfg.MaxConcurrent == 0 {
		cfg.MaxConcurrent = 8
	}
	cfg.Version, cfg.Name = "test", "edge1"
	if cfg.JobCommand == nil {
		cfg.JobCommand = testJobCommand()
	}
	a, b := net.Pipe()
	log := testLogger()
	ss, err := yamux.Server(b, protocol.YamuxConfig(log))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := yamux.Client(a, protocol.YamuxConfig(log))
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(cfg, log)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			st, err := ss.AcceptStream()
			if err != nil {
				return
			}
			wg.Go(func() { srv.ServeStream(ctx, st) })
		}
	})
	t.Cleanup(func() {
		cancel()
		cs.Close()
		ss.Close()
		wg.Wait()
	})
	return &harness{t: t, srv: srv, client: cs, cfg: cfg}
}

// rpcCall is one open RPC stream from the gateway's side.
type rpcCall struct {
	t  *testing.T
	st *yamux.Stream
	fr *protocol.Reader
}

func (h *harness) open(method string, params any) *rpcCall {
	h.t.Helper()
	st, err := h.client.OpenStream()
	if err != nil {
		h.t.Fatal(err)
	}
	_ = st.SetDeadline(time.Now().Add(30 * time.Second))
	raw, err := json.Marshal(params)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := protocol.WriteJSON(st, protocol.FrameRequest, protocol.Request{V: protocol.Version, ID: "t-" + method, Method: method, Params: raw}); err != nil {
		h.t.Fatal(err)
	}
	return &rpcCall{t: h.t, st: st, fr: protocol.NewReader(st)}
}

func (c *rpcCall) send(t protocol.FrameType, p []byte) {
	c.t.Helper()
	if err := protocol.WriteFrame(c.st, t, p); err != nil {
		c.t.Fatal(err)
	}
}

// outcome is everything an RPC sent back.
type outcome struct {
	stdout, stderr []byte
	data           []byte
	result         json.RawMessage
	err            *protocol.Error
}

// wait reads frames until the result and decodes it into v (if the call succeeded).
func (c *rpcCall) wait(v any) outcome {
	c.t.Helper()
	defer c.st.Close()
	var o outcome
	for range 100000 {
		typ, p, err := c.fr.Next()
		if err != nil {
			c.t.Fatalf("reading frames: %v", err)
		}
		switch typ {
		case protocol.FrameStdout:
			o.stdout = append(o.stdout, p...)
		case protocol.FrameStderr:
			o.stderr = append(o.stderr, p...)
		case protocol.FrameData:
			o.data = append(o.data, p...)
		case protocol.FrameResult:
			var resp protocol.Response
			if err := json.Unmarshal(p, &resp); err != nil {
				c.t.Fatal(err)
			}
			o.result, o.err = resp.Result, resp.Error
			if o.err == nil && v != nil {
				if err := json.Unmarshal(resp.Result, v); err != nil {
					c.t.Fatal(err)
				}
			}
			// The edge closes its side after the result.
			if _, _, err := c.fr.Next(); !errors.Is(err, io.EOF) {
				c.t.Errorf("after result: %v, want EOF", err)
			}
			return o
		default:
			c.t.Fatalf("unexpected %s frame", typ)
		}
	}
	c.t.Fatal("too many frames")
	return o
}

// code is the error code of an outcome, "" on success.
func (o outcome) code() string {
	if o.err == nil {
		return ""
	}
	return o.err.Code
}
