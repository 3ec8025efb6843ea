package router

import (
	"testing"

	"golang.org/x/net/http2"
)

// TestH2MaxFrameSize: the router advertises the initial
// SETTINGS_MAX_FRAME_SIZE, 16 KiB (RFC 9113 §4.2), and a frame larger than
// that is a connection error FRAME_SIZE_ERROR.
func TestH2MaxFrameSize(t *testing.T) {
	r := startRouter(t, Config{})
	h2 := dialTestH2C(t, r.addr)
	f, err := h2.fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame %v, want SETTINGS", f)
	}
	if v, ok := sf.Value(http2.SettingMaxFrameSize); ok && v != h2MaxFrameSize {
		t.Errorf("SETTINGS_MAX_FRAME_SIZE %d, want %d", v, h2MaxFrameSize)
	}
	h2.headers(1, [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "k.test"}, {":path", "/"}}, false)
	if err := h2.fr.WriteData(1, true, make([]byte, h2MaxFrameSize+1)); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := h2.fr.ReadFrame()
		if err != nil {
			t.Fatalf("connection ended without GOAWAY: %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeFrameSize {
				t.Errorf("GOAWAY %v, want FRAME_SIZE_ERROR", ga.ErrCode)
			}
			return
		}
	}
}
