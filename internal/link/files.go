package link

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/ssh"
)

// Files: besides the control channel, a builder opens one channel of type
// FileChannel per file it moves, one at a time; its extra data is a
// FileHeader (JSON). The runner accepts it or rejects it with a reason the
// builder prints.
//
//   - PutArtifact and PutCache (builder to runner): the builder writes
//     the bytes, then sends the channel request FileComplete (payload: the
//     byte count, 8 bytes big-endian) and closes its write side. The
//     runner keeps the file only if that request came with the count it
//     read (a builder that stops midway leaves nothing), then answers with
//     one FileResult (JSON line) and closes the channel.
//   - GetCache (runner to builder): the runner writes one CacheInfo (JSON
//     line), then the archive, and closes the channel.
//
// The runner enforces every limit (the Job says them so that a builder
// can stop early): a builder is not trusted.
const FileChannel = "hangar-file"

// FileComplete is the channel request that ends an upload.
const FileComplete = "hangar-complete"

// File operations (FileHeader.Op).
const (
	PutArtifact = "artifact"
	PutCache    = "cache_put"
	GetCache    = "cache_get"
)

// FileHeader is a file channel's extra data.
type FileHeader struct {
	Op string `json:"op"`
	// Name is an artifact's name: its path relative to the clone, with
	// '/' separators.
	Name string `json:"name,omitempty"`
	// Size is an artifact's exact size.
	Size int64 `json:"size,omitempty"`
}

// FileResult is the runner's answer to an upload.
type FileResult struct {
	Error string `json:"error,omitempty"` // empty: kept
	Size  int64  `json:"size,omitempty"`
	MD5   string `json:"md5,omitempty"`
	// URL downloads an artifact (the server's API).
	URL string `json:"url,omitempty"`
}

// CacheInfo precedes a cache archive sent to the builder.
type CacheInfo struct {
	Size    int64  `json:"size"`
	Build   int64  `json:"build"` // the build that saved it
	Created string `json:"created"`
}

// Stream is an accepted file channel.
type Stream interface {
	io.ReadWriter
	CloseWrite() error
	Close() error
}

// FileRequest is a file channel the builder opened, seen by the runner.
type FileRequest struct {
	Header FileHeader
	nch    ssh.NewChannel
	reqs   <-chan *ssh.Request
}

// Reject refuses the file; reason is shown to the build's user.
func (f *FileRequest) Reject(reason string) { _ = f.nch.Reject(ssh.Prohibited, reason) }

// Accept accepts the file channel.
func (f *FileRequest) Accept() (Stream, error) {
	ch, reqs, err := f.nch.Accept()
	if err != nil {
		return nil, err
	}
	f.reqs = reqs
	return ch, nil
}

// Completed waits for the builder's FileComplete (call it after reading
// to EOF) and reports the byte count it announced; false if the builder
// closed the channel without it.
func (f *FileRequest) Completed() (int64, bool) {
	for r := range f.reqs {
		ok := r.Type == FileComplete && len(r.Payload) == 8
		if r.WantReply {
			_ = r.Reply(false, nil)
		}
		if ok {
			n := binary.BigEndian.Uint64(r.Payload)
			go ssh.DiscardRequests(f.reqs)
			return int64(n), true
		}
	}
	return 0, false
}

// Files delivers the file channels the builder opens; the runner must
// serve them (each is rejected if the link closes first).
func (c *Conn) Files() <-chan *FileRequest { return c.files }

// offerFile hands a file channel to the runner, or rejects it.
func (c *Conn) offerFile(nch ssh.NewChannel) {
	var h FileHeader
	if err := json.Unmarshal(nch.ExtraData(), &h); err != nil {
		_ = nch.Reject(ssh.Prohibited, "malformed file header")
		return
	}
	select {
	case c.files <- &FileRequest{Header: h, nch: nch}:
	case <-c.done:
		_ = nch.Reject(ssh.Prohibited, "the link is closing")
	}
}

// OpenFile opens a file channel to the runner. A refusal is an error
// whose text is the runner's reason.
func (c *Client) OpenFile(h FileHeader) (Stream, error) {
	extra, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	ch, reqs, err := c.conn.OpenChannel(FileChannel, extra)
	if err != nil {
		var oe *ssh.OpenChannelError
		if errors.As(err, &oe) {
			return nil, errors.New(oe.Message)
		}
		return nil, fmt.Errorf("link: %w", err)
	}
	go ssh.DiscardRequests(reqs)
	return &upload{Channel: ch}, nil
}

// upload is a file channel seen by the builder.
type upload struct {
	ssh.Channel
	n int64
}

func (u *upload) Write(p []byte) (int, error) {
	n, err := u.Channel.Write(p)
	u.n += int64(n)
	return n, err
}

// CloseWrite announces the byte count written (FileComplete), then ends
// the write side: the runner keeps the upload.
func (u *upload) CloseWrite() error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(u.n))
	if _, err := u.SendRequest(FileComplete, false, b[:]); err != nil {
		return err
	}
	return u.Channel.CloseWrite()
}
