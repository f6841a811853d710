// Package rpc serves the typed RPCs an edge offers the gateway (exec, upload, device info),
// one yamux stream per call, under the edge's own policy and limits.
package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/memory"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// Config is the edge's policy and limits. The gateway cannot widen any of it.
type Config struct {
	AllowShell    bool     // whether `command` (a /bin/sh -c string) may run
	AllowCommands []string // absolute, clean executables argv[0] may be, symlinks not resolved (ResolveAllowCommands); empty = any
	UploadDirs    []string // absolute directories uploads may write under; empty = any, but no uploads while AllowCommands is set
	DownloadDirs  []string // absolute directories downloads may read under; empty = any
	MaxConcurrent int      // RPCs served at once; beyond it callers get CodeBusy
	StateDir      string   // holds `paused`, rpc.log and jobs; never readable or writable through RPCs (symlinks resolved by NewServer)
	KeyFile       string   // the edge's private key; never readable or writable through RPCs
	Version       string   // mcp-ssh-edge version, reported in device info
	Name          string   // the edge's name, reported in device info
	AllowRunAs    []string // users run_as may name (EDGE_ALLOW_RUN_AS); empty = none

	JobRetention time.Duration // finished jobs are kept this long (EDGE_JOB_RETENTION), default 24h
	JobOutputMax int64         // bytes of output one job's journal keeps, default 64 MiB
	JobCommand   []string      // argv prefix that runs RunJob (the edge's own binary), see jobs.go

	// Inventory schedule (device info). The gateway asks for the inventory at connect and on
	// its own schedule; cheap figures are read anew each time, the slow probes below only when
	// older than InventorySlowInterval (or on refresh).
	InventorySlowInterval time.Duration // tool versions, pending updates; 0 means 6h
	ProbeTimeout          time.Duration // one `tool --version`; 0 means 5s
	Inventory             *Inventory    // shared inventory cache; nil: the server's own
}

// Bounds the server applies to every stream.
const (
	requestTimeout = 30 * time.Second // time a gateway has to send the request frame
	rpcLogMax      = 10 << 20         // rpc.log is rotated to rpc.log.1 beyond this size
	pauseFile      = "paused"
	rpcLogFile     = "rpc.log"
)

// Server dispatches RPC streams. It is safe for concurrent use: one ServeStream per stream.
type Server struct {
	cfg    Config
	log    *slog.Logger
	sem    chan struct{}
	logMu  sync.Mutex
	rpcLog openLog // rpc.log, kept open between calls; under logMu

	// devNull is /dev/null, opened once, the stdin of every exec without one: os/exec would
	// open and close it for each process.
	devNull     *os.File
	devNullOnce sync.Once
	release     memory.Releaser // after big transfers: back to the idle footprint

	// Fixed at start (resolvedPaths): the names the key and state are protected under, and
	// the directories uploads may not write under an allowlist (executableDirs).
	stateDirs, keyFiles, keyDirs, execDirs []string

	// lookTool finds the inventory's tools; nil means lookSystemTool. Tests set it before
	// the first call to probe fake tools.
	lookTool toolLookup
}

// NewServer returns a server enforcing cfg. A MaxConcurrent below 1 means 32.
func NewServer(cfg Config, log *slog.Logger) *Server {
	if cfg.MaxConcurrent < 1 {
		cfg.MaxConcurrent = 32
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Inventory == nil {
		cfg.Inventory = &Inventory{}
	}
	s := &Server{cfg: cfg, log: log, sem: make(chan struct{}, cfg.MaxConcurrent)}
	// EDGE_STATE_DIR and EDGE_KEY_FILE are resolved once, here: every check then compares with
	// the real directory, whatever symlink the configured name goes through.
	s.stateDirs = resolvedPaths(cfg.StateDir)
	if len(s.stateDirs) > 1 {
		s.cfg.StateDir = s.stateDirs[1]
	}
	s.keyFiles = resolvedPaths(cfg.KeyFile)
	for _, k := range s.keyFiles {
		s.keyDirs = append(s.keyDirs, filepath.Dir(k))
	}
	if len(cfg.AllowCommands) > 0 {
		s.execDirs = executableDirs(os.Getenv("PATH"), cfg.AllowCommands)
	}
	return s
}

// PauseFile is the path whose presence makes the edge refuse every RPC (`mcp-ssh-edge pause`).
func PauseFile(stateDir string) string { return filepath.Join(stateDir, pauseFile) }

// call is the state of one RPC: its stream, frame reader, serialized writer and log record.
type call struct {
	req    *protocol.Request
	fr     *protocol.Reader
	w      *frameWriter
	stream io.ReadWriteCloser
	entry  logEntry
}

// frameWriter serializes frame writes to one stream (stdout and stderr copiers share it).
type frameWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// frame writes one frame under the lock.
func (fw *frameWriter) frame(t protocol.FrameType, p []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return protocol.WriteFrame(fw.w, t, p)
}

// raw writes bytes that already are whole encoded frames, under the lock.
func (fw *frameWriter) raw(b []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	_, err := fw.w.Write(b)
	return err
}

// json writes one JSON frame under the lock.
func (fw *frameWriter) json(t protocol.FrameType, v any) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return protocol.WriteJSON(fw.w, t, v)
}

type readDeadliner interface{ SetReadDeadline(time.Time) error }

// ServeStream handles one RPC stream: it reads the request, answers with exactly one result
// frame (after any output frames) and closes the stream. It returns when the call is over.
func (s *Server) ServeStream(ctx context.Context, stream io.ReadWriteCloser) {
	defer stream.Close()
	start := time.Now()
	c := &call{fr: protocol.NewReader(stream), w: &frameWriter{w: stream}, stream: stream}
	c.entry.Time = start.UTC().Format(time.RFC3339Nano)

	rd, canDeadline := stream.(readDeadliner)
	if canDeadline {
		_ = rd.SetReadDeadline(start.Add(requestTimeout))
	}
	typ, p, err := c.fr.Next()
	if canDeadline {
		_ = rd.SetReadDeadline(time.Time{})
	}
	if err != nil {
		s.log.Debug("rpc stream ended before a request", "err", err)
		return
	}
	var result any
	if typ != protocol.FrameRequest {
		err = protocol.Errorf(protocol.CodeBadRequest, "first frame is %s, want request", typ)
	} else if c.req, err = protocol.DecodeRequest(p); err == nil {
		c.entry.ID, c.entry.Method = c.req.ID, c.req.Method
		result, err = s.dispatch(ctx, c)
	}
	s.finish(c, start, result, err)
}

// dispatch applies the pause switch and the concurrency limit, then runs the method.
func (s *Server) dispatch(ctx context.Context, c *call) (any, error) {
	if _, err := os.Stat(PauseFile(s.cfg.StateDir)); err == nil {
		return nil, protocol.Errorf(protocol.CodePaused,
			"the device owner paused RPCs; they must run `mcp-ssh-edge resume`")
	}
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	default:
		return nil, protocol.Errorf(protocol.CodeBusy,
			"edge is already serving %d RPCs (EDGE_MAX_CONCURRENT); retry later", s.cfg.MaxConcurrent)
	}
	switch c.req.Method {
	case protocol.MethodExec:
		return s.exec(ctx, c)
	case protocol.MethodUpload:
		return s.upload(ctx, c)
	case protocol.MethodDeviceInfo:
		return s.deviceInfo(ctx, c)
	case protocol.MethodJobStart, protocol.MethodJobGet, protocol.MethodJobCancel, protocol.MethodJobList:
		return s.job(ctx, c)
	case protocol.MethodDownload:
		return s.download(ctx, c)
	}
	return nil, protocol.Errorf(protocol.CodeUnknownMethod,
		"method %q is not served by this edge (version %s)", c.req.Method, s.cfg.Version)
}

// finish writes the result frame and the rpc.log line.
func (s *Server) finish(c *call, start time.Time, result any, err error) {
	resp := &protocol.Response{V: protocol.Version}
	if err == nil {
		resp, err = protocol.NewResult(result)
	}
	if err != nil {
		var pe *protocol.Error
		if !errors.As(err, &pe) {
			pe = protocol.Errorf(protocol.CodeInternal, "%v", err)
		}
		resp = &protocol.Response{V: protocol.Version, Error: pe}
		c.entry.Outcome = pe.Code
		c.entry.Error = pe.Message
	} else if c.entry.Outcome == "" {
		c.entry.Outcome = "ok"
	}
	if werr := c.w.json(protocol.FrameResult, resp); werr != nil {
		s.log.Debug("rpc result not delivered", "id", c.entry.ID, "err", werr)
	}
	c.entry.DurationMs = time.Since(start).Milliseconds()
	s.appendLog(&c.entry)
	s.log.Debug("rpc served", "id", c.entry.ID, "method", c.entry.Method, "outcome", c.entry.Outcome,
		"duration_ms", c.entry.DurationMs)
}

// logEntry is one line of rpc.log: what was asked and how it ended, never stdin or content.
type logEntry struct {
	Time       string   `json:"time"`
	ID         string   `json:"id"`
	Method     string   `json:"method"`
	Argv       []string `json:"argv,omitempty"`
	Command    string   `json:"command,omitempty"`
	Path       string   `json:"path,omitempty"`
	Outcome    string   `json:"outcome"`
	Error      string   `json:"error,omitempty"`
	ExitCode   *int     `json:"exit_code,omitempty"`
	DurationMs int64    `json:"duration_ms"`
}

// appendLog appends e to $StateDir/rpc.log, rotating it to rpc.log.1 beyond rpcLogMax.
// The file stays open between calls (one stat and one write per call, instead of a stat,
// an open, a write and a close): it is reopened when the name no longer leads to it
// (removed, or renamed by an outside logrotate) and after rotation.
func (s *Server) appendLog(e *logEntry) {
	if s.cfg.StateDir == "" {
		return
	}
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	b = append(b, '\n')
	path := filepath.Join(s.cfg.StateDir, rpcLogFile)
	s.logMu.Lock()
	defer s.logMu.Unlock()
	st, err := os.Stat(path)
	if err == nil && st.Size()+int64(len(b)) > rpcLogMax {
		if err := os.Rename(path, path+".1"); err != nil {
			s.log.Warn("cannot rotate rpc log", "path", path, "err", err)
		} else {
			st = nil
		}
	}
	f, err := s.rpcLog.file(path, st)
	if err != nil {
		s.log.Warn("cannot write rpc log", "path", path, "err", err)
		return
	}
	if _, err := f.Write(b); err != nil {
		s.log.Warn("cannot write rpc log", "path", path, "err", err)
		s.rpcLog.close() // reopened by the next call
	}
}

// openLog is the open rpc.log and its identity, to notice that the name no longer leads to
// it (removed, renamed by rotation or an outside logrotate).
type openLog struct {
	f    *os.File
	info os.FileInfo
}

// file returns the open file if path (whose stat is st; nil when it is missing or was just
// rotated away) still is that file, else opens (creating) path anew.
func (l *openLog) file(path string, st os.FileInfo) (*os.File, error) {
	if l.f != nil && (st == nil || !os.SameFile(st, l.info)) {
		l.close()
	}
	if l.f != nil {
		return l.f, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if l.info, err = f.Stat(); err != nil {
		f.Close()
		return nil, err
	}
	l.f = f
	return f, nil
}

// close closes the open file, if any.
func (l *openLog) close() {
	if l.f != nil {
		l.f.Close()
		l.f, l.info = nil, nil
	}
}
