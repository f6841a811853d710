package protocol

import (
	"errors"
	"fmt"
	"path"
)

// MethodDownload reads a file: the edge sends its bytes as FrameData frames, then the result.
const MethodDownload = "download"

// DownloadParams asks for up to MaxBytes of the file at Path (absolute).
type DownloadParams struct {
	Path     string `json:"path"`
	MaxBytes int64  `json:"max_bytes"`
	// Within confines this download to directories the gateway's policy allows: Path must lie
	// below one of them as well as inside the edge's own EDGE_DOWNLOAD_DIRS, enforced as
	// UploadParams.Within is. Empty: only the edge's own directories apply.
	Within []string `json:"within,omitempty"`
}

// MaxWithin bounds how many directories UploadParams.Within and DownloadParams.Within name.
const MaxWithin = 64

// Validate checks the path, the confinement and the bound.
func (p *DownloadParams) Validate() error {
	if err := validateTarget(p.Path, p.Within); err != nil {
		return err
	}
	if p.MaxBytes < 0 {
		return errors.New("max_bytes is negative")
	}
	return nil
}

// validateTarget checks a transfer's path and the directories it is confined to.
func validateTarget(name string, within []string) error {
	if err := validateAbsPath("path", name); err != nil {
		return err
	}
	return validateWithin(within)
}

// validateAbsPath refuses a path that is not absolute, too long or holds a NUL byte.
func validateAbsPath(field, name string) error {
	if name == "" || name[0] != '/' {
		return fmt.Errorf("%s %q must be absolute", field, trunc(name))
	}
	return validateText(field, name, MaxPathLen)
}

// validateWithin checks a confinement list: at most MaxWithin absolute, clean directories.
func validateWithin(within []string) error {
	if len(within) > MaxWithin {
		return fmt.Errorf("within has %d entries (max %d)", len(within), MaxWithin)
	}
	for i, dir := range within {
		field := fmt.Sprintf("within[%d]", i)
		if err := validateAbsPath(field, dir); err != nil {
			return err
		}
		if clean := path.Clean(dir); clean != dir {
			return fmt.Errorf("%s %q is not a clean path: use %q", field, trunc(dir), trunc(clean))
		}
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
	// FileSHA256 is the SHA-256 of the whole file (lower-case hex): equal to SHA256 when the
	// whole file was sent; when it was truncated the edge reads on to the end to compute it,
	// up to MaxFileHash bytes. Empty when the file is larger than that, when it changed size
	// while being read, or from an edge older than this field.
	FileSHA256 string `json:"file_sha256,omitempty"`
}

// MaxFileHash bounds the file an edge reads to the end only to hash it (DownloadResult's
// FileSHA256 of a truncated download): 256 MiB, a few seconds on a small ARM board.
const MaxFileHash = 256 << 20

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
