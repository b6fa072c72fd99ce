package sshd

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pkg/sftp"
)

// ServeSFTP serves the SFTP protocol on in and out (a subprocess's stdin and
// stdout, see Server.SFTPCommand) until the client closes in, then closes
// out. Paths are those of the calling process: it should run as the
// session's user, in the session's directory.
func ServeSFTP(in io.Reader, out io.WriteCloser) error {
	srv, err := sftp.NewServer(struct {
		io.Reader
		io.WriteCloser
	}{in, out})
	if err != nil {
		return fmt.Errorf("sftp: %w", err)
	}
	err = srv.Serve()
	cerr := srv.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("sftp: %w", err)
	}
	if cerr != nil && !errors.Is(cerr, io.EOF) && !errors.Is(cerr, os.ErrClosed) {
		return fmt.Errorf("sftp: %w", cerr)
	}
	return nil
}
