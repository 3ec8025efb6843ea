package lograte

import (
	"io"
	"log/slog"
	"testing"
)

// BenchmarkSuppressed is the cost of a line dropped by the limit: what a
// flood costs once its burst is spent.
func BenchmarkSuppressed(b *testing.B) {
	log := slog.New(New(slog.NewTextHandler(io.Discard, nil), Config{Burst: 1, Every: 1 << 62}))
	b.ReportAllocs()
	for b.Loop() {
		log.Info("node joined", "pool", "flood.test", "node", "127.0.0.1:9", "source", "datagram")
	}
}

// BenchmarkWritten is the cost of a line let through, for comparison.
func BenchmarkWritten(b *testing.B) {
	log := slog.New(New(slog.NewTextHandler(io.Discard, nil), Config{Burst: 1 << 30}))
	b.ReportAllocs()
	for b.Loop() {
		log.Info("node joined", "pool", "flood.test", "node", "127.0.0.1:9", "source", "datagram")
	}
}
