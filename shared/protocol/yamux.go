package protocol

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
)

// StreamWindow is the yamux per-stream receive window. The 256 KiB default cannot keep one
// stream's data flowing across the 2 MiB SSH channel window; 4 MiB lets one stream fill it.
// Memory is only used while data sits unread.
const StreamWindow = 4 << 20

// YamuxConfig is the yamux tuning both sides use. SSH keepalives already prove liveness, so
// yamux's own keepalive is off; timeouts fit slow links; yamux's log lines go to log.
func YamuxConfig(log *slog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = 256
	c.EnableKeepAlive = false
	c.ConnectionWriteTimeout = 30 * time.Second
	c.StreamOpenTimeout = 30 * time.Second
	c.StreamCloseTimeout = time.Minute
	c.MaxStreamWindowSize = StreamWindow
	c.LogOutput = nil
	c.Logger = slogPrinter{log}
	return c
}

// slogPrinter adapts yamux's Printf-style logger to slog at debug level.
type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Print(v ...any) {
	p.l.Debug(strings.TrimSpace(fmt.Sprint(v...)), "component", "yamux")
}
func (p slogPrinter) Printf(format string, v ...any) {
	p.l.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)), "component", "yamux")
}
func (p slogPrinter) Println(v ...any) { p.Print(v...) }
