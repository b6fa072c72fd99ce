package secrets

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hangar-ci/hangar/internal/sshca"
)

// KeyFile is the secrets key's file in the data directory.
const KeyFile = "secrets.key"

// LoadSealer returns the Sealer of the secrets key that spec names, and a
// fingerprint of the key (safe to log: compare it across servers):
//
//   - "": the data directory's secrets.key, made on first use (the
//     embedded default, one server);
//   - "env:NAME": environment variable NAME holds the key;
//   - anything else: the path of a file holding it.
//
// A key given is 32 bytes, raw (a file only) or base64- or hex-encoded on
// one line, e.g. from `openssl rand -base64 32`.
func LoadSealer(spec, dataDir string) (*sshca.Sealer, string, error) {
	var key []byte
	switch {
	case spec == "":
		k, err := sshca.LoadOrCreateSecret(filepath.Join(dataDir, KeyFile))
		if err != nil {
			return nil, "", fmt.Errorf("secrets key: %w", err)
		}
		key = k
	case strings.HasPrefix(spec, "env:"):
		name := strings.TrimPrefix(spec, "env:")
		text, ok := os.LookupEnv(name)
		if !ok || text == "" {
			return nil, "", fmt.Errorf("--secrets-key %s: environment variable %s is not set", spec, name)
		}
		k, err := decodeKey([]byte(text))
		if err != nil {
			return nil, "", fmt.Errorf("--secrets-key %s: %w", spec, err)
		}
		key = k
	default:
		data, err := os.ReadFile(spec)
		if err != nil {
			return nil, "", fmt.Errorf("--secrets-key: %w", err)
		}
		k, err := decodeKey(data)
		if err != nil {
			return nil, "", fmt.Errorf("--secrets-key %s: %w", spec, err)
		}
		key = k
	}
	s, err := sshca.NewSealer(key)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(append([]byte("hangar secrets key\x00"), key...))
	return s, hex.EncodeToString(sum[:6]), nil
}

// decodeKey reads a 32-byte key: raw, or base64 or hex on one line.
func decodeKey(data []byte) ([]byte, error) {
	if len(data) == 32 {
		return data, nil
	}
	text := string(bytes.TrimSpace(data))
	if k, err := base64.StdEncoding.DecodeString(text); err == nil && len(k) == 32 {
		return k, nil
	}
	if k, err := hex.DecodeString(text); err == nil && len(k) == 32 {
		return k, nil
	}
	return nil, fmt.Errorf("want a 32-byte key, raw or base64- or hex-encoded (make one with `openssl rand -base64 32`)")
}
