package notify

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/notify/smtptest"
	"github.com/hangar-ci/hangar/internal/tlstest"
)

func finished(status build.Status) build.Build {
	start := time.Now().Add(-time.Minute)
	end := time.Now()
	return build.Build{ID: 42, App: "demo", Number: 7, Workflow: "android", WorkflowName: "Android release", Branch: "main",
		Commit: "0123456789abcdef", Status: status, Message: "step \"Build\" failed: exit status 3", StartedAt: &start, FinishedAt: &end}
}

// TestEmail: Codemagic's rules (success with the artifacts' links, failure
// with the log's; notify.success/failure turn them off; nothing for a
// canceled build), sent over STARTTLS with AUTH PLAIN to a real server.
func TestEmail(t *testing.T) {
	certs := tlstest.New(t, "127.0.0.1")
	mb := smtptest.Start(t, certs.Server, "hangar", "s3cret-pw")
	s := &SMTP{Host: "127.0.0.1", Port: mb.Port, From: "Hangar <hangar@example.com>", Username: "hangar", Password: "s3cret-pw",
		StartTLS: StartTLSAlways, TLS: &tls.Config{RootCAs: certs.Pool}, PublicURL: func() string { return "https://ci.example.com" }}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	spec := &build.Spec{Email: &build.Email{Recipients: []string{"dev@example.com", "Lead <lead@example.com>"}, Success: true, Failure: false}}
	arts := []build.Artifact{{Name: "build/app.apk", Size: 3 << 20, URL: "https://ci.example.com/api/v1/builds/42/artifacts/build/app.apk"}}

	lines := s.Notify(ctx, finished(build.Finished), spec, arts)
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "Email: sent to dev@example.com, Lead <lead@example.com> through 127.0.0.1") {
		t.Fatalf("log lines: %q", lines)
	}
	msgs := mb.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages received", len(msgs))
	}
	m := msgs[0]
	if !m.TLS || m.User != "hangar" || m.From != "hangar@example.com" || strings.Join(m.To, ",") != "dev@example.com,lead@example.com" {
		t.Errorf("envelope: tls=%v user=%q from=%q to=%q", m.TLS, m.User, m.From, m.To)
	}
	for _, want := range []string{
		"Subject: [Hangar] demo #7: Android release succeeded (main, 0123456789)",
		"To: dev@example.com, Lead <lead@example.com>",
		"build/app.apk (3.0 MiB)",
		"https://ci.example.com/api/v1/builds/42/artifacts/build/app.apk",
		"Build: https://ci.example.com/builds/42",
	} {
		if !strings.Contains(m.Data, want) {
			t.Errorf("message lacks %q:\n%s", want, m.Data)
		}
	}

	// notify.failure is false: no email about a failure; a canceled build
	// sends none either.
	if lines := s.Notify(ctx, finished(build.Failed), spec, nil); len(lines) != 1 || !strings.Contains(lines[0], "notify.failure is false") {
		t.Errorf("failure not wanted: %q", lines)
	}
	if lines := s.Notify(ctx, finished(build.Canceled), spec, nil); len(lines) != 1 || !strings.Contains(lines[0], "canceled") {
		t.Errorf("canceled: %q", lines)
	}
	spec.Email.Failure = true
	if lines := s.Notify(ctx, finished(build.Failed), spec, arts); len(lines) != 1 || !strings.HasPrefix(lines[0], "Email: sent") {
		t.Errorf("failure: %q", lines)
	}
	msgs = mb.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages received, want 2", len(msgs))
	}
	if d := msgs[1].Data; !strings.Contains(d, "Android release failed") || !strings.Contains(d, "Reason: step \"Build\" failed") ||
		!strings.Contains(d, "Log: https://ci.example.com/api/v1/builds/42/logs") || strings.Contains(d, "app.apk") {
		t.Errorf("failure message:\n%s", d)
	}

	// A wrong password fails, and the log line does not show it.
	bad := *s
	bad.Password = "wrong-password"
	if lines := bad.Notify(ctx, finished(build.Finished), spec, nil); len(lines) != 1 || !strings.Contains(lines[0], "authentication") || strings.Contains(lines[0], "wrong-password") {
		t.Errorf("wrong password: %q", lines)
	}
}

// TestEmailNoTLS: a server without STARTTLS gets no email when it is
// required, and plain email when it is not (without authentication).
func TestEmailNoTLS(t *testing.T) {
	mb := smtptest.Start(t, nil, "", "")
	spec := &build.Spec{Email: &build.Email{Recipients: []string{"dev@example.com"}, Success: true, Failure: true}}
	s := &SMTP{Host: "127.0.0.1", Port: mb.Port, From: "hangar@example.com", StartTLS: StartTLSAlways}
	if lines := s.Notify(context.Background(), finished(build.Finished), spec, nil); len(lines) != 1 || !strings.Contains(lines[0], "does not offer STARTTLS") {
		t.Errorf("STARTTLS required: %q", lines)
	}
	s.StartTLS = StartTLSAuto
	if lines := s.Notify(context.Background(), finished(build.Finished), spec, nil); len(lines) != 1 || !strings.HasPrefix(lines[0], "Email: sent") {
		t.Errorf("plain: %q", lines)
	}
	if msgs := mb.Messages(); len(msgs) != 1 || msgs[0].TLS || !strings.Contains(msgs[0].Data, "The build has no artifacts.") {
		t.Errorf("received: %+v", msgs)
	}
	if lines := Unconfigured(context.Background(), finished(build.Finished), spec, nil); len(lines) != 1 || !strings.Contains(lines[0], "no SMTP server configured") {
		t.Errorf("unconfigured: %q", lines)
	}
	for _, bad := range []SMTP{{Port: 25, From: "a@b.c"}, {Host: "h", Port: 0, From: "a@b.c"}, {Host: "h", Port: 25, From: "nope"}, {Host: "h", Port: 25, From: "a@b.c", StartTLS: "maybe"}, {Host: "h", Port: 25, From: "a@b.c", Username: "u"}} {
		if err := bad.Check(); err == nil {
			t.Errorf("Check(%+v) passed", bad)
		}
	}
}
