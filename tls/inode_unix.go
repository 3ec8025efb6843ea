//go:build unix

package tls

import (
	"os"
	"syscall"
)

// inode returns the device and inode numbers behind fi.
func inode(fi os.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino) //nolint:unconvert // field types differ by platform
	}
	return 0, 0
}
