package asyncreply

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// sealer encrypts what is stored at rest. Without a key it stores bytes as
// they are. The operation ID is the additional data, so a ciphertext copied
// onto another operation does not decrypt.
//
// Sealed data begins with a header naming its key: sealedFormat, then the
// key's ID, then the nonce and the ciphertext. So a reader can tell without
// decrypting anything that data was sealed with another key — a poll says
// so instead of redirecting to a response that cannot be read — and that it
// was sealed with its own, which spares a poll the decryption of a large
// response. Data sealed before the header existed (nonce first) still opens;
// it lasts no longer than an operation's retention.
type sealer struct {
	aead  cipher.AEAD // nil without a key
	keyID [keyIDSize]byte
}

const (
	// sealedFormat is the first byte of sealed data. What is sealed, and
	// what is stored unsealed without a key, are encodings that begin with
	// a small version number, never this byte.
	sealedFormat = 0xAE
	// keyIDSize is the length of a key's ID: enough that two keys an
	// operator uses in turn never share one, and too short to matter to
	// anyone guessing the key.
	keyIDSize        = 8
	sealedHeaderSize = 1 + keyIDSize
)

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
	s := sealer{aead: aead}
	sum := sha256.Sum256(append([]byte("asyncreply key id\x00"), key...))
	copy(s.keyID[:], sum[:])
	return s, nil
}

func (s sealer) seal(id string, plaintext []byte) []byte {
	if s.aead == nil {
		return plaintext
	}
	n := s.aead.NonceSize()
	out := make([]byte, sealedHeaderSize+n, sealedHeaderSize+n+len(plaintext)+s.aead.Overhead())
	out[0] = sealedFormat
	copy(out[1:], s.keyID[:])
	nonce := out[sealedHeaderSize:]
	rand.Read(nonce) // crypto/rand.Read never fails
	return s.aead.Seal(out, nonce, plaintext, []byte(id))
}

var (
	errUnsealable = errors.New("stored data cannot be decrypted with the configured key")
	errOtherKey   = errors.New("stored data was encrypted with another key than the configured one")
)

// open returns the plaintext of data sealed for the operation id. It
// returns errOtherKey when the data names another key (or there is no key
// to open it with), and errUnsealable when it cannot be decrypted otherwise.
func (s sealer) open(id string, data []byte) ([]byte, error) {
	keyID, sealed := sealedKeyID(data)
	if s.aead == nil {
		if sealed {
			return nil, errOtherKey
		}
		return data, nil
	}
	if sealed && keyID == s.keyID {
		return s.decrypt(id, data[sealedHeaderSize:])
	}
	// Data sealed before the header existed, whose random nonce may even
	// begin like one.
	if plaintext, err := s.decrypt(id, data); err == nil {
		return plaintext, nil
	}
	if sealed {
		return nil, errOtherKey
	}
	return nil, errUnsealable
}

// check returns the error open would return, without decrypting data that
// names this sealer's key: a poll checks that the response it redirects to
// can be read, and must not decrypt it each time to do so.
func (s sealer) check(id string, data []byte) error {
	if keyID, sealed := sealedKeyID(data); sealed && s.aead != nil && keyID == s.keyID {
		return nil
	}
	_, err := s.open(id, data)
	return err
}

// sealedKeyID returns the ID of the key that sealed data, if data has the
// header of sealed data.
func sealedKeyID(data []byte) (keyID [keyIDSize]byte, sealed bool) {
	if len(data) < sealedHeaderSize || data[0] != sealedFormat {
		return keyID, false
	}
	copy(keyID[:], data[1:sealedHeaderSize])
	return keyID, true
}

// decrypt opens nonce-then-ciphertext data.
func (s sealer) decrypt(id string, data []byte) ([]byte, error) {
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
