// Package notify sends a workflow's publishing.email when its build ends,
// through an SMTP server the admin configures (hangar server --smtp-*),
// with Codemagic's rules: a successful build's email lists its artifacts'
// links, a failed one's links to the build's log; notify.success and
// notify.failure turn either off. A canceled build sends none.
package notify

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/mail"
	"net/smtp"
	"strconv"
	"strings"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

// StartTLS modes.
const (
	StartTLSAuto   = "auto"   // when the server offers it
	StartTLSAlways = "always" // refuse to send without it
	StartTLSNever  = "never"
)

// SMTP is an SMTP server's settings.
type SMTP struct {
	Host string
	Port int
	// From is the sender address.
	From string
	// Username and Password authenticate (AUTH PLAIN, which Go sends
	// only over TLS or to localhost); empty: no authentication.
	Username, Password string
	// StartTLS is StartTLSAuto (""), StartTLSAlways or StartTLSNever.
	StartTLS string
	// TLS verifies the server's certificate (nil: the system's roots and
	// Host as its name).
	TLS *tls.Config
	// PublicURL gives the API's base URL, for the links in emails.
	PublicURL func() string
	// Timeout bounds one email (default 30 s).
	Timeout time.Duration
}

// Check says what is wrong with the settings.
func (s *SMTP) Check() error {
	if s.Host == "" {
		return errors.New("--smtp-host is empty")
	}
	if s.Port < 1 || s.Port > 65535 {
		return fmt.Errorf("--smtp-port %d: must be 1-65535", s.Port)
	}
	if _, err := mail.ParseAddress(s.From); err != nil {
		return fmt.Errorf("--smtp-from %q is not an email address (e.g. hangar@example.com)", s.From)
	}
	switch s.StartTLS {
	case "", StartTLSAuto, StartTLSAlways, StartTLSNever:
	default:
		return fmt.Errorf("--smtp-starttls %q: use auto, always or never", s.StartTLS)
	}
	if (s.Username == "") != (s.Password == "") {
		return errors.New("--smtp-user needs a password (HANGAR_SMTP_PASSWORD or --smtp-password-file) and the other way round")
	}
	return nil
}

// Unconfigured is the notifier of a server without SMTP: it says in the
// build's log that the email is not sent.
func Unconfigured(_ context.Context, b build.Build, spec *build.Spec, _ []build.Artifact) []string {
	if spec.Email == nil || !wanted(b, spec.Email) {
		return nil
	}
	return []string{"Email: NOT sent to " + strings.Join(spec.Email.Recipients, ", ") + ": this server has no SMTP server configured (hangar server --smtp-host)"}
}

// wanted reports whether e asks for an email about b's end.
func wanted(b build.Build, e *build.Email) bool {
	switch b.Status {
	case build.Finished:
		return e.Success
	case build.Failed, build.Timeout:
		return e.Failure
	}
	return false
}

// Notify sends spec's publishing.email about b's end, if it asks for
// one, and returns the lines that say so for the build's log.
func (s *SMTP) Notify(ctx context.Context, b build.Build, spec *build.Spec, artifacts []build.Artifact) []string {
	e := spec.Email
	if e == nil {
		return nil
	}
	to := strings.Join(e.Recipients, ", ")
	if !wanted(b, e) {
		switch b.Status {
		case build.Finished:
			return []string{"Email: not sent (publishing.email.notify.success is false)"}
		case build.Failed, build.Timeout:
			return []string{"Email: not sent (publishing.email.notify.failure is false)"}
		}
		return []string{"Email: not sent: the build was " + string(b.Status)}
	}
	start := time.Now()
	if err := s.send(ctx, e.Recipients, s.message(b, e.Recipients, artifacts)); err != nil {
		return []string{fmt.Sprintf("Email: sending to %s failed: %v", to, err)}
	}
	return []string{fmt.Sprintf("Email: sent to %s through %s in %s", to, s.Host, time.Since(start).Round(time.Millisecond))}
}

func (s *SMTP) base() string {
	if s.PublicURL == nil {
		return ""
	}
	return strings.TrimRight(s.PublicURL(), "/")
}

// oneLine keeps a header value on one line.
func oneLine(v string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, v)
}

// message is the email about b's end.
func (s *SMTP) message(b build.Build, to []string, artifacts []build.Artifact) []byte {
	outcome := "succeeded"
	if b.Status != build.Finished {
		outcome = "failed"
		if b.Status == build.Timeout {
			outcome = "timed out"
		}
	}
	subject := fmt.Sprintf("[Hangar] %s: %s %s (%s, %s)", b.Name(), b.WorkflowName, outcome, b.Branch, short(b.Commit))
	var body strings.Builder
	fmt.Fprintf(&body, "Build %s of workflow %s %s.\n\n", b.Name(), b.WorkflowName, outcome)
	fmt.Fprintf(&body, "Branch: %s\nCommit: %s\n", b.Branch, b.Commit)
	if b.StartedAt != nil && b.FinishedAt != nil {
		fmt.Fprintf(&body, "Duration: %s\n", b.FinishedAt.Sub(*b.StartedAt).Round(time.Second))
	}
	if b.Message != "" && b.Status != build.Finished {
		fmt.Fprintf(&body, "Reason: %s\n", b.Message)
	}
	base := s.base()
	fmt.Fprintf(&body, "\nBuild: %s/builds/%d\nLog: %s/api/v1/builds/%d/logs\n", base, b.ID, base, b.ID)
	if b.Status == build.Finished {
		if len(artifacts) == 0 {
			body.WriteString("\nThe build has no artifacts.\n")
		} else {
			body.WriteString("\nArtifacts (download with an API token, or from the build page):\n")
			for _, a := range artifacts {
				fmt.Fprintf(&body, "  %s (%s)\n    %s\n", a.Name, build.HumanBytes(a.Size), a.URL)
			}
		}
	}
	var id [12]byte
	_, _ = rand.Read(id[:])
	host := s.Host
	if at := strings.LastIndexByte(s.From, '@'); at >= 0 {
		host = strings.Trim(s.From[at+1:], "<> ")
	}
	var m strings.Builder
	fmt.Fprintf(&m, "From: %s\r\n", oneLine(s.From))
	fmt.Fprintf(&m, "To: %s\r\n", oneLine(strings.Join(to, ", ")))
	fmt.Fprintf(&m, "Subject: %s\r\n", mime.QEncoding.Encode("utf-8", oneLine(subject)))
	fmt.Fprintf(&m, "Date: %s\r\n", time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&m, "Message-ID: <%s@%s>\r\n", hex.EncodeToString(id[:]), oneLine(host))
	m.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	m.WriteString(strings.ReplaceAll(body.String(), "\n", "\r\n"))
	return []byte(m.String())
}

func short(commit string) string {
	if len(commit) > 10 {
		return commit[:10]
	}
	return commit
}

// send delivers msg to rcpt.
func (s *SMTP) send(ctx context.Context, rcpt []string, msg []byte) error {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	c, err := smtp.NewClient(conn, s.Host)
	if err != nil {
		return fmt.Errorf("%s: %w", addr, err)
	}
	defer c.Close()
	if err := c.Hello("localhost"); err != nil {
		return err
	}
	tlsOn := false
	if s.StartTLS != StartTLSNever {
		if ok, _ := c.Extension("STARTTLS"); ok {
			cfg := &tls.Config{ServerName: s.Host, MinVersion: tls.VersionTLS12}
			if s.TLS != nil {
				cfg = s.TLS.Clone()
				if cfg.ServerName == "" {
					cfg.ServerName = s.Host
				}
			}
			if err := c.StartTLS(cfg); err != nil {
				return fmt.Errorf("STARTTLS: %w", err)
			}
			tlsOn = true
		} else if s.StartTLS == StartTLSAlways {
			return fmt.Errorf("%s does not offer STARTTLS (--smtp-starttls always)", addr)
		}
	}
	if s.Username != "" {
		if ok, _ := c.Extension("AUTH"); !ok {
			return fmt.Errorf("%s does not offer AUTH, but --smtp-user is set", addr)
		}
		if err := c.Auth(smtp.PlainAuth("", s.Username, s.Password, s.Host)); err != nil {
			if !tlsOn {
				return fmt.Errorf("authentication: %w (the password is sent only over STARTTLS or to localhost)", err)
			}
			return fmt.Errorf("authentication: %w", err)
		}
	}
	if err := c.Mail(addressOf(s.From)); err != nil {
		return fmt.Errorf("MAIL FROM: %w", err)
	}
	for _, r := range rcpt {
		if err := c.Rcpt(addressOf(r)); err != nil {
			return fmt.Errorf("RCPT TO %s: %w", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	return c.Quit()
}

// addressOf is the bare address of "Name <a@b>" or "a@b".
func addressOf(s string) string {
	if a, err := mail.ParseAddress(s); err == nil {
		return a.Address
	}
	return s
}
