package jsonenc

import (
	"encoding/json"
	"testing"
	"time"
)

func FuzzAppendString(f *testing.F) {
	f.Add("plain")
	f.Add("<script>\"\\\u2028\xff\x00")
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := AppendString(nil, s); string(got) != string(want) {
			t.Fatalf("AppendString(%q) = %s, want %s", s, got, want)
		}
	})
}

func TestAppendTime(t *testing.T) {
	t.Parallel()
	for _, at := range []time.Time{
		time.Date(2026, 11, 26, 21, 55, 0, 123456789, time.FixedZone("CET", 3600)),
		time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	} {
		want, _ := json.Marshal(at)
		if got := AppendTime(nil, at); string(got) != string(want) {
			t.Errorf("AppendTime(%v) = %s, want %s", at, got, want)
		}
	}
}
