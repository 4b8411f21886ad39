package asyncreply

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

func TestSealer(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{7}, 32)
	s, err := newSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("Authorization: Bearer secret")
	sealed := s.seal("op1", plain)
	if bytes.Contains(sealed, []byte("secret")) {
		t.Fatal("sealed data contains the plaintext")
	}
	if again := s.seal("op1", plain); bytes.Equal(again, sealed) {
		t.Fatal("two seals of the same data are equal: the nonce is not random")
	}
	got, err := s.open("op1", sealed)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open = %q, %v", got, err)
	}
	if _, err := s.open("op2", sealed); err == nil {
		t.Fatal("data sealed for one operation opened for another")
	}
	other, _ := newSealer(bytes.Repeat([]byte{8}, 32))
	if _, err := other.open("op1", sealed); err == nil {
		t.Fatal("data opened with the wrong key")
	}
	if _, err := s.open("op1", sealed[:5]); err == nil {
		t.Fatal("truncated data opened")
	}

	none, _ := newSealer(nil)
	if got := none.seal("op1", plain); !bytes.Equal(got, plain) {
		t.Fatal("without a key, data must be stored as is")
	}
}

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
