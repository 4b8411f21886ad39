package asyncreply

import (
	"bytes"
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
