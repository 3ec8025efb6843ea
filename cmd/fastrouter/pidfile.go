package main

import (
	"log/slog"
	"os"
	"strconv"
	"strings"
)

// --pid-file across a binary upgrade (SIGUSR2). The new process writes the
// file before it tells the old one it is ready (upgrade.Ready), so from the
// moment the old one stops serving the file names the new one. The old one
// then leaves the file alone: it belongs to the new process, which may be
// rewriting it at that very moment (a check of the contents followed by a
// remove would race that rename and could delete the new process's file).
// An upgrade that fails killed the new process before reporting it, so the
// old one, which keeps serving, writes its own pid back.

// writePIDFile writes this process's id, atomically: a supervisor reading it
// during an upgrade sees the old pid or the new one, never a torn write.
func writePIDFile(path string) error {
	tmp := path + ".tmp." + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// releasePIDFile is the exiting process's last word on the file: after a
// hand-off nothing (the new process owns it); else remove it if it still
// names this process.
func releasePIDFile(path string, handedOff bool) {
	if handedOff {
		return
	}
	b, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		os.Remove(path)
	}
}

// reclaimPIDFile writes this process's id back after a failed upgrade (the
// new process may have written its own before it failed). path "" is no
// pid file.
func reclaimPIDFile(path string, log *slog.Logger) {
	if path == "" {
		return
	}
	if err := writePIDFile(path); err != nil {
		log.Warn("pid file", "err", err)
	}
}
