//go:build !linux

package rpc

import (
	"errors"
	"os"
)

var errNoTmpfile = errors.New("O_TMPFILE is Linux-only")

func openAnonymous(*os.File) (*os.File, error) { return nil, errNoTmpfile }

func linkAnonymous(_, _ *os.File, _ string) error { return errNoTmpfile }
