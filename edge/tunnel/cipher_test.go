package tunnel

import (
	"testing"

	"golang.org/x/crypto/ssh"
)

// TestCipherOrder: ChaCha20-Poly1305 comes first exactly where AES has no hardware support.
func TestCipherOrder(t *testing.T) {
	for _, tc := range []struct {
		goarch     string
		arm64AES   bool
		wantChaCha bool
	}{
		{"amd64", false, false},
		{"arm64", true, false},
		{"arm64", false, true}, // Raspberry Pi 4 (Cortex-A72 without the crypto extension)
		{"arm", false, true},   // armv6/armv7 boards
		{"arm", true, true},
	} {
		got := cipherOrder(tc.goarch, tc.arm64AES)
		if !tc.wantChaCha {
			if got != nil {
				t.Errorf("%s aes=%v: %v, want the library default (nil)", tc.goarch, tc.arm64AES, got)
			}
			continue
		}
		if len(got) == 0 || got[0] != ssh.CipherChaCha20Poly1305 {
			t.Fatalf("%s aes=%v: %v, want chacha20-poly1305 first", tc.goarch, tc.arm64AES, got)
		}
		seen := map[string]bool{}
		for _, c := range got {
			if seen[c] {
				t.Errorf("%s: cipher %s listed twice", tc.goarch, c)
			}
			seen[c] = true
		}
		if len(got) != len(ssh.SupportedAlgorithms().Ciphers) {
			t.Errorf("%s: %d ciphers, want all %d supported ones", tc.goarch, len(got), len(ssh.SupportedAlgorithms().Ciphers))
		}
	}
}
