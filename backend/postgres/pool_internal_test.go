package postgres

import (
	"encoding/binary"
	"slices"
	"testing"
	"time"
)

func TestParseServerDuration(t *testing.T) {
	t.Parallel()
	for setting, want := range map[string]time.Duration{
		"10000": 10 * time.Second, "10000ms": 10 * time.Second, "10s": 10 * time.Second, "1.5s": 1500 * time.Millisecond,
		"2min": 2 * time.Minute, "1h": time.Hour, "0": 0, " 3 s ": 3 * time.Second,
	} {
		if got, ok := parseServerDuration(setting); !ok || got != want {
			t.Errorf("parseServerDuration(%q) = %v, %v; want %v", setting, got, ok, want)
		}
	}
	for _, bad := range []string{"", "soon", "10 parsecs", "-1s"} {
		if got, ok := parseServerDuration(bad); ok {
			t.Errorf("parseServerDuration(%q) = %v, want not ok", bad, got)
		}
	}
}

// The message types are found however the stream is cut into writes.
func TestMessageStreamAcrossWrites(t *testing.T) {
	t.Parallel()
	message := func(kind byte, body string) []byte {
		b := []byte{kind, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], uint32(4+len(body)))
		return append(b, body...)
	}
	startup := binary.BigEndian.AppendUint32(nil, 8)
	startup = binary.BigEndian.AppendUint32(startup, 196608) // protocol 3.0
	var stream []byte
	stream = append(stream, startup...)
	stream = append(stream, message('p', "password")...)
	stream = append(stream, message('Q', "SELECT 1")...)
	stream = append(stream, message('S', "")...)
	for size := 1; size <= len(stream); size++ {
		var s messageStream
		var kinds []byte
		for chunk := range slices.Chunk(stream, size) {
			s.scan(chunk, func(kind byte) { kinds = append(kinds, kind) })
		}
		if want := []byte{startupMessage, 'p', 'Q', 'S'}; !slices.Equal(kinds, want) {
			t.Fatalf("written %d bytes at a time: messages %q, want %q", size, kinds, want)
		}
	}
}
