package cluster

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
)

// LoadSecret reads a cluster key file (--cluster-secret-file): the base64
// text of 16, 24 or 32 bytes (what `openssl rand -base64 32` prints;
// surrounding white space ignored), or exactly 16, 24 or 32 raw bytes.
// Base64 is tried first; a raw key would be misread only if every one of
// its bytes were a base64 character, which random key bytes practically
// never are.
func LoadSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if k, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(b))); err == nil && validKeyLen(len(k)) {
		return k, nil
	}
	if validKeyLen(len(b)) {
		return b, nil
	}
	return nil, fmt.Errorf("%s: want 16, 24 or 32 bytes, raw or base64 (got %d bytes)", path, len(b))
}

func validKeyLen(n int) bool { return n == 16 || n == 24 || n == 32 }
