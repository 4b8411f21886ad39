package asyncreply

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

// sealer encrypts what is stored at rest. Without a key it stores bytes as
// they are. The operation ID is the additional data, so a ciphertext copied
// onto another operation does not decrypt.
type sealer struct {
	aead cipher.AEAD // nil without a key
}

func newSealer(key []byte) (sealer, error) {
	if key == nil {
		return sealer{}, nil
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return sealer{}, fmt.Errorf("asyncreply: key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return sealer{}, fmt.Errorf("asyncreply: key: %w", err)
	}
	return sealer{aead: aead}, nil
}

func (s sealer) seal(id string, plaintext []byte) []byte {
	if s.aead == nil {
		return plaintext
	}
	out := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	rand.Read(out) // crypto/rand.Read never fails
	return s.aead.Seal(out, out, plaintext, []byte(id))
}

var errUnsealable = errors.New("stored data cannot be decrypted with the configured key")

func (s sealer) open(id string, data []byte) ([]byte, error) {
	if s.aead == nil {
		return data, nil
	}
	n := s.aead.NonceSize()
	if len(data) < n {
		return nil, errUnsealable
	}
	plaintext, err := s.aead.Open(nil, data[:n], data[n:], []byte(id))
	if err != nil {
		return nil, errUnsealable
	}
	return plaintext, nil
}
