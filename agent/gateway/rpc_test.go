package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

func execParams(argv ...string) protocol.ExecParams {
	return protocol.ExecParams{Argv: argv, TimeoutMs: 10_000, MaxOutputBytes: 1 << 20}
}

// collector gathers stdout and stderr.
type collector struct {
	mu             sync.Mutex
	stdout, stderr bytes.Buffer
}

func (c *collector) out(t protocol.FrameType, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t == protocol.FrameStdout {
		c.stdout.Write(b)
	} else {
		c.stderr.Write(b)
	}
}

// connected starts a gateway with one edge named pi and returns both.
func connected(t *testing.T, hello protocol.Hello, mut func(*Config)) (*fixture, *testEdge, string) {
	t.Helper()
	key := newSigner(t)
	f := startGateway(t, authLine(key, ""), mut)
	if hello.Name == "" {
		hello.Name = "pi"
	}
	e := dialEdge(t, f, key, edgeOpts{hello: hello})
	waitFor(t, 5*time.Second, "edge registered", func() bool { return len(f.g.Edges(true)) == 1 })
	return f, e, keys.Fingerprint(key.PublicKey())
}

func TestExecStreamsOutput(t *testing.T) {
	f, _, fp := connected(t, protocol.Hello{}, nil)
	ctx := context.Background()
	tests := []struct {
		name, edge string
		stdin      *string
		wantOut    string
	}{
		{"by name, no stdin", "pi", nil, "hello world"},
		{"by fingerprint, with stdin", fp, ptr(strings.Repeat("z", 600<<10)), "hello world" + strings.Repeat("z", 600<<10)},
		{"name case-folded", "PI", ptr(""), "hello world"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c collector
			var res protocol.ExecResult
			var err error
			if tc.stdin != nil {
				res, err = f.g.Exec(ctx, tc.edge, execParams("echo", "hello", "world"), strings.NewReader(*tc.stdin), c.out)
			} else {
				res, err = f.g.Exec(ctx, tc.edge, execParams("echo", "hello", "world"), nil, c.out)
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != 3 || c.stdout.String() != tc.wantOut || c.stderr.String() != "warn" {
				t.Fatalf("res=%+v stdout=%d bytes stderr=%q", res, c.stdout.Len(), c.stderr.String())
			}
		})
	}
	if st := f.g.Edges(true)[0]; st.InFlight != 0 || time.Since(st.LastSeen) > 5*time.Second {
		t.Fatalf("status after calls: %+v", st)
	}
}

func ptr[T any](v T) *T { return &v }

func TestUploadDeviceInfoAndEdgeErrors(t *testing.T) {
	f, _, _ := connected(t, protocol.Hello{}, nil)
	ctx := context.Background()
	content := bytes.Repeat([]byte("abc"), 200_000)
	sum := sha256.Sum256(content)
	up, err := f.g.Upload(ctx, "pi", protocol.UploadParams{Path: "/tmp/x", Size: int64(len(content)), SHA256: hex.EncodeToString(sum[:]), Mode: 0o644}, bytes.NewReader(content))
	if err != nil || up.Size != int64(len(content)) || up.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("Upload = %+v, %v", up, err)
	}
	di, err := f.g.DeviceInfo(ctx, "pi", true)
	if err != nil || di.Hostname != "testhost" {
		t.Fatalf("DeviceInfo = %+v, %v", di, err)
	}
	_, err = f.g.Exec(ctx, "pi", execParams("fail"), nil, nil)
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.CodePolicy {
		t.Fatalf("edge error = %v, want *protocol.Error policy", err)
	}
	if _, err := f.g.Exec(ctx, "pi", protocol.ExecParams{}, nil, nil); err == nil {
		t.Fatal("invalid params sent")
	}
}

// TestUploadDigestLater: an upload whose SHA-256 is not given is hashed while it is sent, with
// a digest trailer to an edge of protocol 2; an edge of protocol 1 gets requests of version 1
// and the hash first (a seekable body), or a clear error (a body that cannot seek back). A
// body that fails or changes while it is sent cancels the upload at once, and an edge that
// reports another SHA-256 than the one sent is not believed.
func TestUploadDigestLater(t *testing.T) {
	content := bytes.Repeat([]byte("xyz"), 300_000)
	sum := sha256.Sum256(content)
	want := hex.EncodeToString(sum[:])
	tests := []struct {
		name     string
		protocol int
		lie      bool // the edge reports a SHA-256 of zeros
		body     io.Reader
		trailers int64  // uploads the edge saw end with a FrameDigest
		err      string // "" = success
	}{
		{"protocol 2: trailer", protocol.VersionDigestTrailer, false, bytes.NewReader(content), 1, ""},
		{"protocol 1: hash first", 1, false, bytes.NewReader(content), 0, ""},
		{"protocol 1: body cannot seek", 1, false, io.MultiReader(bytes.NewReader(content)), 0, "upgrade mcp-ssh-edge"},
		{"edge reports another SHA-256", protocol.VersionDigestTrailer, true, bytes.NewReader(content), 1, "reported"},
		{"read error mid-body", protocol.VersionDigestTrailer, false,
			io.MultiReader(bytes.NewReader(content[:300_000]), iotest.ErrReader(errors.New("disk on fire"))), 0, "disk on fire"},
		{"file changed while sent", protocol.VersionDigestTrailer, false, &growingFile{Reader: bytes.NewReader(content)}, 0, "changed while it was sent"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, e, _ := connected(t, protocol.Hello{Protocol: tc.protocol}, nil)
			e.lies.Store(tc.lie)
			start := time.Now()
			up, err := f.g.Upload(context.Background(), "pi", protocol.UploadParams{Path: "/tmp/x", Size: int64(len(content)), Mode: 0o644}, tc.body)
			if d := time.Since(start); d > cancelWait+5*time.Second {
				t.Errorf("Upload took %v", d)
			}
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Upload err = %v, want %q", err, tc.err)
				}
			case err != nil || up.SHA256 != want || up.Size != int64(len(content)):
				t.Fatalf("Upload = %+v, %v", up, err)
			}
			if got := e.trailers.Load(); got != tc.trailers {
				t.Errorf("%d uploads ended with a digest frame, want %d", got, tc.trailers)
			}
			if v := e.lastV.Load(); tc.err == "" && v != int64(tc.protocol) {
				t.Errorf("request version %d, want the edge's %d", v, tc.protocol)
			}
		})
	}
}

// growingFile is a file whose size changes between two Stat calls (another writer).
type growingFile struct {
	*bytes.Reader
	stats int
}

func (g *growingFile) Stat() (fs.FileInfo, error) {
	g.stats++
	return fakeInfo{size: int64(g.stats)}, nil
}

type fakeInfo struct{ size int64 }

func (i fakeInfo) Name() string       { return "f" }
func (i fakeInfo) Size() int64        { return i.size }
func (i fakeInfo) Mode() fs.FileMode  { return 0o644 }
func (i fakeInfo) ModTime() time.Time { return time.Time{} }
func (i fakeInfo) IsDir() bool        { return false }
func (i fakeInfo) Sys() any           { return nil }

func TestUnknownAndOfflineEdges(t *testing.T) {
	known := newSigner(t)
	f := startGateway(t, authLine(known, `name="pi4"`), nil)
	tests := []struct {
		edge string
		want error
	}{
		{"nope", ErrUnknownEdge},
		{"", ErrUnknownEdge},
		{"pi4", ErrEdgeOffline},
		{keys.Fingerprint(known.PublicKey()), ErrEdgeOffline},
		{"SHA256:AAAA", ErrUnknownEdge},
	}
	for _, tc := range tests {
		_, err := f.g.DeviceInfo(context.Background(), tc.edge, false)
		if !errors.Is(err, tc.want) || (tc.edge != "" && !strings.Contains(err.Error(), tc.edge)) {
			t.Errorf("%q: err = %v, want %v naming the edge", tc.edge, err, tc.want)
		}
	}
	es := f.g.Edges(false)
	if len(es) != 1 || es[0].Name != "pi4" || es[0].Connected || es[0].Labels == nil || es[0].ReportedLabels == nil {
		t.Fatalf("Edges(false) = %+v", es)
	}
	if es := f.g.Edges(true); es == nil || len(es) != 0 {
		t.Fatalf("Edges(true) = %#v", es)
	}
}

func TestCancelReturnsWhatWasCaptured(t *testing.T) {
	f, _, _ := connected(t, protocol.Hello{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var c collector
	go func() {
		time.Sleep(200 * time.Millisecond)
		cancel()
	}()
	start := time.Now()
	res, err := f.g.Exec(ctx, "pi", execParams("sleep"), nil, c.out)
	if err != nil || !res.Cancelled || res.Signal != "SIGKILL" || c.stdout.String() != "partial" {
		t.Fatalf("res=%+v err=%v stdout=%q", res, err, c.stdout.String())
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("cancel took %v", d)
	}
}

func TestEdgeDropMidCallReturnsDisconnected(t *testing.T) {
	f, e, _ := connected(t, protocol.Hello{}, nil)
	errc := make(chan error, 1)
	go func() {
		_, err := f.g.Exec(context.Background(), "pi", execParams("hold"), nil, nil)
		errc <- err
	}()
	waitFor(t, 5*time.Second, "call in flight", func() bool { return f.g.Edges(true)[0].InFlight == 1 })
	e.conn.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrDisconnected) {
			t.Fatalf("err = %v, want ErrDisconnected", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("call still waiting 3s after the edge dropped")
	}
}

func TestBusyEdgeQueuesThenRefuses(t *testing.T) {
	f, e, _ := connected(t, protocol.Hello{MaxConcurrent: 1}, func(c *Config) { c.MaxQueue = 1 })
	ctx := context.Background()
	inFlight := func() int { return f.g.Edges(true)[0].InFlight }
	results := make(chan error, 2)
	hold := func() {
		_, err := f.g.Exec(ctx, "pi", execParams("hold"), nil, nil)
		results <- err
	}
	// The first inventory pull starts up to 1 s after connecting and takes the edge's only
	// slot for a while on a busy machine: wait until it has been served and is over (the next
	// is minutes away), or it would queue behind the held call below.
	waitFor(t, 30*time.Second, "the connect-time pull over", func() bool { return e.infos.Load() >= 1 && inFlight() == 0 })
	go hold()
	waitFor(t, 5*time.Second, "one call running", func() bool {
		select {
		case err := <-results: // the held call ended: say why instead of timing out
			t.Fatalf("the held call returned at once: %v", err)
		default:
		}
		return inFlight() == 1
	})

	// A queued call gives up with its context.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := f.g.Exec(short, "pi", execParams("echo"), nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("queued call with a deadline: %v", err)
	}
	go hold()
	waitFor(t, 5*time.Second, "one running, one queued", func() bool { return inFlight() == 2 })
	if _, err := f.g.Exec(ctx, "pi", execParams("hold"), nil, nil); !errors.Is(err, ErrEdgeBusy) || !strings.Contains(err.Error(), "pi") {
		t.Fatalf("call beyond the queue: %v, want ErrEdgeBusy naming pi", err)
	}
	e.releaseHeld()
	for range 2 {
		select {
		case err := <-results:
			if err != nil {
				t.Fatalf("held call: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("queued calls did not finish")
		}
	}
	if n := inFlight(); n != 0 {
		t.Fatalf("in flight after the queue drained: %d", n)
	}
}

// TestRequestIDOnTheWire: the id a caller gives a handle's RPC is the request id the edge
// receives (and records in its rpc.log), so the audit line and the edge's line join on it.
func TestRequestIDOnTheWire(t *testing.T) {
	f, e, _ := connected(t, protocol.Hello{Protocol: protocol.Version, Name: "pi"}, nil)
	h, err := f.g.Edge("pi")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	calls := []struct {
		name string
		call func(rid string) error
	}{
		{"exec", func(rid string) error { _, err := h.Exec(ctx, rid, execParams("echo", "x"), nil, nil); return err }},
		{"device_info", func(rid string) error { _, err := h.DeviceInfo(ctx, rid, true); return err }},
	}
	for i, tc := range calls {
		rid := fmt.Sprintf("audit-request-%d", i)
		if err := tc.call(rid); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got, _ := e.lastID.Load().(string); got != rid {
			t.Errorf("%s: the edge received request id %q, want the caller's %q", tc.name, got, rid)
		}
	}
	if _, err := h.Exec(ctx, "", execParams("echo", "x"), nil, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.lastID.Load().(string); len(got) < 16 {
		t.Errorf("a call without an id sent %q, want a fresh random one", got)
	}
}
