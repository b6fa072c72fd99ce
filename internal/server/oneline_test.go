package server

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

// oneLiner returns build id's one-line command's URL path as shown to
// token, and when it expires.
func (e *sshEnv) oneLiner(id int64, token string) (string, time.Time) {
	e.t.Helper()
	code, body := e.do("GET", fmt.Sprintf("/api/v1/builds/%d", id), token, nil)
	var b build.Build
	if err := json.Unmarshal([]byte(body), &b); code != http.StatusOK || err != nil {
		e.t.Fatalf("get build %d: %d %v %s", id, code, err, body)
	}
	raw, ok := strings.CutPrefix(b.SSH.Command, "curl -fsSL '")
	raw, _, ok2 := strings.Cut(raw, "'")
	if !ok || !ok2 || b.SSH.CommandExpiresAt == nil || !strings.Contains(b.SSH.PowerShell, raw) {
		e.t.Fatalf("build %d's ssh: %+v", id, b.SSH)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme+"://"+u.Host != e.srv.URL {
		e.t.Fatalf("one-line URL %q: %v, want one of %s", raw, err, e.srv.URL)
	}
	return u.Path, *b.SSH.CommandExpiresAt
}

// events returns build id's events.
func (e *sshEnv) events(id int64) ([]build.Event, string) {
	e.t.Helper()
	code, body := e.do("GET", fmt.Sprintf("/api/v1/builds/%d/events", id), e.admin, nil)
	var evs []build.Event
	if err := json.Unmarshal([]byte(body), &evs); code != http.StatusOK || err != nil {
		e.t.Fatalf("events of %d: %d %v", id, code, err)
	}
	return evs, body
}

// lastEvent is build id's last event of kind.
func (e *sshEnv) lastEvent(id int64, kind string) *build.Event {
	e.t.Helper()
	evs, _ := e.events(id)
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Kind == kind {
			return &evs[i]
		}
	}
	e.t.Fatalf("build %d has no %s event: %+v", id, kind, evs)
	return nil
}

func TestOneLineURL(t *testing.T) {
	keys := t.TempDir()
	e := newSSHEnv(t, sshEnvOptions{keys: keys, isolated: true})
	a, key, cert := e.sshBuild("demo")
	b, _, _ := e.sshBuild("demo")
	path, exp := e.oneLiner(a.ID, e.admin)
	if d := exp.Sub(e.clock.Now()); d < URLTTL || d > URLTTL+time.Minute {
		t.Errorf("the command expires in %s, want %s to %s", d, URLTTL, URLTTL+time.Minute)
	}

	t.Run("fetch", func(t *testing.T) {
		code, script := e.do("GET", path, "", nil)
		if code != http.StatusOK || !strings.Contains(script, strings.TrimSpace(key)) || !strings.Contains(script, cert) {
			t.Fatalf("GET %s: %d\n%s", path, code, script)
		}
		ev := e.lastEvent(a.ID, "ssh_script")
		if ev.Data["via"] != "url" || ev.Data["issued_to"] != "admin" || ev.Data["shell"] != "bash" ||
			!strings.HasPrefix(ev.Data["remote"], "127.0.0.1:") || ev.Data["user_agent"] != "Go-http-client/1.1" ||
			ev.Data["url_expires"] != exp.UTC().Format(time.RFC3339) {
			t.Errorf("fetch event: %+v", ev)
		}
		if code, ps := e.do("GET", path+"?shell=powershell", "", nil); code != http.StatusOK || !strings.Contains(ps, "ssh.exe") {
			t.Errorf("powershell: %d", code)
		}
		// A scoped token's URL names it.
		scoped := e.token("alice", false, "demo")
		p, _ := e.oneLiner(a.ID, scoped)
		if code, _ := e.do("GET", p, "", nil); code != http.StatusOK || e.lastEvent(a.ID, "ssh_script").Data["issued_to"] != "alice" {
			t.Errorf("alice's URL: %d, event %+v", code, e.lastEvent(a.ID, "ssh_script"))
		}
		_, all := e.events(a.ID)
		for _, secret := range []string{"PRIVATE KEY", strings.Fields(cert)[1], path} {
			if strings.Contains(all, secret) {
				t.Errorf("the events hold key material or the URL (%.20s…): %s", secret, all)
			}
		}
	})

	t.Run("another build", func(t *testing.T) {
		grant := path[strings.LastIndex(path, "/")+1:]
		if code, body := e.do("GET", fmt.Sprintf("/ssh/%d/%s", b.ID, grant), "", nil); code != http.StatusNotFound || strings.Contains(body, "PRIVATE KEY") {
			t.Errorf("build %d's URL for build %d: %d %s", a.ID, b.ID, code, body)
		}
	})

	t.Run("tampered", func(t *testing.T) {
		grant := path[strings.LastIndex(path, "/")+1:]
		raw, err := base64.RawURLEncoding.DecodeString(grant)
		if err != nil {
			t.Fatal(err)
		}
		later := append([]byte(nil), raw...)
		binary.BigEndian.PutUint64(later[1:9], uint64(exp.Add(time.Hour).Unix()))
		other := append(append([]byte(nil), raw...), "x"...) // another token's name
		for name, g := range map[string][]byte{"later expiry": later, "other token": other, "short": raw[:20]} {
			if code, _ := e.do("GET", fmt.Sprintf("/ssh/%d/%s", a.ID, base64.RawURLEncoding.EncodeToString(g)), "", nil); code != http.StatusNotFound {
				t.Errorf("%s: %d, want 404", name, code)
			}
		}
	})

	t.Run("expired", func(t *testing.T) {
		e.clock.Add(exp.Sub(e.clock.Now()))
		code, body := e.do("GET", path, "", nil)
		if code != http.StatusGone || !strings.Contains(body, "expired") || strings.Contains(body, "PRIVATE KEY") {
			t.Errorf("expired URL: %d %s", code, body)
		}
		if ev := e.lastEvent(a.ID, "ssh_script_refused"); ev.Data["reason"] != "expired" || ev.Data["issued_to"] != "admin" {
			t.Errorf("refusal event: %+v", ev)
		}
		// A fresh look gives a fresh command.
		fresh, _ := e.oneLiner(a.ID, e.admin)
		if code, _ := e.do("GET", fresh, "", nil); fresh == path || code != http.StatusOK {
			t.Errorf("fresh URL %s: %d", fresh, code)
		}
		path = fresh
	})

	// Kept for the restart below: build a's URL, still valid.
	old := path
	t.Run("build ended", func(t *testing.T) {
		e.end(a.ID)
		if code, body := e.do("GET", path, "", nil); code != http.StatusNotFound || strings.Contains(body, "PRIVATE KEY") {
			t.Errorf("URL of an ended build: %d %s", code, body)
		}
		code, body := e.do("GET", fmt.Sprintf("/api/v1/builds/%d", a.ID), e.admin, nil)
		if code != http.StatusOK || strings.Contains(body, "/ssh/") || strings.Contains(body, "command") {
			t.Errorf("an ended build shows a command: %s", body)
		}
		// Also when its access closes before the build ends.
		p, _ := e.oneLiner(b.ID, e.admin)
		nb, err := e.st.Build(t.Context(), b.ID)
		if err != nil {
			t.Fatal(err)
		}
		nb.SSH.State, nb.SSH.ClosedReason = build.SSHClosed, "logged out"
		if _, err := e.st.UpdateBuild(t.Context(), nb); err != nil {
			t.Fatal(err)
		}
		if code, body := e.do("GET", p, "", nil); code != http.StatusGone || strings.Contains(body, "PRIVATE KEY") {
			t.Errorf("URL after access closed: %d %s", code, body)
		}
		if ev := e.lastEvent(b.ID, "ssh_script_refused"); ev.Data["reason"] != "access closed" {
			t.Errorf("refusal event: %+v", ev)
		}
	})

	t.Run("new database", func(t *testing.T) {
		// The same data dir's keys, a recreated database: its build of the
		// same id and number never honours the old URL.
		e2 := newSSHEnv(t, sshEnvOptions{keys: keys, isolated: true})
		n, key2, _ := e2.sshBuild("demo")
		if n.ID != a.ID || n.Number != a.Number {
			t.Fatalf("new build %d #%d, want the old one's id %d #%d", n.ID, n.Number, a.ID, a.Number)
		}
		e2.clock.Add(e.clock.Now().Sub(e2.clock.Now())) // the old URL is within its time
		code, body := e2.do("GET", old, "", nil)
		if code != http.StatusNotFound || strings.Contains(body, strings.TrimSpace(key2)) || strings.Contains(body, "PRIVATE KEY") {
			t.Errorf("old URL on the new database: %d %s", code, body)
		}
		if p, _ := e2.oneLiner(n.ID, e2.admin); p == old {
			t.Error("the new build's URL is the old one's")
		}
	})
}
