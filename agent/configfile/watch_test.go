package configfile

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestWatch: a file renamed into place is noticed through inotify (force, since the event
// names it), and without inotify through changed at a poll; nothing runs after ctx ends.
func TestWatch(t *testing.T) {
	for _, tc := range []struct {
		name      string
		noNotify  bool
		wantForce bool
	}{
		{"inotify", false, true},
		{"poll only", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "conf")
			os.WriteFile(path, []byte("one"), 0o600)
			last := StatStamp(path)
			reloads := make(chan bool, 16)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				Watch(ctx, WatchOptions{Path: path, What: "test", Poll: 50 * time.Millisecond, Debounce: 20 * time.Millisecond,
					NoNotify: tc.noNotify, Log: slog.New(slog.DiscardHandler)},
					func() bool { return StatStamp(path) != last }, func(force bool) { last = StatStamp(path); reloads <- force })
			}()
			time.Sleep(100 * time.Millisecond) // the watch is set up
			os.WriteFile(path+".new", []byte("two, longer"), 0o600)
			os.Rename(path+".new", path)
			select {
			case force := <-reloads:
				if force != tc.wantForce {
					t.Errorf("reload(force=%v), want force=%v", force, tc.wantForce)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("no reload within 2 s of a rename into place")
			}
			cancel()
			<-done
		})
	}
}
