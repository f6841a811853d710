package tools

import (
	"testing"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

func TestParseJobID(t *testing.T) {
	for _, tc := range []struct {
		in       string
		edge, id string
		ok       bool
	}{
		{"web1/0123456789abcdef", "web1", "0123456789abcdef", true},
		{"web1", "", "", false},
		{"/0123456789abcdef", "", "", false},
		{"web1/../../etc", "", "", false},
		{"web1/0123456789ABCDEF", "", "", false},
	} {
		edge, id, err := parseJobID(tc.in)
		if (err == nil) != tc.ok || edge != tc.edge || id != tc.id {
			t.Errorf("parseJobID(%q) = %q %q %v", tc.in, edge, id, err)
		}
	}
}

// TestJobOutputRuneBoundary: a page that ends inside a UTF-8 character stops before it, and
// next_since points at its first byte, while more output may follow.
func TestJobOutputRuneBoundary(t *testing.T) {
	full := []byte("aé") // 'é' is 2 bytes
	for _, tc := range []struct {
		name     string
		st       protocol.JobStatus
		want     string
		wantNext int64
	}{
		{"cut while running", protocol.JobStatus{Status: protocol.JobRunning, Output: full[:2], NextSince: 2, OutputSize: 2}, "a", 1},
		{"cut with more recorded", protocol.JobStatus{Status: protocol.JobExited, Output: full[:2], NextSince: 2, OutputSize: 3}, "a", 1},
		{"whole", protocol.JobStatus{Status: protocol.JobRunning, Output: full, NextSince: 3, OutputSize: 3}, "aé", 3},
		{"finished, invalid tail replaced", protocol.JobStatus{Status: protocol.JobExited, Output: full[:2], NextSince: 2, OutputSize: 2}, "a\uFFFD", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.st.ID = "0123456789abcdef"
			out := jobOutput("e1", tc.st)
			if out.Output != tc.want || out.NextSince != tc.wantNext || out.JobID != "e1/0123456789abcdef" || out.Argv == nil {
				t.Errorf("got %q next %d id %s", out.Output, out.NextSince, out.JobID)
			}
		})
	}
}
