package forward

import (
	"io/fs"
	"syscall"
)

func stampOf(st fs.FileInfo) fileStamp {
	s := fileStamp{exists: true, size: st.Size(), mod: st.ModTime().UnixNano()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		s.ino = sys.Ino
	}
	return s
}
