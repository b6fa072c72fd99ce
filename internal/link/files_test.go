package link

import (
	"bufio"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"
)

// nextFile waits for the builder's next file channel.
func nextFile(t *testing.T, c *Conn) *FileRequest {
	t.Helper()
	select {
	case req := <-c.Files():
		return req
	case <-time.After(10 * time.Second):
		t.Fatal("no file channel delivered")
		return nil
	}
}

// TestFiles: an upload the builder completes is announced with its byte
// count; one it abandons is not; a refusal reaches the builder as its
// reason; a download reaches it whole.
func TestFiles(t *testing.T) {
	s, addr, hostKey := startServer(t)
	exp, c := linkUp(t, s, addr, hostKey)
	s.mu.Lock()
	conn := exp.conn // linkUp took it from exp.Conn()
	s.mu.Unlock()

	type result struct {
		res FileResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := c.OpenFile(FileHeader{Op: PutArtifact, Name: "out/app.apk", Size: 11})
		if err != nil {
			done <- result{err: err}
			return
		}
		defer st.Close()
		if _, err := io.WriteString(st, "hello world"); err != nil {
			done <- result{err: err}
			return
		}
		if err := st.CloseWrite(); err != nil {
			done <- result{err: err}
			return
		}
		var res FileResult
		err = json.NewDecoder(st).Decode(&res)
		done <- result{res, err}
	}()
	req := nextFile(t, conn)
	if req.Header != (FileHeader{Op: PutArtifact, Name: "out/app.apk", Size: 11}) {
		t.Errorf("header %+v", req.Header)
	}
	st, err := req.Accept()
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(st)
	if err != nil || string(data) != "hello world" {
		t.Fatalf("read %q, %v", data, err)
	}
	if n, ok := req.Completed(); !ok || n != 11 {
		t.Errorf("Completed = %d, %v; want 11, true", n, ok)
	}
	out, _ := json.Marshal(FileResult{Size: 11, URL: "u"})
	_, _ = st.Write(append(out, '\n'))
	st.Close()
	if r := <-done; r.err != nil || r.res.Size != 11 || r.res.URL != "u" {
		t.Errorf("builder's answer: %+v", r)
	}

	// Abandoned midway: no FileComplete.
	go func() {
		st, err := c.OpenFile(FileHeader{Op: PutCache})
		if err != nil {
			return
		}
		_, _ = io.WriteString(st, "partial")
		st.Close()
	}()
	req = nextFile(t, conn)
	st, err = req.Accept()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(st)
	if n, ok := req.Completed(); ok {
		t.Errorf("an abandoned upload completed (%d bytes)", n)
	}
	st.Close()

	// Refused: the builder gets the reason.
	refused := make(chan error, 1)
	go func() {
		_, err := c.OpenFile(FileHeader{Op: PutArtifact, Name: "x", Size: 1 << 40})
		refused <- err
	}()
	nextFile(t, conn).Reject("x is over the limit")
	if err := <-refused; err == nil || err.Error() != "x is over the limit" {
		t.Errorf("refusal: %v", err)
	}

	// A download: the runner writes and closes.
	got := make(chan string, 1)
	go func() {
		st, err := c.OpenFile(FileHeader{Op: GetCache})
		if err != nil {
			got <- err.Error()
			return
		}
		data, _ := io.ReadAll(bufio.NewReader(st))
		got <- string(data)
	}()
	req = nextFile(t, conn)
	st, err = req.Accept()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(st, strings.NewReader("archive"))
	_ = st.CloseWrite()
	if s := <-got; s != "archive" {
		t.Errorf("download: %q", s)
	}
	st.Close()
}
