package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/hangar-ci/hangar/internal/artifact"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/store"
)

// Files keeps what builders upload: artifacts and caches (KeeperFiles
// on the server; the runner API's client on another host). Each put calls
// done with the byte count read before it keeps anything. OpenCache opens
// the cache that build id of app's workflow restores.
type Files interface {
	Limits() artifact.Limits
	PutArtifact(ctx context.Context, id int64, name string, r io.Reader, limit int64, done func(n int64) error) (build.Artifact, error)
	OpenCache(ctx context.Context, id int64, app, workflow string) (io.ReadCloser, build.Cache, error)
	PutCache(ctx context.Context, app, workflow string, id int64, r io.Reader, done func(n int64) error) (build.Cache, error)
}

// fileServer serves one build's file channels (link.Files) in its own
// goroutine; the job reads artifacts once done is closed.
type fileServer struct {
	j         *job
	done      chan struct{}
	artifacts []build.Artifact // written by the serving goroutine until done
	total     int64            // bytes of artifacts kept
}

// serveFiles serves the builder's file channels until the link closes.
func (j *job) serveFiles() {
	fs := &fileServer{j: j, done: make(chan struct{})}
	j.files = fs
	go func() {
		defer close(fs.done)
		for {
			select {
			case req := <-j.conn.Files():
				fs.serve(req)
			case <-j.conn.Done():
				return
			}
		}
	}()
}

// uploaded returns the build's artifacts once the link has closed.
func (j *job) uploaded() []build.Artifact {
	if j.files == nil {
		return nil
	}
	<-j.files.done
	return j.files.artifacts
}

func (fs *fileServer) serve(req *link.FileRequest) {
	j := fs.j
	files := j.r.cfg.Files
	if files == nil {
		req.Reject("this server keeps no artifacts or caches")
		return
	}
	h := req.Header
	switch h.Op {
	case link.PutArtifact:
		fs.putArtifact(req, files)
	case link.GetCache:
		if len(j.spec.CachePaths) == 0 {
			req.Reject("the workflow has no cache.cache_paths")
			return
		}
		rc, c, err := files.OpenCache(j.ctx, j.b.ID, j.b.App, j.b.Workflow)
		if errors.Is(err, store.ErrNotFound) {
			req.Reject(fmt.Sprintf("no cache of workflow %s yet: the first successful build saves one", j.b.Workflow))
			return
		}
		if err != nil {
			j.log.Error("open cache", "err", err)
			req.Reject("the server could not read the cache")
			return
		}
		defer rc.Close()
		st, err := req.Accept()
		if err != nil {
			return
		}
		defer st.Close()
		info, _ := json.Marshal(link.CacheInfo{Size: c.Size, Build: c.Build, Created: c.CreatedAt.Format("2006-01-02 15:04:05 UTC")})
		if _, err := st.Write(append(info, '\n')); err != nil {
			return
		}
		if _, err := io.Copy(st, rc); err != nil {
			return
		}
		_ = st.CloseWrite()
	case link.PutCache:
		if len(j.spec.CachePaths) == 0 {
			req.Reject("the workflow has no cache.cache_paths")
			return
		}
		st, err := req.Accept()
		if err != nil {
			return
		}
		defer st.Close()
		c, err := files.PutCache(j.ctx, j.b.App, j.b.Workflow, j.b.ID, st, complete(req))
		res := link.FileResult{Size: c.Size}
		if err != nil {
			res = link.FileResult{Error: uploadError(err, "the cache", files.Limits().Cache)}
		}
		answer(st, res)
	default:
		req.Reject("unknown file operation " + strconv.Quote(h.Op))
	}
}

func (fs *fileServer) putArtifact(req *link.FileRequest, files Files) {
	j, h := fs.j, req.Header
	lim := files.Limits()
	if err := artifact.CheckName(h.Name); err != nil {
		req.Reject(err.Error())
		return
	}
	if h.Size < 0 || h.Size > lim.ArtifactFile {
		req.Reject(fmt.Sprintf("%s is %s, over the server's limit of %s per artifact: not uploaded", h.Name, build.HumanBytes(h.Size), build.HumanBytes(lim.ArtifactFile)))
		return
	}
	if fs.total+h.Size > lim.ArtifactBuild {
		req.Reject(fmt.Sprintf("%s (%s) would take the build's artifacts past the server's limit of %s per build: not uploaded", h.Name, build.HumanBytes(h.Size), build.HumanBytes(lim.ArtifactBuild)))
		return
	}
	st, err := req.Accept()
	if err != nil {
		return
	}
	defer st.Close()
	done := complete(req)
	a, err := files.PutArtifact(j.ctx, j.b.ID, h.Name, st, h.Size, func(n int64) error {
		if n != h.Size {
			return fmt.Errorf("the builder sent %d bytes, not the %d it announced", n, h.Size)
		}
		return done(n)
	})
	if err != nil {
		answer(st, link.FileResult{Error: uploadError(err, h.Name, lim.ArtifactFile)})
		return
	}
	fs.total += a.Size
	a.URL = j.r.artifactURL(j.b.ID, a.Name)
	fs.artifacts = append(fs.artifacts, a)
	answer(st, link.FileResult{Size: a.Size, MD5: a.MD5, URL: a.URL})
}

// complete is the done check of an upload: the builder announced what it
// sent (it did not stop midway).
func complete(req *link.FileRequest) func(n int64) error {
	return func(n int64) error {
		sent, ok := req.Completed()
		if !ok || sent != n {
			return errors.New("the upload did not complete")
		}
		return nil
	}
}

func uploadError(err error, what string, limit int64) string {
	if errors.Is(err, artifact.ErrTooLarge) {
		return fmt.Sprintf("%s is over the server's bound of %s: not kept", what, build.HumanBytes(limit))
	}
	return fmt.Sprintf("%s was not kept: %v", what, err)
}

func answer(st link.Stream, res link.FileResult) {
	data, _ := json.Marshal(res)
	_, _ = st.Write(append(data, '\n'))
	_ = st.CloseWrite()
}

// artifactURL is where the API serves an artifact.
func (r *Runner) artifactURL(id int64, name string) string {
	base := ""
	if r.cfg.PublicURL != nil {
		base = strings.TrimRight(r.cfg.PublicURL(), "/")
	}
	return base + build.ArtifactPath(id, name)
}
