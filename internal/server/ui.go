package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/hangar-ci/hangar/web"
)

// UIHandler serves the web UI embedded in the binary (web/dist). Files
// under /assets/ have content-hashed names and are cached for a year (a
// gzipped copy is served to clients that take it); every other path gets
// index.html, revalidated on each load, and the UI picks the page from the
// path. Paths under /api/ are never the UI's: they answer 404 in JSON.
func UIHandler() http.Handler {
	return uiHandler(web.Dist())
}

// uiCSP keeps the page to its own origin: it contacts no other host.
// xterm.js and the log's ANSI colours set inline styles.
const uiCSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

func uiHandler(files fs.FS) http.Handler {
	index, err := fs.ReadFile(files, "index.html")
	if err != nil {
		// Built without web/dist: say how to get the UI.
		index = []byte("<!doctype html><title>Hangar</title><p>This hangar binary was built without its web UI: run web/build.sh, then go build.</p>\n")
	}
	sum := sha256.Sum256(index)
	indexTag := `"` + hex.EncodeToString(sum[:8]) + `"`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		p := path.Clean("/" + r.URL.Path)
		if p == "/api" || strings.HasPrefix(p, "/api/") {
			writeError(w, http.StatusNotFound, "no API endpoint "+r.Method+" "+r.URL.Path)
			return
		}
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		if strings.HasPrefix(r.URL.Path, "/assets/") {
			serveAsset(w, r, files, strings.TrimPrefix(r.URL.Path, "/"))
			return
		}
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", indexTag)
		h.Set("Content-Security-Policy", uiCSP)
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(index))
	})
}

// serveAsset serves one hashed file of the bundle, gzipped when the client
// accepts it and the build made a .gz copy.
func serveAsset(w http.ResponseWriter, r *http.Request, files fs.FS, name string) {
	if !fs.ValidPath(name) {
		http.Error(w, "no such file", http.StatusNotFound)
		return
	}
	st, err := fs.Stat(files, name)
	if err != nil || !st.Mode().IsRegular() {
		http.Error(w, "no such file", http.StatusNotFound)
		return
	}
	h := w.Header()
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	h.Set("Content-Type", ctype)
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	h.Set("Vary", "Accept-Encoding")
	if acceptsGzip(r) {
		if gz, err := fs.ReadFile(files, name+".gz"); err == nil {
			h.Set("Content-Encoding", "gzip")
			http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(gz))
			return
		}
	}
	data, err := fs.ReadFile(files, name)
	if err != nil {
		http.Error(w, "no such file", http.StatusNotFound)
		return
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(data))
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.ReplaceAll(strings.TrimSpace(q), " ", "") != "q=0" {
			return true
		}
	}
	return false
}
