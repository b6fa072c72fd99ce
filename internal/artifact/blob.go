package artifact

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hangar-ci/hangar/internal/store"
)

// BlobStore keeps files in the database in chunks (store.Store).
type BlobStore interface {
	CreateBlob(ctx context.Context, id string, chunkSize int64) error
	PutBlobChunk(ctx context.Context, id string, seq int64, data []byte) error
	FinishBlob(ctx context.Context, id string, size int64) error
	BlobInfo(ctx context.Context, id string) (store.Blob, error)
	BlobChunk(ctx context.Context, id string, seq int64) ([]byte, error)
	DeleteBlob(ctx context.Context, id string) error
	DeleteOrphanBlobs(ctx context.Context, before time.Time) (int, error)
}

// DefaultChunkSize is the size of a blob's chunks.
const DefaultChunkSize = 1 << 20

func (k *Keeper) chunkSize() int64 { return orDefault(int64(k.ChunkSize), DefaultChunkSize) }

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// writeBlob is write into the database: r is copied one chunk at a time
// (one chunk in memory), and the blob deleted unless all goes well.
func (k *Keeper) writeBlob(ctx context.Context, r io.Reader, limit int64, done func(n int64) error) (rel string, n int64, md5sum, sha string, err error) {
	id, size := randomID(), k.chunkSize()
	if err := k.Store.CreateBlob(ctx, id, size); err != nil {
		return "", 0, "", "", err
	}
	defer func() {
		if err != nil {
			k.remove(store.BlobFilePrefix + id)
		}
	}()
	hm, hs := md5.New(), sha256.New()
	src := io.TeeReader(io.LimitReader(r, limit+1), io.MultiWriter(hm, hs))
	buf := make([]byte, size)
	for seq := int64(0); ; seq++ {
		m, rerr := fill(src, buf)
		if m > 0 {
			n += int64(m)
			if n > limit {
				return "", 0, "", "", ErrTooLarge
			}
			if err := k.Store.PutBlobChunk(ctx, id, seq, buf[:m]); errors.Is(err, store.ErrNotFound) {
				return "", 0, "", "", errors.New("the upload stalled for over an hour and was dropped")
			} else if err != nil {
				return "", 0, "", "", err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return "", 0, "", "", rerr
		}
	}
	if err = done(n); err != nil {
		return "", 0, "", "", err
	}
	if err = k.Store.FinishBlob(ctx, id, n); err != nil {
		return "", 0, "", "", err
	}
	return store.BlobFilePrefix + id, n, hex.EncodeToString(hm.Sum(nil)), hex.EncodeToString(hs.Sum(nil)), nil
}

// fill reads r into buf until buf is full (nil error) or r ends (io.EOF,
// with what it read before). Unlike io.ReadFull, it keeps r's own error:
// a body cut short (io.ErrUnexpectedEOF) is not a short last chunk.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// openBlob opens blob id for reading and seeking (ranges).
func (k *Keeper) openBlob(ctx context.Context, id string) (io.ReadSeekCloser, error) {
	info, err := k.Store.BlobInfo(ctx, id)
	if err != nil {
		return nil, err
	}
	if info.ChunkSize <= 0 {
		return nil, fmt.Errorf("blob %s has chunks of %d bytes", id, info.ChunkSize)
	}
	return &blobReader{ctx: ctx, st: k.Store, info: info, seq: -1}, nil
}

// blobReader reads a blob a chunk at a time, holding one in memory.
type blobReader struct {
	ctx  context.Context
	st   BlobStore
	info store.Blob
	off  int64
	seq  int64 // of chunk; -1: none read
	buf  []byte
}

func (b *blobReader) Read(p []byte) (int, error) {
	if b.off >= b.info.Size {
		return 0, io.EOF
	}
	seq := b.off / b.info.ChunkSize
	if seq != b.seq {
		data, err := b.st.BlobChunk(b.ctx, b.info.ID, seq)
		if err != nil {
			return 0, fmt.Errorf("read blob %s: %w", b.info.ID, err)
		}
		b.seq, b.buf = seq, data
	}
	at := b.off - seq*b.info.ChunkSize
	if at >= int64(len(b.buf)) {
		return 0, fmt.Errorf("read blob %s: chunk %d is short", b.info.ID, seq)
	}
	n := copy(p, b.buf[at:])
	b.off += int64(n)
	return n, nil
}

func (b *blobReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += b.off
	case io.SeekEnd:
		offset += b.info.Size
	default:
		return 0, errors.New("seek: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("seek: negative position")
	}
	b.off = offset
	return offset, nil
}

func (b *blobReader) Close() error {
	b.buf = nil
	return nil
}

// TicketTTL is how long a download ticket is valid.
const TicketTTL = 30 * time.Second

// IssueTicket returns a single-use ticket, valid TicketTTL, that downloads
// build id's artifact name through any server of the store.
func (k *Keeper) IssueTicket(ctx context.Context, id int64, name string) (string, error) {
	var b [24]byte
	_, _ = rand.Read(b[:])
	t := hex.EncodeToString(b[:])
	if err := k.Store.AddTicket(ctx, store.TicketDownload, t, id, name, time.Now().Add(TicketTTL)); err != nil {
		return "", err
	}
	return t, nil
}

// TakeTicket uses ticket up and returns the build and artifact it was
// issued for (store.ErrNotFound: unknown, used or expired).
func (k *Keeper) TakeTicket(ctx context.Context, ticket string) (int64, string, error) {
	return k.Store.TakeTicket(ctx, store.TicketDownload, ticket)
}
