package protocol

import (
	"errors"
	"fmt"
)

// MethodDownload reads a file: the edge sends its bytes as FrameData frames, then the result.
const MethodDownload = "download"

// DownloadParams asks for up to MaxBytes of the file at Path (absolute).
type DownloadParams struct {
	Path     string `json:"path"`
	MaxBytes int64  `json:"max_bytes"`
}

// Validate checks the path and bound.
func (p *DownloadParams) Validate() error {
	if p.Path == "" || p.Path[0] != '/' {
		return fmt.Errorf("path %q must be absolute", trunc(p.Path))
	}
	if len(p.Path) > MaxPathLen || containsAny(p.Path, "\x00") {
		return errors.New("path is too long or contains NUL")
	}
	if p.MaxBytes < 0 {
		return errors.New("max_bytes is negative")
	}
	return nil
}

// DownloadResult describes what the edge sent.
type DownloadResult struct {
	Path      string `json:"path"`
	Size      int64  `json:"size"`      // the file's size when opened
	Sent      int64  `json:"sent"`      // bytes sent in data frames
	SHA256    string `json:"sha256"`    // of the bytes sent, lower-case hex
	Truncated bool   `json:"truncated"` // Sent < Size (max_bytes reached)
	Mode      string `json:"mode"`      // octal permission bits, e.g. "0644"
}

// AppendFrame appends one encoded frame to dst and returns it; with enough capacity in dst
// it does not allocate (bulk senders reuse one buffer).
func AppendFrame(dst []byte, t FrameType, payload []byte) ([]byte, error) {
	max := t.maxLen()
	if max < 0 {
		return dst, fmt.Errorf("%w: %d", ErrUnknownFrame, byte(t))
	}
	if len(payload) > max {
		return dst, fmt.Errorf("%w: %s frame of %d bytes (max %d)", ErrFrameTooLarge, t, len(payload), max)
	}
	n := uint32(len(payload))
	dst = append(dst, byte(t), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	return append(dst, payload...), nil
}

// FrameHeaderLen is the size of a frame header (type byte and big-endian length).
const FrameHeaderLen = headerLen
