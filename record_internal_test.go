package asyncreply

import (
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"reflect"
	"testing"
)

func TestRecordedRequestRoundTrip(t *testing.T) {
	t.Parallel()
	want := &recordedRequest{
		Method:     "POST",
		RequestURI: "/exports?format=csv&q=%C3%A9",
		Host:       "app.example",
		RemoteAddr: "192.0.2.1:51234",
		TLS:        true,
		Header: http.Header{
			"Cookie":        {"session=abc; theme=dark"},
			"Authorization": {"Bearer t0ken"},
			"X-Multi":       {"one", "two", ""},
		},
		Body: []byte("a,b\n1,2\n"),
	}
	got, err := unmarshalRecordedRequest(want.marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}

	r, err := got.newRequest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	if r.Method != "POST" || r.URL.Path != "/exports" || r.URL.Query().Get("q") != "é" ||
		r.Host != "app.example" || r.RemoteAddr != "192.0.2.1:51234" || r.TLS == nil ||
		r.ContentLength != 8 || string(body) != "a,b\n1,2\n" || r.Header.Get("Authorization") != "Bearer t0ken" {
		t.Fatalf("rebuilt request differs: %+v body %q", r, body)
	}
	if r.GetBody == nil {
		t.Fatal("GetBody is nil: a replayed request could not be retried by a proxy transport")
	}
}

func TestStoredResponseRoundTrip(t *testing.T) {
	t.Parallel()
	want := &storedResponse{
		StatusCode: 201,
		Header:     http.Header{"Set-Cookie": {"a=1", "b=2"}, "Content-Type": {"text/csv"}},
		Body:       []byte{0, 1, 2, 255},
	}
	got, err := unmarshalStoredResponse(want.marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
}

func TestDecodeRejectsCorruptData(t *testing.T) {
	t.Parallel()
	full := (&recordedRequest{Method: "GET", RequestURI: "/", Header: http.Header{"A": {"b"}}, Body: []byte("xyz")}).marshal()
	for n := range len(full) {
		if _, err := unmarshalRecordedRequest(full[:n]); err == nil {
			t.Errorf("truncated to %d of %d bytes: no error", n, len(full))
		}
	}
	if _, err := unmarshalStoredResponse([]byte{9, 0, 0}); err == nil {
		t.Error("unknown version: no error")
	}
}

func FuzzUnmarshalRecordedRequest(f *testing.F) {
	f.Add((&recordedRequest{Method: "GET", RequestURI: "/x", Header: http.Header{"K": {"v"}}}).marshal())
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		rr, err := unmarshalRecordedRequest(data) // must not panic or allocate without bound
		if err == nil {
			again, err := unmarshalRecordedRequest(rr.marshal())
			if err != nil || !reflect.DeepEqual(rr, again) {
				t.Fatalf("re-encoding changed the request: %v", err)
			}
		}
	})
}

func TestStoredResponseEncodings(t *testing.T) {
	t.Parallel()
	head := &storedResponse{StatusCode: 200, Header: http.Header{"Content-Length": {"11"}}, Body: []byte{}, Head: true}
	got, err := unmarshalStoredResponse(head.marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, head) {
		t.Fatalf("round trip of a HEAD answer:\n got %+v\nwant %+v", got, head)
	}

	// Responses stored before the flags byte existed read back unchanged.
	v1 := &storedResponse{StatusCode: 201, Header: http.Header{"Content-Type": {"text/csv"}}, Body: []byte("a,b\n")}
	b := binary.AppendUvarint([]byte{storedResponseV1}, uint64(v1.StatusCode))
	b = appendBytes(appendHeader(b, v1.Header), v1.Body)
	if got, err := unmarshalStoredResponse(b); err != nil || !reflect.DeepEqual(got, v1) {
		t.Fatalf("version 1 encoding = %+v, %v; want %+v", got, err, v1)
	}
}

func TestRecordedHeaderLeavesOutWhatWasForThisHop(t *testing.T) {
	t.Parallel()
	h := http.Header{
		"Authorization":       {"Bearer t0ken"}, // the application's: kept
		"Cookie":              {"session=abc"},
		"Proxy-Authorization": {"Basic cHJveHk6c2VjcmV0"},
		"Connection":          {"keep-alive, X-Hop-Secret", "x-other-hop"},
		"Keep-Alive":          {"timeout=5"},
		"X-Hop-Secret":        {"for this connection only"},
		"X-Other-Hop":         {"also"},
		"Te":                  {"trailers"},
		"Upgrade":             {"websocket"},
		"X-App":               {"kept"},
	}
	original := h.Clone()
	got := recordedHeader(h)
	want := http.Header{"Authorization": {"Bearer t0ken"}, "Cookie": {"session=abc"}, "X-App": {"kept"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("recorded %v\nwant     %v", got, want)
	}
	if !reflect.DeepEqual(h, original) {
		t.Errorf("the request's own header was changed: %v", h)
	}

	plain := http.Header{"Cookie": {"session=abc"}}
	if got := recordedHeader(plain); reflect.ValueOf(got).Pointer() != reflect.ValueOf(plain).Pointer() {
		t.Error("a header with nothing to leave out was copied")
	}
}
