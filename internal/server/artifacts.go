package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"strings"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/store"
)

// Files serves builds' artifacts and the apps' caches (artifact.Keeper).
// Download tickets are kept where every replica takes them.
type Files interface {
	Artifacts(ctx context.Context, id int64) ([]build.Artifact, error)
	OpenArtifact(ctx context.Context, id int64, name string) (io.ReadSeekCloser, build.Artifact, error)
	Caches(ctx context.Context, app string) ([]build.Cache, error)
	ClearCaches(ctx context.Context, app, workflow string) (int, error)
	IssueTicket(ctx context.Context, id int64, name string) (string, error)
	TakeTicket(ctx context.Context, ticket string) (int64, string, error)
}

func (s *Server) files(w http.ResponseWriter) (Files, bool) {
	if s.cfg.Files == nil {
		writeError(w, http.StatusNotFound, "this server keeps no artifacts or caches")
		return nil, false
	}
	return s.cfg.Files, true
}

// listArtifacts serves GET /api/v1/builds/{id}/artifacts.
func (s *Server) listArtifacts(w http.ResponseWriter, r *http.Request) {
	b, ok := s.lookupBuild(w, r)
	if !ok {
		return
	}
	files, ok := s.files(w)
	if !ok {
		return
	}
	list, err := files.Artifacts(r.Context(), b.ID)
	if err != nil {
		s.internal(w, "list artifacts", err)
		return
	}
	base := s.baseURL(r)
	for i := range list {
		list[i].URL = base + build.ArtifactPath(b.ID, list[i].Name)
	}
	writeJSON(w, http.StatusOK, list)
}

// artifactTicket serves POST /api/v1/builds/{id}/artifact-tickets: a
// single-use URL, valid 30 seconds, that downloads one artifact without
// the Authorization header (for a browser's own download), through any
// server of the database.
func (s *Server) artifactTicket(w http.ResponseWriter, r *http.Request) {
	b, ok := s.lookupBuild(w, r)
	if !ok {
		return
	}
	var req api.ArtifactTicketRequest
	if !s.decode(w, r, &req) {
		return
	}
	files, ok := s.files(w)
	if !ok {
		return
	}
	f, _, err := files.OpenArtifact(r.Context(), b.ID, req.Name)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("build %d has no artifact %q: see `hangar build artifacts %d`", b.ID, req.Name, b.ID))
		return
	}
	if err != nil {
		s.internal(w, "open artifact", err)
		return
	}
	f.Close()
	t, err := files.IssueTicket(r.Context(), b.ID, req.Name)
	if err != nil {
		s.internal(w, "issue a download ticket", err)
		return
	}
	writeJSON(w, http.StatusCreated, api.ArtifactTicket{URL: build.ArtifactPath(b.ID, req.Name) + "?ticket=" + t})
}

// downloadArtifact serves GET /api/v1/builds/{id}/artifacts/{name...},
// with an API token or a ticket (artifactTicket), ranges included.
func (s *Server) downloadArtifact(w http.ResponseWriter, r *http.Request) {
	if t := r.URL.Query().Get("ticket"); t != "" {
		id, ok := pathID(w, r)
		if !ok {
			return
		}
		files, ok := s.files(w)
		if !ok {
			return
		}
		tid, name, err := files.TakeTicket(r.Context(), t)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			s.internal(w, "take a download ticket", err)
			return
		}
		if err != nil || tid != id || name != r.PathValue("name") {
			writeError(w, http.StatusUnauthorized, "this download link has expired or was used already: download the artifact again from the build page")
			return
		}
		s.serveArtifact(w, r, id)
		return
	}
	s.auth(func(w http.ResponseWriter, r *http.Request) {
		if b, ok := s.lookupBuild(w, r); ok {
			s.serveArtifact(w, r, b.ID)
		}
	})(w, r)
}

func (s *Server) serveArtifact(w http.ResponseWriter, r *http.Request, id int64) {
	files, ok := s.files(w)
	if !ok {
		return
	}
	name := r.PathValue("name")
	f, a, err := files.OpenArtifact(r.Context(), id, name)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("build %d has no artifact %q (or it has expired): see `hangar build artifacts %d`", id, name, id))
		return
	}
	if err != nil {
		s.internal(w, "open artifact", err)
		return
	}
	defer f.Close()
	base := path.Base(name)
	// A build's files are the build's, not the UI's: should a browser
	// render one (an .html or .svg artifact) despite the attachment, it
	// runs in a sandbox without the UI's origin.
	w.Header().Set("Content-Security-Policy", "sandbox; default-src 'none'")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": base}))
	if ct := mime.TypeByExtension(path.Ext(base)); ct != "" {
		w.Header().Set("Content-Type", ct)
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	w.Header().Set("Digest", "md5="+a.MD5)
	w.Header().Set("X-Checksum-Sha256", a.SHA256)
	if strings.Count(r.Header.Get("Range"), ",") >= maxRanges {
		// Each range may read a chunk of an artifact kept in the database
		// again (in any order, one byte each): past a few, the whole
		// file is sent, which reads each chunk once (RFC 9110 lets a
		// server ignore Range).
		r.Header.Del("Range")
	}
	http.ServeContent(w, r, "", a.CreatedAt, f)
}

// maxRanges bounds the ranges of one artifact download that are served
// as asked.
const maxRanges = 8

// listCaches serves GET /api/v1/caches[?app=NAME]: the caches of the apps
// the token may use.
func (s *Server) listCaches(w http.ResponseWriter, r *http.Request) {
	files, ok := s.files(w)
	if !ok {
		return
	}
	app := r.URL.Query().Get("app")
	if app != "" {
		if _, ok := s.lookupApp(w, r, app); !ok {
			return
		}
	}
	list, err := files.Caches(r.Context(), app)
	if err != nil {
		s.internal(w, "list caches", err)
		return
	}
	out := []build.Cache{}
	for _, c := range list {
		if t := tokenOf(r); t != nil && t.Allows(c.App) {
			out = append(out, c)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// clearCaches serves DELETE /api/v1/apps/{name}/caches[?workflow=W].
func (s *Server) clearCaches(w http.ResponseWriter, r *http.Request) {
	app, ok := s.lookupApp(w, r, r.PathValue("name"))
	if !ok {
		return
	}
	files, ok := s.files(w)
	if !ok {
		return
	}
	wf := r.URL.Query().Get("workflow")
	n, err := files.ClearCaches(r.Context(), app.Name, wf)
	if err != nil {
		s.internal(w, "clear caches", err)
		return
	}
	s.log.Info("caches cleared", "app", app.Name, "workflow", wf, "count", n)
	writeJSON(w, http.StatusOK, api.CachesCleared{Deleted: n})
}
