package protocol

import (
	"bytes"
	"encoding/binary"
	"io"
	"slices"
	"testing"
)

// writeLog records each Write as one packet.
type writeLog struct {
	packets [][]byte
}

func (w *writeLog) Read([]byte) (int, error) { return 0, io.EOF }
func (w *writeLog) Close() error             { return nil }
func (w *writeLog) Write(p []byte) (int, error) {
	w.packets = append(w.packets, bytes.Clone(p))
	return len(p), nil
}

func yamuxHeader(typ byte, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

// TestCoalesce: a small data frame goes out in one write, every byte unchanged; other
// frames and large bodies pass through as written.
func TestCoalesce(t *testing.T) {
	small, large := bytes.Repeat([]byte("s"), 100), bytes.Repeat([]byte("L"), coalesceMax+1)
	for _, tc := range []struct {
		name   string
		writes [][]byte
		want   []int // sizes of the packets sent
	}{
		{"small data frame joined", [][]byte{yamuxHeader(0, 100), small}, []int{112}},
		{"large data frame as written", [][]byte{yamuxHeader(0, uint32(len(large))), large}, []int{12, len(large)}},
		{"window update alone", [][]byte{yamuxHeader(1, 0)}, []int{12}},
		{"data header without body", [][]byte{yamuxHeader(0, 0)}, []int{12}},
		{"body not the one announced", [][]byte{yamuxHeader(0, 5), small}, []int{12, 100}},
		{"two frames", [][]byte{yamuxHeader(0, 100), small, yamuxHeader(2, 0), yamuxHeader(0, 100), small}, []int{112, 12, 112}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &writeLog{}
			c := Coalesce(w)
			var all []byte
			for _, p := range tc.writes {
				n, err := c.Write(p)
				if err != nil || n != len(p) {
					t.Fatalf("Write(%d bytes) = %d, %v", len(p), n, err)
				}
				all = append(all, p...)
			}
			var got []int
			for _, p := range w.packets {
				got = append(got, len(p))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("packets %v, want %v", got, tc.want)
			}
			if sent := bytes.Join(w.packets, nil); !bytes.Equal(sent, all) {
				t.Fatal("the bytes sent differ from the bytes written")
			}
		})
	}
}
