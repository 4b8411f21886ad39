package asyncreply

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/http"
	"reflect"
	"testing"
)

// legacySeal seals as sealers did before sealed data named its key: the
// nonce first, here beginning with first.
func legacySeal(s sealer, id string, plaintext []byte, first byte) []byte {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	rand.Read(nonce)
	nonce[0] = first
	return s.aead.Seal(nonce, nonce, plaintext, []byte(id))
}

func TestSealerNamesItsKey(t *testing.T) {
	t.Parallel()
	s, _ := newSealer(bytes.Repeat([]byte{7}, 32))
	other, _ := newSealer(bytes.Repeat([]byte{8}, 32))
	none, _ := newSealer(nil)
	plain := []byte("Set-Cookie: session=abc")
	sealed := s.seal("op1", plain)

	for _, tc := range []struct {
		what   string
		sealer sealer
		want   error
	}{
		{"another key", other, errOtherKey},
		{"no key", none, errOtherKey},
	} {
		if _, err := tc.sealer.open("op1", sealed); !errors.Is(err, tc.want) {
			t.Errorf("open with %s: %v, want %v", tc.what, err, tc.want)
		}
		if err := tc.sealer.check("op1", sealed); !errors.Is(err, tc.want) {
			t.Errorf("check with %s: %v, want %v", tc.what, err, tc.want)
		}
	}

	// A poll checks without decrypting: damage past the header goes
	// unnoticed by check, and open finds it.
	damaged := bytes.Clone(sealed)
	damaged[len(damaged)-1] ^= 0xff
	if err := s.check("op1", damaged); err != nil {
		t.Errorf("check of data naming the sealer's key: %v, want nil without decrypting", err)
	}
	if _, err := s.open("op1", damaged); !errors.Is(err, errUnsealable) {
		t.Errorf("open of damaged data: %v, want %v", err, errUnsealable)
	}

	// What was stored before sealed data named its key opens still, even
	// when its random nonce begins like the header.
	for _, first := range []byte{0x00, sealedFormat} {
		legacy := legacySeal(s, "op1", plain, first)
		if got, err := s.open("op1", legacy); err != nil || !bytes.Equal(got, plain) {
			t.Errorf("open of data sealed in the former format (nonce beginning %#x) = %q, %v; want the plaintext", first, got, err)
		}
		if err := s.check("op1", legacy); err != nil {
			t.Errorf("check of data sealed in the former format (nonce beginning %#x): %v", first, err)
		}
		if _, err := other.open("op1", legacy); err == nil {
			t.Errorf("data sealed in the former format (nonce beginning %#x) opened with another key", first)
		}
	}
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
