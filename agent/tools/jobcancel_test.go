package tools_test

import (
	"strings"
	"testing"
)

// TestCancelCommandDescribesGrace: the model is told that cancel_command sends SIGTERM first
// and SIGKILL only after a fixed grace, so that it knows what a cancel mid-upgrade does.
func TestCancelCommandDescribesGrace(t *testing.T) {
	h := newHarness(t, &fakeFleet{}, baseConfig())
	d := h.tools["cancel_command"].Description
	for _, want := range []string{"SIGTERM", "10 seconds later gets SIGKILL", "killed either way"} {
		if !strings.Contains(d, want) {
			t.Errorf("cancel_command's description lacks %q: %s", want, d)
		}
	}
}
