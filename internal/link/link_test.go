package link

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"golang.org/x/crypto/ssh"
)

func newKey(t *testing.T) (ssh.PublicKey, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(pub)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	return sp, string(pem.EncodeToMemory(block))
}

func startServer(t *testing.T) (*Server, string, string) {
	t.Helper()
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(hostPriv)
	s := &Server{HostKey: signer}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != ErrServerClosed {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, l.Addr().String(), string(ssh.MarshalAuthorizedKey(signer.PublicKey()))
}

func TestLink(t *testing.T) {
	s, addr, hostKey := startServer(t)
	pub, priv := newKey(t)
	_, otherPriv := newKey(t)
	exp, err := s.Expect("build-1", pub)
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Close()
	if _, err := s.Expect("build-1", pub); err == nil {
		t.Fatal("a name was expected twice")
	}
	ctx := context.Background()

	// Wrong key, unknown name, wrong host key: refused.
	for _, h := range []*Hello{
		{Name: "build-1", Addr: addr, HostKey: hostKey, Key: otherPriv},
		{Name: "build-2", Addr: addr, HostKey: hostKey, Key: priv},
	} {
		if c, err := Dial(ctx, h); err == nil {
			c.Close()
			t.Errorf("%s with a wrong credential was admitted", h.Name)
		}
	}
	wrongHost, _ := newKey(t)
	if c, err := Dial(ctx, &Hello{Name: "build-1", Addr: addr, HostKey: string(ssh.MarshalAuthorizedKey(wrongHost)), Key: priv}); err == nil {
		c.Close()
		t.Error("the builder accepted a server with another host key")
	}

	c, err := Dial(ctx, &Hello{Name: "build-1", Addr: addr, HostKey: hostKey, Key: priv})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var conn *Conn
	select {
	case conn = <-exp.Conn():
	case <-time.After(5 * time.Second):
		t.Fatal("no link delivered")
	}
	// A second link for the same build is refused.
	if c2, err := Dial(ctx, &Hello{Name: "build-1", Addr: addr, HostKey: hostKey, Key: priv}); err == nil {
		c2.Close()
		t.Error("a second link for the same build was admitted")
	}

	if err := conn.SendJob(&Job{Branch: "main", Steps: []Step{{Name: "x"}}}); err != nil {
		t.Fatal(err)
	}
	job, err := c.Job()
	if err != nil || job.Branch != "main" || len(job.Steps) != 1 {
		t.Fatalf("job: %+v %v", job, err)
	}
	if err := c.Send(Event{Type: Output, Step: 1, Data: []byte(strings.Repeat("x", 100) + "\x00\xff")}); err != nil {
		t.Fatal(err)
	}
	ev, err := conn.Recv()
	if err != nil || ev.Type != Output || ev.Step != 1 || string(ev.Data) != strings.Repeat("x", 100)+"\x00\xff" || ev.Time.IsZero() {
		t.Fatalf("event: %+v %v", ev, err)
	}
	// Whole lines compressed: the runner gets them decoded, and the block
	// as it came.
	lines := []byte(strings.Repeat("line number 1234\n", 5000))
	z := s2.Encode(nil, lines)
	if err := c.Send(Event{Type: Output, Step: 2, Data: lines, S2: z}); err != nil {
		t.Fatal(err)
	}
	ev, err = conn.Recv()
	if err != nil || ev.Type != Output || ev.Step != 2 || ev.Data != nil || !bytes.Equal(ev.S2, z) || ev.Lines != 5000 || ev.Size != len(lines) {
		t.Fatalf("compressed output: %d lines of %d bytes, step %d, %v", ev.Lines, ev.Size, ev.Step, err)
	}
	// Lines that need work come decoded.
	crlf := []byte(strings.Repeat("line\r\n", 100))
	if err := c.Send(Event{Type: Output, Step: 2, Data: crlf, S2: s2.Encode(nil, crlf)}); err != nil {
		t.Fatal(err)
	}
	if ev, err = conn.Recv(); err != nil || !bytes.Equal(ev.Data, crlf) || ev.Lines != 0 {
		t.Fatalf("compressed output with CRLF: %q, %d lines, %v", ev.Data, ev.Lines, err)
	}
	// Closing the expectation closes the link.
	exp.Close()
	waitErr := make(chan error, 1)
	go func() { waitErr <- c.Wait() }()
	select {
	case <-waitErr:
	case <-time.After(5 * time.Second):
		t.Fatal("the builder's link stayed open after the runner closed it")
	}
}

func TestReadHello(t *testing.T) {
	for _, in := range []string{"", "not json\n", `{"name":"build-1"}` + "\n"} {
		if _, err := ReadHello(strings.NewReader(in)); err == nil {
			t.Errorf("hello %q accepted", in)
		} else if strings.Contains(err.Error(), "PRIVATE") {
			t.Errorf("error shows key material: %v", err)
		}
	}
}

func TestCompressedOutputThatDoesNotDecode(t *testing.T) {
	s, addr, hostKey := startServer(t)
	pub, priv := newKey(t)
	exp, err := s.Expect("build-1", pub)
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Close()
	c, err := Dial(context.Background(), &Hello{Name: "build-1", Addr: addr, HostKey: hostKey, Key: priv})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn := <-exp.Conn()
	good := s2.Encode(nil, []byte(strings.Repeat("x", 1000)+"\n"))
	// A block that claims to decode to more than a message, and one cut
	// short: each is refused as malformed, not taken as shorter output.
	huge := binary.AppendUvarint(nil, MaxMessage+1)
	for _, bad := range [][]byte{append(huge, good[2:]...), good[:len(good)-3]} {
		if err := c.Send(Event{Type: Output, Step: 1, Data: []byte("x\n"), S2: bad}); err != nil {
			t.Fatal(err)
		}
		if ev, err := conn.Recv(); err == nil || !strings.Contains(err.Error(), "compressed output frame") {
			t.Errorf("a bad compressed frame was read as %d bytes of output (%v)", len(ev.Data), err)
		}
	}
}

func TestWholeLines(t *testing.T) {
	long := strings.Repeat("x", MaxLine)
	for _, tc := range []struct {
		data string
		want int
	}{
		{"a\nb\n", 2},
		{"\n", 1},
		{"", 0},
		{"a\nb", 0},
		{"a\r\n", 0},
		{long + "\n", 1},
		{long + "x\n", 0},
		{"a\n" + long + "x\nb\n", 0},
	} {
		if got := WholeLines([]byte(tc.data)); got != tc.want {
			t.Errorf("WholeLines(%.20q) = %d, want %d", tc.data, got, tc.want)
		}
	}
}
