package gateway

import (
	"container/list"
	"sync"
	"time"
)

// maxFailEntries bounds the keys one failLimiter remembers.
const maxFailEntries = 4096

// failLimiter de-duplicates one kind of event: an event whose key was let through less than
// window ago is suppressed. Its memory is bounded: beyond its size, the key let through
// longest ago is forgotten, so that a flood of new keys forgets the oldest first. Each kind
// of event has a failLimiter of its own, so that a flood of one kind leaves the others alone.
type failLimiter struct {
	mu     sync.Mutex
	window time.Duration
	size   int
	order  *list.List               // of *failEntry, the one let through longest ago first
	byKey  map[string]*list.Element // into order
}

type failEntry struct {
	key string
	at  time.Time // when it was last let through
}

// newFailLimiter remembers up to maxFailEntries keys.
func newFailLimiter(window time.Duration) *failLimiter {
	return newFailLimiterSize(window, maxFailEntries)
}

func newFailLimiterSize(window time.Duration, size int) *failLimiter {
	return &failLimiter{window: window, size: max(size, 1), order: list.New(), byKey: map[string]*list.Element{}}
}

// allow reports whether the event key, at now, is to be reported: it was not let through
// within the window.
func (l *failLimiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, ok := l.byKey[key]; ok {
		e := el.Value.(*failEntry)
		if now.Sub(e.at) < l.window {
			return false
		}
		e.at = now
		l.order.MoveToBack(el)
		return true
	}
	if l.order.Len() >= l.size {
		oldest := l.order.Remove(l.order.Front()).(*failEntry)
		delete(l.byKey, oldest.key)
	}
	l.byKey[key] = l.order.PushBack(&failEntry{key: key, at: now})
	return true
}
