package tools

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// DownloadInput is download_file's arguments.
type DownloadInput struct {
	Edge      string `json:"edge" jsonschema:"the edge to read from: its name from get_status (or its SHA256 key fingerprint)"`
	Path      string `json:"path" jsonschema:"absolute path of the file on the edge, e.g. /var/log/syslog"`
	MaxBytes  int64  `json:"max_bytes,omitempty" jsonschema:"most bytes to read from the start of the file; default and maximum for content returned inline: the gateway's MAX_OUTPUT_BYTES (usually 1 MiB); with dest_path: MAX_TRANSFER_BYTES"`
	DestPath  string `json:"dest_path,omitempty" jsonschema:"for large or binary files: save the file on the gateway under this name inside its FILES_DIR instead of returning the content (paths outside FILES_DIR are refused)"`
	Overwrite bool   `json:"overwrite,omitempty" jsonschema:"with dest_path: replace an existing file; default false fails if it exists"`
}

// DownloadOutput is download_file's result.
type DownloadOutput struct {
	Edge       string `json:"edge" jsonschema:"the edge's name"`
	Path       string `json:"path" jsonschema:"the file read on the edge"`
	Size       int64  `json:"size" jsonschema:"the file's size on the edge in bytes"`
	Bytes      int64  `json:"bytes" jsonschema:"bytes returned (or written to dest_path)"`
	SHA256     string `json:"sha256" jsonschema:"SHA-256 (lower-case hex) of the bytes returned or saved, checked end to end: of the first bytes only when truncated is true; compare file_sha256 with a checksum of the whole file"`
	FileSHA256 string `json:"file_sha256" jsonschema:"SHA-256 (lower-case hex) of the whole file on the edge, even when truncated (the edge reads the rest only to hash it); empty when truncated and the file is larger than 256 MiB (not hashed, to bound the edge's work), when the file changed size while being read, or with an older edge"`
	Truncated  bool   `json:"truncated" jsonschema:"true when only the first max_bytes of the file were read: content, bytes and sha256 are of that part"`
	Encoding   string `json:"encoding" jsonschema:"how content is encoded: utf-8 for text, base64 for anything else; empty with dest_path"`
	Content    string `json:"content" jsonschema:"the file's bytes (see encoding); empty with dest_path"`
	DestPath   string `json:"dest_path" jsonschema:"where the file was saved on the gateway (inside FILES_DIR); empty when returned inline"`
}

func downloadTool() mcp.Tool {
	return mcp.NewTool("download_file",
		mcp.WithDescription("Read a file from an edge device, verified by SHA-256. Text comes back as UTF-8, anything else as base64 (see encoding). "+
			"Inline content is capped (max_bytes, default the gateway's MAX_OUTPUT_BYTES; truncated tells if the file was longer, and then sha256 is of the part returned while file_sha256 is of the whole file). "+
			"For large files pass dest_path to save the file into the gateway's FILES_DIR without passing it through the conversation. "+
			"For a command's output use run_command; to write a file use upload_file."),
		hints("Download a file from an edge", true, false, true, true),
		mcp.WithInputSchema[DownloadInput](),
		mcp.WithOutputSchema[DownloadOutput](),
	)
}

func (h *handlers) downloadFile(ctx context.Context, req mcp.CallToolRequest, in DownloadInput) *mcp.CallToolResult {
	const tool = "download_file"
	if err := checkEdgeArg(in.Edge); err != nil {
		return errResult(err.Error())
	}
	if in.Path == "" || !path.IsAbs(in.Path) || len(in.Path) > protocol.MaxPathLen || strings.ContainsRune(in.Path, 0) {
		return errResult(fmt.Sprintf("path %q must be an absolute file path on the edge, e.g. /etc/hostname", oneLine(in.Path)))
	}
	limit := h.cfg.MaxOutputBytes
	if in.DestPath != "" {
		limit = h.cfg.MaxTransferBytes
	}
	max := in.MaxBytes
	switch {
	case max == 0:
		max = limit
	case max < 0:
		return errResult("max_bytes must be positive")
	case max > limit && in.DestPath == "":
		return errResult(fmt.Sprintf("max_bytes %d is above %d for inline content: pass dest_path to save a large file into the gateway's FILES_DIR", max, limit))
	case max > limit:
		return errResult(fmt.Sprintf("max_bytes %d is above this gateway's MAX_TRANSFER_BYTES of %d", max, limit))
	}
	p := protocol.DownloadParams{Path: in.Path, MaxBytes: max}

	if in.DestPath == "" {
		var buf bytes.Buffer
		c, cres := h.begin(ctx, req, tool, in.Edge, ask{path: in.Path}, audit.Event{})
		if cres != nil {
			return cres
		}
		start := time.Now()
		p.Within = c.within
		res, err := c.edge.Download(ctx, c.id, p, &buf)
		ev := audit.Event{Path: in.Path, DurationMs: audit.Ptr(time.Since(start).Milliseconds())}
		if err != nil {
			c.end(outcomeOf(err), err, ev)
			return errResult(edgeMessage(c.name, err))
		}
		ev.Bytes, ev.SHA256 = audit.Ptr(res.Sent), res.SHA256
		c.end("ok", nil, ev)
		out := DownloadOutput{Edge: c.name, Path: res.Path, Size: res.Size, Bytes: res.Sent, SHA256: res.SHA256, FileSHA256: res.FileSHA256,
			Truncated: res.Truncated}
		b := buf.Bytes()
		if utf8.Valid(b) && bytes.IndexByte(b, 0) < 0 {
			out.Encoding, out.Content = "utf-8", string(b)
		} else {
			out.Encoding, out.Content = "base64", base64.StdEncoding.EncodeToString(b)
		}
		return okResult(out)
	}

	rel, err := h.filesRel("dest_path", in.DestPath)
	if err != nil {
		return errResult(err.Error())
	}
	root, err := h.openFilesRoot()
	if err != nil {
		return errResult(err.Error())
	}
	defer root.Close()
	dest, err := createDest(root, rel, in.Overwrite)
	if err != nil {
		return errResult(err.Error())
	}
	c, cres := h.begin(ctx, req, tool, in.Edge, ask{path: in.Path}, audit.Event{})
	if cres != nil {
		dest.discard()
		return cres
	}
	start := time.Now()
	p.Within = c.within
	res, err := c.edge.Download(ctx, c.id, p, dest)
	ev := audit.Event{Path: in.Path, DurationMs: audit.Ptr(time.Since(start).Milliseconds())}
	if err == nil {
		err = dest.commit()
	} else {
		dest.discard()
	}
	if err != nil {
		c.end(outcomeOf(err), err, ev)
		return errResult(edgeMessage(c.name, err))
	}
	ev.Bytes, ev.SHA256 = audit.Ptr(res.Sent), res.SHA256
	c.end("ok", nil, ev)
	return okResult(DownloadOutput{Edge: c.name, Path: res.Path, Size: res.Size, Bytes: res.Sent, SHA256: res.SHA256,
		FileSHA256: res.FileSHA256, Truncated: res.Truncated, DestPath: rel})
}
