package store

import (
	"fmt"

	"github.com/klauspost/compress/s2"

	"github.com/hangar-ci/hangar/internal/build"
)

// Log chunks are stored compressed with S2 (Snappy's faster extension):
// build output is repetitive (a real build log shrinks about 6 times), and
// on a disk where SQLite writes each byte twice (its WAL, then the
// database) fewer bytes cost less than compressing them. Measured on the
// log benchmark's 18 MB step: zstd's fastest level shrank it more but
// cost more CPU than it saved; S2 took the store's share from about 78 ms
// to 42 ms. A chunk that does not shrink is kept as it is.
const encodingS2 = build.LogS2

// encodeChunk returns how a chunk's bytes are stored, and their encoding.
func encodeChunk(data []byte) ([]byte, string) {
	z := s2.Encode(nil, data)
	if len(z) >= len(data)-len(data)/8 {
		return data, ""
	}
	return z, encodingS2
}

// decodeChunk returns a stored chunk's bytes.
func decodeChunk(data []byte, encoding string) ([]byte, error) {
	switch encoding {
	case "":
		return data, nil
	case encodingS2:
		out, err := s2.Decode(nil, data)
		if err != nil {
			return nil, fmt.Errorf("decompress: %w", err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown encoding %q (written by a newer Hangar?)", encoding)
}
