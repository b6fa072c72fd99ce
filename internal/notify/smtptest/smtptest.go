// Package smtptest runs a real SMTP server (emersion/go-smtp) on loopback
// for tests: it keeps the messages it receives, offers STARTTLS when given
// a certificate and AUTH PLAIN for one user.
package smtptest

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Message is one message received.
type Message struct {
	From string
	To   []string
	Data string
	TLS  bool   // it came over STARTTLS
	User string // who authenticated ("" if no one)
}

// Server is a running SMTP server.
type Server struct {
	Port int
	srv  *smtp.Server
	user string
	pass string

	mu   sync.Mutex // guards msgs and wake
	msgs []Message
	wake chan struct{} // closed and replaced when a message arrives
}

// Start serves SMTP on 127.0.0.1 until the test ends: with STARTTLS if
// tlsConfig is set, and AUTH PLAIN for user and pass if user is set.
func Start(t testing.TB, tlsConfig *tls.Config, user, pass string) *Server {
	t.Helper()
	s := &Server{user: user, pass: pass, wake: make(chan struct{})}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{s: s, conn: c}, nil
	}))
	s.srv.Domain = "localhost"
	s.srv.ReadTimeout, s.srv.WriteTimeout = 10*time.Second, 10*time.Second
	s.srv.TLSConfig = tlsConfig
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Port = l.Addr().(*net.TCPAddr).Port
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.srv.Serve(l); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			t.Errorf("smtp server: %v", err)
		}
	}()
	t.Cleanup(func() {
		s.srv.Close()
		<-done
	})
	return s
}

// Messages returns the messages received so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Wait waits until n messages have arrived, or within has passed; it
// returns the messages then.
func (s *Server) Wait(n int, within time.Duration) []Message {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		msgs, wake := append([]Message(nil), s.msgs...), s.wake
		s.mu.Unlock()
		if len(msgs) >= n {
			return msgs
		}
		select {
		case <-wake:
		case <-deadline.C:
			return msgs
		}
	}
}

type session struct {
	s    *Server
	conn *smtp.Conn
	msg  Message
}

func (x *session) Reset()        { x.msg = Message{User: x.msg.User} }
func (x *session) Logout() error { return nil }
func (x *session) Mail(from string, _ *smtp.MailOptions) error {
	x.msg.From = from
	return nil
}
func (x *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.msg.To = append(x.msg.To, to)
	return nil
}
func (x *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	x.msg.Data = string(data)
	_, x.msg.TLS = x.conn.TLSConnectionState()
	x.s.mu.Lock()
	x.s.msgs = append(x.s.msgs, x.msg)
	close(x.s.wake)
	x.s.wake = make(chan struct{})
	x.s.mu.Unlock()
	return nil
}
func (x *session) AuthMechanisms() []string {
	if x.s.user == "" {
		return nil
	}
	return []string{sasl.Plain}
}
func (x *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if x.s.user == "" || user != x.s.user || pass != x.s.pass {
			return errors.New("invalid credentials")
		}
		x.msg.User = user
		return nil
	}), nil
}
