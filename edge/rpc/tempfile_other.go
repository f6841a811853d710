//go:build !linux

package rpc

import (
	"errors"
	"os"
)

var errNoTmpfile = errors.New("O_TMPFILE is Linux-only")

func openAnonymous(*os.File) (*os.File, error) { return nil, errNoTmpfile }

func linkAnonymous(_, _ *os.File, _ string) error { return errNoTmpfile }

// startWriteback is Linux-only (sync_file_range); elsewhere the final fsync does it all.
func startWriteback(*os.File, int64, int64) error { return nil }

// setDirect is Linux-only here (O_DIRECT through fcntl); elsewhere uploads use the page cache.
func setDirect(*os.File, bool) error { return errors.ErrUnsupported }
