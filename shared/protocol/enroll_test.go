package protocol

import (
	"strings"
	"testing"
)

func validEnrollment() Enrollment {
	return Enrollment{Gateway: "gw.example:2222", HostKey: "SHA256:" + strings.Repeat("A", 43),
		Secret: strings.Repeat("s", 43), Name: "cam1"}
}

func TestParseEnrollment(t *testing.T) {
	good := validEnrollment().Encode()
	tests := []struct {
		name, in, want string
	}{
		{"good", good, ""},
		{"good with spaces", "  " + good + "\n", ""},
		{"no prefix", strings.TrimPrefix(good, EnrollPrefix), "must start with"},
		{"not base64", EnrollPrefix + "!!!", "damaged"},
		{"not json", EnrollPrefix + "bm90IGpzb24", "damaged"},
		{"too long", EnrollPrefix + strings.Repeat("A", MaxEnrollLen), "more than"},
		{"bad gateway", func() string { e := validEnrollment(); e.Gateway = "nohost"; return e.Encode() }(), "gateway"},
		{"bad host key", func() string { e := validEnrollment(); e.HostKey = "MD5:aa"; return e.Encode() }(), "host_key"},
		{"short secret", func() string { e := validEnrollment(); e.Secret = "abc"; return e.Encode() }(), "secret"},
		{"bad name", func() string { e := validEnrollment(); e.Name = "Bad Name"; return e.Encode() }(), "name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := ParseEnrollment(tc.in)
			if tc.want == "" {
				if err != nil || e != validEnrollment() {
					t.Fatalf("got %+v, %v", e, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), strings.Repeat("s", 43)) {
				t.Fatal("error echoes the secret")
			}
		})
	}
}

// FuzzParseEnrollment: any string either fails with an error or parses into an enrolment
// that validates and survives an encode/parse round trip.
func FuzzParseEnrollment(f *testing.F) {
	f.Add(validEnrollment().Encode())
	f.Add(EnrollPrefix)
	f.Add(EnrollPrefix + "e30")
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseEnrollment(s)
		if err != nil {
			return
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("parsed but invalid: %v", err)
		}
		again, err := ParseEnrollment(e.Encode())
		if err != nil || again != e {
			t.Fatalf("round trip: %+v, %v", again, err)
		}
	})
}
