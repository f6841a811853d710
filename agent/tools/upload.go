package tools

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/memory"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// UploadInput is upload_file's arguments.
type UploadInput struct {
	Edge       string `json:"edge" jsonschema:"the edge to write to: its name from get_status (or its SHA256 key fingerprint)"`
	Path       string `json:"path" jsonschema:"absolute path of the file to write on the edge, e.g. /etc/app/config.yaml"`
	Content    string `json:"content,omitempty" jsonschema:"the whole file content: plain text, or base64 when encoding is base64; at most the gateway's MAX_UPLOAD_BYTES after decoding. Give exactly one of content or source_path"`
	SourcePath string `json:"source_path,omitempty" jsonschema:"for large files: a file inside the gateway's FILES_DIR to send instead of content (streamed, up to MAX_TRANSFER_BYTES; paths outside FILES_DIR are refused)"`
	Encoding   string `json:"encoding,omitempty" jsonschema:"how content is encoded: utf-8 (default) for text, base64 for binary files,enum=utf-8,enum=base64"`
	Mode       string `json:"mode,omitempty" jsonschema:"permission bits as an octal string, e.g. 0644 (default) or 0755 for a script; setuid and setgid are refused"`
	Overwrite  bool   `json:"overwrite,omitempty" jsonschema:"true to replace an existing file; default false fails if the file exists"`
	CreateDirs bool   `json:"create_dirs,omitempty" jsonschema:"true to create missing parent directories; default false fails if the directory does not exist"`
}

// UploadOutput is upload_file's result: what the edge wrote and verified.
type UploadOutput struct {
	Edge   string `json:"edge" jsonschema:"the edge's name"`
	Path   string `json:"path" jsonschema:"absolute path written"`
	Size   int64  `json:"size" jsonschema:"bytes written"`
	SHA256 string `json:"sha256" jsonschema:"SHA-256 of the content (lower-case hex), verified by the edge"`
	Mode   string `json:"mode" jsonschema:"permission bits set, octal, e.g. 0644"`
}

func uploadTool() mcp.Tool {
	return mcp.NewTool("upload_file",
		mcp.WithDescription("Write a file on an edge device atomically (the old file or the new one, never a partial file), verified by size and SHA-256. "+
			"Use it instead of echo/cat through run_command. Text goes as is; binary content as base64 with encoding base64. "+
			"Fails if the file exists unless overwrite is true, and if the directory is missing unless create_dirs is true."),
		hints("Upload a file to an edge", false, true, false, true),
		mcp.WithInputSchema[UploadInput](),
		mcp.WithOutputSchema[UploadOutput](),
	)
}

// parseMode reads an octal permission string strictly: 3 or 4 octal digits, optional "0o"
// prefix. Setuid and setgid are refused.
func parseMode(s string) (uint32, error) {
	if s == "" {
		return 0o644, nil
	}
	digits := strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0O")
	if len(digits) < 3 || len(digits) > 4 || strings.Trim(digits, "01234567") != "" {
		return 0, fmt.Errorf("mode %q is not an octal permission string: use 3 or 4 octal digits such as 0644 or 0755", oneLine(s))
	}
	m, err := strconv.ParseUint(digits, 8, 32)
	if err != nil {
		return 0, fmt.Errorf("mode %q: %w", oneLine(s), err)
	}
	if m&0o6000 != 0 {
		return 0, fmt.Errorf("mode %s sets setuid or setgid, which is always refused: use e.g. 0755", s)
	}
	return uint32(m), nil
}

// decodeContent turns content into bytes per encoding, bounded by max before and after.
func decodeContent(content, encoding string, max int64) ([]byte, error) {
	switch strings.ToLower(encoding) {
	case "", "utf-8", "utf8":
		if int64(len(content)) > max {
			return nil, fmt.Errorf("content is %d bytes, above this gateway's MAX_UPLOAD_BYTES of %d", len(content), max)
		}
		return []byte(content), nil
	case "base64":
		// Checked before decoding: 4 characters per 3 bytes, plus slack for line breaks.
		if int64(len(content)) > (max+2)/3*4+max/64+1024 {
			return nil, fmt.Errorf("content is about %d bytes decoded, above this gateway's MAX_UPLOAD_BYTES of %d", len(content)/4*3, max)
		}
		// Line breaks are common in base64 from tools; anything else outside the alphabet is an error.
		clean := strings.Map(func(r rune) rune {
			if r == '\n' || r == '\r' || r == ' ' || r == '\t' {
				return -1
			}
			return r
		}, content)
		b, err := base64.StdEncoding.DecodeString(clean)
		if err != nil {
			return nil, fmt.Errorf("content is not valid base64 (standard alphabet with = padding): %v", err)
		}
		if int64(len(b)) > max {
			return nil, fmt.Errorf("content is %d bytes decoded, above this gateway's MAX_UPLOAD_BYTES of %d", len(b), max)
		}
		return b, nil
	}
	return nil, fmt.Errorf("encoding %q is not supported: use utf-8 (text) or base64 (binary)", oneLine(encoding))
}

// uploadParams validates the arguments and builds the RPC parameters and body.
func (h *handlers) uploadParams(in UploadInput) (protocol.UploadParams, []byte, error) {
	var p protocol.UploadParams
	if err := checkEdgeArg(in.Edge); err != nil {
		return p, nil, err
	}
	switch {
	case in.Path == "" || !path.IsAbs(in.Path):
		return p, nil, fmt.Errorf("path %q must be absolute, e.g. /tmp/file.txt", oneLine(in.Path))
	case len(in.Path) > protocol.MaxPathLen || strings.ContainsRune(in.Path, 0):
		return p, nil, fmt.Errorf("path is longer than %d bytes or contains NUL", protocol.MaxPathLen)
	case strings.HasSuffix(in.Path, "/"):
		return p, nil, fmt.Errorf("path %q names a directory: give the file's full path", oneLine(in.Path))
	}
	mode, err := parseMode(in.Mode)
	if err != nil {
		return p, nil, err
	}
	body, err := decodeContent(in.Content, in.Encoding, h.cfg.MaxUploadBytes)
	if err != nil {
		return p, nil, err
	}
	sum := sha256.Sum256(body)
	p = protocol.UploadParams{
		Path:       in.Path,
		Size:       int64(len(body)),
		SHA256:     hex.EncodeToString(sum[:]),
		Mode:       mode,
		Overwrite:  in.Overwrite,
		CreateDirs: in.CreateDirs,
	}
	if err := p.Validate(); err != nil {
		return p, nil, err
	}
	return p, body, nil
}

func (h *handlers) uploadFile(ctx context.Context, req mcp.CallToolRequest, in UploadInput) *mcp.CallToolResult {
	const tool = "upload_file"
	if _, ok := req.GetArguments()["content"]; !ok && in.SourcePath == "" {
		return errResult("give the file as content (text, or base64 with encoding base64) or as source_path (a file in the gateway's FILES_DIR)")
	}
	var p protocol.UploadParams
	var body io.Reader
	if in.SourcePath != "" {
		if in.Content != "" {
			return errResult("give exactly one of content or source_path, not both")
		}
		src, params, err := h.sourceFile(in)
		if err != nil {
			return errResult(err.Error())
		}
		defer src.Close()
		p, body = params, src
	} else {
		params, b, err := h.uploadParams(in)
		if err != nil {
			return errResult(err.Error())
		}
		p, body = params, bytes.NewReader(b)
		if len(b) >= memory.BigTransfer {
			// mcp-go holds the request's JSON and its decoded copies, several times the file.
			defer h.release.Soon()
		}
	}
	c, res := h.begin(ctx, req, tool, in.Edge, ask{path: p.Path}, audit.Event{Bytes: audit.Ptr(p.Size), SHA256: p.SHA256})
	if res != nil {
		return res
	}
	start := time.Now()
	p.Within = c.within
	ur, err := c.edge.Upload(ctx, c.id, p, body)
	// Upload checked the edge's size and SHA-256 against what was sent; with source_path the
	// SHA-256 is the one computed while sending.
	ev := audit.Event{Path: p.Path, Bytes: audit.Ptr(p.Size), SHA256: cmp.Or(p.SHA256, ur.SHA256),
		DurationMs: audit.Ptr(time.Since(start).Milliseconds())}
	if err != nil {
		c.end(outcomeOf(err), err, ev)
		return errResult(edgeMessage(c.name, err))
	}
	c.end("ok", nil, ev)
	out := UploadOutput{Edge: c.name, Path: ur.Path, Size: ur.Size, SHA256: ur.SHA256, Mode: ur.Mode}
	if out.Path == "" {
		out.Path = p.Path
	}
	if out.Mode == "" {
		out.Mode = fmt.Sprintf("%04o", p.Mode)
	}
	return okResult(out)
}
