//go:build !unix

package upgrade

import (
	"errors"
	"os"
	"syscall"
)

// Descriptor hand-off needs Unix fd inheritance; elsewhere the package
// builds, New works for a non-child, and Upgrade fails.

type fdKind uint32

const (
	kindSocket fdKind = iota
	kindPipe
	kindRegular
)

func checkFD(int, fdKind) error { return errors.ErrUnsupported }

func setCloseOnExec(int) {}

func dupConn(syscall.Conn, string) (*os.File, error) { return nil, errors.ErrUnsupported }
