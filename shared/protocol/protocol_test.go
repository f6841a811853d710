package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	big := bytes.Repeat([]byte("x"), 3*MaxDataFrame+7)
	if err := WriteJSON(&buf, FrameRequest, Request{V: Version, ID: "1", Method: MethodExec}); err != nil {
		t.Fatal(err)
	}
	if _, err := (DataWriter{W: &buf, T: FrameData}).Write(big); err != nil {
		t.Fatal(err)
	}
	if err := WriteFrame(&buf, FrameData, nil); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&buf)
	typ, p, err := r.Next()
	if err != nil || typ != FrameRequest {
		t.Fatalf("first frame %v %v", typ, err)
	}
	req, err := DecodeRequest(p)
	if err != nil || req.Method != MethodExec {
		t.Fatalf("DecodeRequest: %+v %v", req, err)
	}
	var got []byte
	frames := 0
	for {
		typ, p, err := r.Next()
		if err != nil || typ != FrameData {
			t.Fatalf("frame %v %v", typ, err)
		}
		if len(p) == 0 {
			break
		}
		frames++
		got = append(got, p...)
	}
	if !bytes.Equal(got, big) || frames != 4 {
		t.Fatalf("got %d bytes in %d frames, want %d in 4", len(got), frames, len(big))
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("after last frame: %v, want io.EOF", err)
	}
}

func TestReaderRejects(t *testing.T) {
	hdr := func(typ byte, n uint32) []byte {
		b := []byte{typ, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], n)
		return b
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"oversized json", hdr(byte(FrameRequest), MaxJSONFrame+1), ErrFrameTooLarge},
		{"oversized data", hdr(byte(FrameStdout), MaxDataFrame+1), ErrFrameTooLarge},
		{"cancel with payload", hdr(byte(FrameCancel), 1), ErrFrameTooLarge},
		{"unknown type", hdr(99, 0), ErrUnknownFrame},
		{"truncated header", []byte{1, 0}, io.ErrUnexpectedEOF},
		{"truncated payload", append(hdr(byte(FrameData), 10), 1, 2), io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := NewReader(bytes.NewReader(tc.in)).Next()
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		in   string
		code string
	}{
		{`{"v":1,"id":"a","method":"exec"}`, ""},
		{`{"v":2,"id":"a","method":"exec"}`, ""},
		{`{"v":3,"id":"a","method":"exec"}`, CodeUnsupportedVersion},
		{`{"id":"a","method":"exec"}`, CodeBadRequest},
		{`{"v":1,"method":""}`, CodeBadRequest},
		{`not json`, CodeBadRequest},
	}
	for _, tc := range tests {
		_, err := DecodeRequest([]byte(tc.in))
		var pe *Error
		switch {
		case tc.code == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tc.in, err)
		case tc.code != "" && (!errors.As(err, &pe) || pe.Code != tc.code):
			t.Errorf("%s: err = %v, want code %s", tc.in, err, tc.code)
		}
	}
}

func TestDecodeParamsStrict(t *testing.T) {
	req := &Request{V: 1, Method: MethodExec, Params: []byte(`{"argv":["true"],"frobnicate":1}`)}
	var p ExecParams
	if err := req.DecodeParams(&p); err == nil || !strings.Contains(err.Error(), "frobnicate") {
		t.Fatalf("unknown field accepted: %v", err)
	}
}

func TestValidate(t *testing.T) {
	ok := ExecParams{Argv: []string{"true"}, TimeoutMs: 1000, MaxOutputBytes: 10}
	tests := []struct {
		name  string
		p     ExecParams
		valid bool
	}{
		{"argv", ok, true},
		{"both", ExecParams{Argv: []string{"a"}, Command: "b", TimeoutMs: 1, MaxOutputBytes: 1}, false},
		{"neither", ExecParams{TimeoutMs: 1, MaxOutputBytes: 1}, false},
		{"bad env", ExecParams{Argv: []string{"a"}, Env: map[string]string{"A=B": "c"}, TimeoutMs: 1, MaxOutputBytes: 1}, false},
		{"no timeout", ExecParams{Argv: []string{"a"}, MaxOutputBytes: 1}, false},
	}
	for _, tc := range tests {
		if err := tc.p.Validate(); (err == nil) != tc.valid {
			t.Errorf("%s: Validate() = %v", tc.name, err)
		}
	}
	up := []struct {
		p     UploadParams
		valid bool
	}{
		{UploadParams{Path: "/tmp/x", SHA256: strings.Repeat("a", 64), Mode: 0o644}, true},
		{UploadParams{Path: "tmp/x", SHA256: strings.Repeat("a", 64)}, false},
		{UploadParams{Path: "/tmp/x", SHA256: "abc"}, false},
		{UploadParams{Path: "/tmp/x", SHA256: strings.Repeat("a", 64), Mode: 0o100644}, false},
	}
	for _, tc := range up {
		if err := tc.p.Validate(); (err == nil) != tc.valid {
			t.Errorf("%+v: Validate() = %v", tc.p, err)
		}
	}
	h := Hello{Protocol: 1, Name: "pi", Labels: map[string]string{"bad key!": "x"}}
	if err := h.Validate(); err == nil {
		t.Error("hello with a bad label key accepted")
	}
}

// FuzzDecode feeds arbitrary bytes to the frame reader and the JSON decoders: whatever an edge
// or gateway sends, decoding returns an error or a bounded value, never a panic or a huge
// allocation.
func FuzzDecode(f *testing.F) {
	var seed bytes.Buffer
	WriteJSON(&seed, FrameRequest, Request{V: 1, ID: "x", Method: MethodExec, Params: []byte(`{"argv":["true"],"timeout_ms":1000,"max_output_bytes":10}`)})
	WriteFrame(&seed, FrameData, []byte("stdin"))
	WriteFrame(&seed, FrameData, nil)
	WriteJSON(&seed, FrameResult, Response{V: 1, Error: &Error{Code: CodeBusy, Message: "busy"}})
	f.Add(seed.Bytes())
	f.Add([]byte{1, 0, 0, 0, 2, '{', '}'})
	f.Add([]byte{5, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		for range 64 {
			typ, p, err := r.Next()
			if err != nil {
				return
			}
			if len(p) > typ.maxLen() {
				t.Fatalf("%s frame of %d bytes passed the bound", typ, len(p))
			}
			switch typ {
			case FrameRequest:
				if req, err := DecodeRequest(p); err == nil {
					var ep ExecParams
					if req.DecodeParams(&ep) == nil {
						_ = ep.Validate()
					}
					var up UploadParams
					if req.DecodeParams(&up) == nil {
						_ = up.Validate()
					}
				}
			case FrameResult:
				var res ExecResult
				_ = DecodeResponse(p, &res)
			}
		}
	})
}
