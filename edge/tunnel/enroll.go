package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

// Enroll proves an enrolment secret to the gateway at addr: the host key must match pins
// (checked before anything is sent), then the edge authenticates with its key and answers
// the gateway's keyboard-interactive prompt with secret. On success the gateway has bound
// the key to the enrolment's name and labels; the connection is closed at once. The private
// key never leaves the device.
func Enroll(ctx context.Context, addr string, pins *keys.Pins, signer ssh.Signer, name, secret string) error {
	d := net.Dialer{Timeout: dialTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial gateway %s: %w", addr, err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(handshakeTimeout))
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	asked := false
	cfg := &ssh.ClientConfig{
		User: name,
		Auth: []ssh.AuthMethod{
			ssh.PublicKeys(signer),
			ssh.KeyboardInteractive(func(_, _ string, questions []string, _ []bool) ([]string, error) {
				if len(questions) != 1 || asked {
					return nil, errors.New("unexpected prompt from the gateway")
				}
				asked = true
				return []string{secret}, nil
			}),
		},
		HostKeyCallback: pins.HostKeyCallback(),
		ClientVersion:   "SSH-2.0-mcp-ssh-edge_enroll",
		Timeout:         handshakeTimeout,
	}
	conn, chans, reqs, err := ssh.NewClientConn(nc, addr, cfg)
	if err != nil {
		if errors.Is(err, keys.ErrHostKeyMismatch) {
			return fmt.Errorf("the gateway at %s does not have the host key of the enrolment string: refused before authenticating", addr)
		}
		if asked {
			return fmt.Errorf("the gateway refused the enrolment secret (already used, expired or wrong): ask for a new enrolment string")
		}
		return fmt.Errorf("enrolment handshake with %s: %w", addr, err)
	}
	go ssh.DiscardRequests(reqs)
	go func() {
		for nch := range chans {
			_ = nch.Reject(ssh.Prohibited, "enrolment only")
		}
	}()
	return conn.Close()
}
