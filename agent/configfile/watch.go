package configfile

import (
	"context"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// WatchOptions configure Watch.
type WatchOptions struct {
	Path     string        // the file
	What     string        // names it in log lines, e.g. "policy"
	Poll     time.Duration // how often changed is asked besides inotify
	Debounce time.Duration // wait after the first sign of a change before reload
	NoNotify bool          // poll only (tests, filesystems without inotify)
	Log      *slog.Logger
}

// Watch calls reload whenever the file may have changed, until ctx is done: on inotify events
// of the file's directory (so an editor's rename into place and a Kubernetes-style symlink
// swap are seen, not only writes), and when changed reports a new version at a poll (for
// when inotify is unavailable or misses). reload runs debounce after the first sign of a
// change, not pushed back by later ones, so a directory that never stops changing cannot
// starve it; force is true when an event named the file itself (read it even if its stamp
// looks the same). Watch returns once ctx is done, having stopped everything it started.
func Watch(ctx context.Context, o WatchOptions, changed func() bool, reload func(force bool)) {
	base := filepath.Base(o.Path)
	var events <-chan fsnotify.Event
	var errs <-chan error
	if !o.NoNotify {
		fw, err := fsnotify.NewWatcher()
		if err != nil {
			o.Log.Warn(o.What+": no file watcher, checking the file at each poll", "file", o.Path, "err", err)
		} else {
			defer fw.Close()
			if err := fw.Add(filepath.Dir(o.Path)); err != nil {
				o.Log.Warn(o.What+": cannot watch the directory, checking the file at each poll", "dir", filepath.Dir(o.Path), "err", err)
			} else {
				events, errs = fw.Events, fw.Errors
			}
		}
	}
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	armed := false
	arm := func() {
		if !armed {
			debounce.Reset(o.Debounce)
			armed = true
		}
	}
	poll := time.NewTicker(o.Poll)
	defer poll.Stop()
	force := false
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			// Any entry of the directory may be the file's target (..data of a ConfigMap
			// volume, an editor's temporary file renamed over it): check after every one.
			if filepath.Base(ev.Name) == base {
				force = true
			}
			arm()
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			o.Log.Warn(o.What+": file watcher error", "err", err)
		case <-debounce.C:
			armed = false
			reload(force)
			force = false
		case <-poll.C:
			if !armed && changed() {
				arm() // read once the writer has had a moment to finish
			}
		}
	}
}
