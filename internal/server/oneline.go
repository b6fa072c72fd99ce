package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/store"
)

// The one-line command's URL, /ssh/{id}/{grant}, gives its holder the
// build's private key without a token, so it is bound and short-lived:
//
//   - its MAC (HMAC-SHA256 under the server's URL key) covers the build id
//     and the build's own random nonce (store.URLNonce), made with the
//     build: a URL of another build, or of a build of the same id in a
//     recreated database, never matches;
//   - it names its expiry (URLTTL after it was shown, rounded up to the
//     minute), also under the MAC;
//   - the script is refused once the build's SSH access has closed (a
//     logout, the window, the build's end), and the nonce is erased with
//     the build's key when the build ends;
//   - it names the token it was shown to, and each fetch is a build event
//     ("ssh_script", via "url": that token, the fetcher's address and
//     user agent), as is each refused fetch of a genuine URL
//     ("ssh_script_refused").

// URLTTL is how long a one-line command works after it was shown (at
// most a minute more: expiries are rounded up to the minute).
const URLTTL = 5 * time.Minute

// grantVersion is the first byte of a grant; another layout gets another.
const grantVersion = 1

// grant is the decoded last segment of a one-line URL.
type grant struct {
	expires  time.Time
	issuedTo string // the name of the token the URL was shown to
	mac      []byte
}

func (c *SSHConfig) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// grantMAC is the MAC of a grant for build id with the build's nonce.
func (c *SSHConfig) grantMAC(id int64, nonce []byte, expires int64, issuedTo string) []byte {
	m := hmac.New(sha256.New, c.URLKey)
	m.Write([]byte("hangar one-line ssh script v1\x00"))
	var n [8]byte
	for _, v := range []int64{id, int64(len(nonce))} {
		binary.BigEndian.PutUint64(n[:], uint64(v))
		m.Write(n[:])
	}
	m.Write(nonce)
	binary.BigEndian.PutUint64(n[:], uint64(expires))
	m.Write(n[:])
	m.Write([]byte(issuedTo))
	return m.Sum(nil)
}

// encodeGrant makes the last segment of a one-line URL: version, expiry
// (Unix seconds), MAC, the token's name.
func (c *SSHConfig) encodeGrant(id int64, nonce []byte, expires time.Time, issuedTo string) string {
	exp := expires.Unix()
	b := make([]byte, 0, 1+8+sha256.Size+len(issuedTo))
	b = append(b, grantVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(exp))
	b = append(b, c.grantMAC(id, nonce, exp, issuedTo)...)
	b = append(b, issuedTo...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeGrant parses s; the MAC is not checked yet.
func decodeGrant(s string) (*grant, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 1+8+sha256.Size || b[0] != grantVersion {
		return nil, false
	}
	exp := int64(binary.BigEndian.Uint64(b[1:9]))
	return &grant{expires: time.Unix(exp, 0), mac: b[9 : 9+sha256.Size], issuedTo: string(b[9+sha256.Size:])}, true
}

// valid reports whether g was made by this server for build id with nonce.
func (c *SSHConfig) valid(g *grant, id int64, nonce []byte) bool {
	return hmac.Equal(g.mac, c.grantMAC(id, nonce, g.expires.Unix(), g.issuedTo))
}

// oneLineURL is build b's one-line URL for the request's token, and when it
// expires; "" if the build has no URL (no SSH, or its access has ended).
func (s *Server) oneLineURL(r *http.Request, b *build.Build) (string, time.Time, error) {
	t := tokenOf(r)
	if t == nil {
		return "", time.Time{}, nil
	}
	nonce, err := s.cfg.SSH.Store.URLNonce(r.Context(), b.ID)
	if errors.Is(err, store.ErrNotFound) {
		return "", time.Time{}, nil
	}
	if err != nil {
		return "", time.Time{}, err
	}
	// Rounded up to the minute: the URL, and so the build object, changes
	// once a minute rather than with each look.
	c := s.cfg.SSH
	exp := c.now().Add(URLTTL + time.Minute - 1).Truncate(time.Minute)
	return fmt.Sprintf("%s/ssh/%d/%s", s.baseURL(r), b.ID, c.encodeGrant(b.ID, nonce, exp, t.Name)), exp, nil
}

// errNoScript is what a URL that is not (or no longer) a build's hears.
const errNoScript = "no such SSH script: copy the command again from the build's page (or hangar build show ID)"

// signedScript serves GET /ssh/{id}/{grant}: the one-line command's URL.
func (s *Server) signedScript(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	g, ok := decodeGrant(r.PathValue("grant"))
	if s.cfg.SSH == nil || err != nil || id <= 0 || !ok {
		writeError(w, http.StatusNotFound, errNoScript)
		return
	}
	nonce, err := s.cfg.SSH.Store.URLNonce(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, errNoScript)
		return
	} else if err != nil {
		s.internal(w, "read build", err)
		return
	}
	if !s.cfg.SSH.valid(g, id, nonce) {
		writeError(w, http.StatusNotFound, errNoScript)
		return
	}
	// A genuine URL from here on: its refusals are the build's events.
	refuse := func(code int, reason, msg string) {
		s.recordFetch(r.Context(), r, id, "ssh_script_refused", map[string]string{"reason": reason}, g)
		writeError(w, code, msg)
	}
	if now := s.cfg.SSH.now(); !now.Before(g.expires) {
		refuse(http.StatusGone, "expired", fmt.Sprintf("this one-line command expired at %s (it works for %s after it is shown): copy it again from build %d's page, or run hangar ssh %d",
			g.expires.UTC().Format("15:04:05 MST"), URLTTL, id, id))
		return
	}
	b, err := s.cfg.Store.Build(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, errNoScript)
		return
	} else if err != nil {
		s.internal(w, "read build", err)
		return
	}
	if b.Status.Done() || b.SSH.State == build.SSHClosed {
		refuse(http.StatusGone, "access closed", fmt.Sprintf("build %d's SSH access has closed (%s)", id, b.Status))
		return
	}
	if a := s.access(w, r, b); a != nil {
		s.writeScript(w, r, a, "url", g)
	}
}

// recordFetch records a fetch (or refused fetch) of a build's script as
// event kind, with who asked and from where; never key material.
func (s *Server) recordFetch(ctx context.Context, r *http.Request, id int64, kind string, data map[string]string, g *grant) {
	data["remote"] = r.RemoteAddr
	if ua := r.UserAgent(); ua != "" {
		if len(ua) > 200 {
			ua = ua[:200]
		}
		data["user_agent"] = ua
	}
	if t := tokenOf(r); t != nil {
		data["token"] = t.Name
	}
	if g != nil {
		data["issued_to"] = g.issuedTo
		data["url_expires"] = g.expires.UTC().Format(time.RFC3339)
	}
	if err := s.cfg.SSH.Store.AddEvent(ctx, id, build.Event{Kind: kind, Data: data}); err != nil {
		s.log.Error("record event", "err", err)
	}
}
