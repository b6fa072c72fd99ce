package web_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/hangar-ci/hangar/internal/server"
	"github.com/hangar-ci/hangar/web"
)

func get(t *testing.T, h http.Handler, method, path string, hdr map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Result()
}

func body(t *testing.T, r *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var assetRef = regexp.MustCompile(`(?:src|href)="(/assets/[^"]+)"`)

// TestDist checks the committed bundle: index.html loads hashed assets that
// exist, and nothing from another host.
func TestDist(t *testing.T) {
	index, err := fs.ReadFile(web.Dist(), "index.html")
	if err != nil {
		t.Fatalf("web/dist/index.html: %v (run web/build.sh)", err)
	}
	refs := assetRef.FindAllSubmatch(index, -1)
	if len(refs) < 2 {
		t.Fatalf("index.html loads %d assets, want the script and the stylesheet:\n%s", len(refs), index)
	}
	for _, m := range refs {
		if _, err := fs.Stat(web.Dist(), strings.TrimPrefix(string(m[1]), "/")); err != nil {
			t.Errorf("index.html loads %s, which is not in dist: %v", m[1], err)
		}
	}
	// Every script and stylesheet in dist is the one index.html loads (or
	// one that loads it: the terminal's chunk): a bundle left over from an
	// earlier build (a merge of two rebuilt bundles) means dist is not what
	// web/src builds; run web/build.sh.
	loaded := string(index)
	for _, m := range refs {
		if data, err := fs.ReadFile(web.Dist(), strings.TrimPrefix(string(m[1]), "/")); err == nil {
			loaded += string(data)
		}
	}
	assets, _ := fs.Glob(web.Dist(), "assets/*")
	for _, a := range assets {
		name := strings.TrimPrefix(a, "assets/")
		if (strings.HasSuffix(name, ".js") || strings.HasSuffix(name, ".css")) && !strings.Contains(loaded, name) {
			t.Errorf("dist has %s, which nothing loads: a stale bundle (run web/build.sh)", a)
		}
	}
	if regexp.MustCompile(`(?:src|href)="(?:https?:)?//`).Match(index) {
		t.Errorf("index.html loads something from another host:\n%s", index)
	}
}

func TestUIHandler(t *testing.T) {
	h := server.UIHandler()
	index, _ := fs.ReadFile(web.Dist(), "index.html")

	// The app's routes all get index.html, revalidated on every load.
	for _, p := range []string{"/", "/builds/12", "/apps/demo", "/signin?next=/apps", "/no/such/page"} {
		r := get(t, h, "GET", p, nil)
		b := body(t, r)
		if r.StatusCode != 200 || !bytes.Equal(b, index) {
			t.Errorf("GET %s: %d, not index.html", p, r.StatusCode)
		}
		if cc := r.Header.Get("Cache-Control"); cc != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q, want no-cache", p, cc)
		}
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("GET %s: Content-Type %q", p, ct)
		}
		if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "connect-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q does not keep the page to its own origin", p, csp)
		}
	}
	// Revalidation: same index, 304.
	r := get(t, h, "GET", "/", nil)
	if tag := r.Header.Get("ETag"); tag == "" {
		t.Error("index.html has no ETag")
	} else if r2 := get(t, h, "GET", "/builds/3", map[string]string{"If-None-Match": tag}); r2.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match with index.html's ETag: %d, want 304", r2.StatusCode)
	}

	// Hashed assets: long cache, right type, gzip when asked.
	refs := assetRef.FindAllSubmatch(index, -1)
	for _, m := range refs {
		p := string(m[1])
		r := get(t, h, "GET", p, nil)
		plain := body(t, r)
		if r.StatusCode != 200 || len(plain) == 0 {
			t.Fatalf("GET %s: %d", p, r.StatusCode)
		}
		if cc := r.Header.Get("Cache-Control"); !strings.Contains(cc, "max-age=31536000") || !strings.Contains(cc, "immutable") {
			t.Errorf("GET %s: Cache-Control %q, want a year, immutable", p, cc)
		}
		want := map[bool]string{true: "text/javascript", false: "text/css"}[strings.HasSuffix(p, ".js")]
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, want) {
			t.Errorf("GET %s: Content-Type %q, want %s", p, ct, want)
		}
		rz := get(t, h, "GET", p, map[string]string{"Accept-Encoding": "gzip, deflate, br"})
		if rz.Header.Get("Content-Encoding") != "gzip" {
			t.Errorf("GET %s with Accept-Encoding gzip: not gzipped", p)
			continue
		}
		zr, err := gzip.NewReader(rz.Body)
		if err != nil {
			t.Fatal(err)
		}
		unz, _ := io.ReadAll(zr)
		if !bytes.Equal(unz, plain) {
			t.Errorf("GET %s: the gzipped copy differs from the file: rebuild with web/build.sh", p)
		}
	}

	for _, c := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/assets/nope-123.js", 404},
		{"GET", "/assets/", 404}, // no directory listing
		{"GET", "/assets/../index.html", 404},
		{"GET", "/assets", 200}, // not a file: a client route
		{"GET", "/api/v1/nope", 404},
		{"POST", "/", 405},
		{"DELETE", "/builds/1", 405},
	} {
		if r := get(t, h, c.method, c.path, nil); r.StatusCode != c.code {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, r.StatusCode, c.code)
		}
	}
	if r := get(t, h, "GET", "/api/v1/nope", nil); !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		t.Errorf("GET /api/v1/nope: %s, want the API's JSON error", r.Header.Get("Content-Type"))
	}
}

// TestUIMounted checks the UI next to the API: the API's routes keep
// theirs, every other GET is the UI's.
func TestUIMounted(t *testing.T) {
	var api http.Handler
	func() {
		defer func() {
			if e := recover(); e != nil {
				t.Fatalf("server.New with the UI: %v\n(mount it with a pattern without a method, m.Handle(\"/\", cfg.UI): the UI handler answers 405 to anything but GET and HEAD)", e)
			}
		}()
		api = server.New(server.Config{UI: server.UIHandler()})
	}()
	for _, c := range []struct {
		method, path string
		code         int
		ctype        string
	}{
		{"GET", "/", 200, "text/html"},
		{"GET", "/builds/4", 200, "text/html"},
		{"GET", "/healthz", 200, "text/plain"},
		{"GET", "/api/v1/apps", 401, "application/json"},
		{"GET", "/api/v1/nope", 404, "application/json"},
		{"POST", "/api/v1/nope", 404, "application/json"},
	} {
		r := get(t, api, c.method, c.path, nil)
		if r.StatusCode != c.code || !strings.HasPrefix(r.Header.Get("Content-Type"), c.ctype) {
			t.Errorf("%s %s: %d %s, want %d %s", c.method, c.path, r.StatusCode, r.Header.Get("Content-Type"), c.code, c.ctype)
		}
	}
}
