package builder

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/workflow"
)

// fileOpener opens file channels to the runner (link.Client).
type fileOpener interface {
	OpenFile(h link.FileHeader) (link.Stream, error)
}

// artifactLink is one entry of CM_ARTIFACT_LINKS, Codemagic's format.
type artifactLink struct {
	Name string `json:"name"`
	Type string `json:"type"`
	URL  string `json:"url"`
	MD5  string `json:"md5"`
}

// artifactLinks is the value of CM_ARTIFACT_LINKS: the uploaded
// artifacts as a JSON array.
func (r *run) artifactLinks() string {
	links := r.links
	if links == nil {
		links = []artifactLink{}
	}
	data, _ := json.Marshal(links)
	return string(data)
}

// expandPath expands $VAR, ${VAR} and a leading ~ of a workflow path
// against env and makes it absolute (a relative one is in the clone).
func (r *run) expandPath(p string, env []string) string {
	p = workflow.Expand(p, func(name string) (string, bool) { return lookupEnv(env, name) })
	if p == "~" || strings.HasPrefix(p, "~/") {
		home, _ := lookupEnv(env, "HOME")
		p = home + p[1:]
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(r.dir, p)
	}
	return filepath.Clean(p)
}

// within reports whether p is dir or under it.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// uploadArtifacts is the artifacts step: it collects the files the
// patterns match in the clone and uploads them to the runner. Nothing
// found, a file over a limit or a refused upload is said in the log; the
// step fails only when the link does.
func (r *run) uploadArtifacts(ctx context.Context, out io.Writer) error {
	env := mergeEnv(r.env, readEnvFile(r.cmEnv))
	lim := r.job.Limits
	if lim == nil || r.files == nil {
		fmt.Fprintln(out, "This server keeps no artifacts: none are uploaded.")
		return nil
	}
	var total int64
	seen := map[string]bool{}
	found := 0
	start := time.Now()
	for _, pattern := range r.job.Artifacts {
		abs := r.expandPath(pattern, env)
		if !within(abs, r.dir) || abs == r.dir {
			fmt.Fprintf(out, "Pattern %s is outside the clone ($CM_BUILD_DIR, %s): not collected. Artifacts are files of the clone; copy others into it first.\n", pattern, r.dir)
			continue
		}
		rel, _ := filepath.Rel(r.dir, abs)
		matches := glob(r.dir, filepath.ToSlash(rel))
		files, dirs := 0, 0
		for _, m := range matches {
			if m.dir {
				dirs++
				continue
			}
			files++
			if seen[m.rel] {
				continue
			}
			seen[m.rel] = true
			found++
			size, err := r.checkArtifact(m.rel)
			if err != nil {
				fmt.Fprintf(out, "%s: %v: not uploaded\n", m.rel, err)
				continue
			}
			if size > lim.ArtifactFile {
				fmt.Fprintf(out, "%s is %s, over the server's limit of %s per artifact: not uploaded\n", m.rel, build.HumanBytes(size), build.HumanBytes(lim.ArtifactFile))
				continue
			}
			if total+size > lim.ArtifactBuild {
				fmt.Fprintf(out, "%s (%s) would take this build's artifacts past the server's limit of %s per build: not uploaded\n", m.rel, build.HumanBytes(size), build.HumanBytes(lim.ArtifactBuild))
				continue
			}
			n, err := r.uploadArtifact(ctx, out, m.rel, size)
			if errors.Is(err, errLinkFailed) {
				return err
			}
			total += n
		}
		switch {
		case files == 0 && dirs > 0:
			fmt.Fprintf(out, "Pattern %s matched %d director%s and no files: artifacts are files (list a directory's files with dir/**/*)\n", pattern, dirs, plural(dirs, "y", "ies"))
		case files == 0:
			fmt.Fprintf(out, "Pattern %s matched no files\n", pattern)
		}
	}
	if found == 0 {
		fmt.Fprintln(out, "No artifacts found: no file of the clone matches the artifacts patterns")
		return nil
	}
	fmt.Fprintf(out, "Uploaded %d artifact%s, %s, in %s\n", len(r.links), plural(len(r.links), "", "s"), build.HumanBytes(total), time.Since(start).Round(time.Millisecond))
	return nil
}

func plural(n int, one, more string) string {
	if n == 1 {
		return one
	}
	return more
}

// errLinkFailed: the link to the runner failed during an upload.
var errLinkFailed = errors.New("the link to the runner failed")

// checkArtifact returns the size of the regular file rel of the clone; a
// symbolic link counts if it leads to a regular file of the clone.
func (r *run) checkArtifact(rel string) (int64, error) {
	p := filepath.Join(r.dir, filepath.FromSlash(rel))
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return 0, err
	}
	root, err := filepath.EvalSymlinks(r.dir)
	if err != nil {
		return 0, err
	}
	if !within(real, root) {
		return 0, errors.New("it is a symbolic link to a file outside the clone")
	}
	fi, err := os.Stat(real)
	if err != nil {
		return 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, errors.New("it is not a regular file")
	}
	return fi.Size(), nil
}

// uploadArtifact sends the artifact rel (size bytes) and records its link.
func (r *run) uploadArtifact(ctx context.Context, out io.Writer, rel string, size int64) (int64, error) {
	f, err := os.Open(filepath.Join(r.dir, filepath.FromSlash(rel)))
	if err != nil {
		fmt.Fprintf(out, "%s: %v: not uploaded\n", rel, err)
		return 0, nil
	}
	defer f.Close()
	start := time.Now()
	st, err := r.files.OpenFile(link.FileHeader{Op: link.PutArtifact, Name: rel, Size: size})
	if err != nil {
		if ctx.Err() != nil {
			return 0, errLinkFailed
		}
		fmt.Fprintf(out, "%s: %v\n", rel, err)
		return 0, nil
	}
	defer st.Close()
	// Exactly the size announced, should the file grow meanwhile.
	if _, err := io.CopyN(st, f, size); err != nil {
		fmt.Fprintf(out, "%s: upload failed: %v\n", rel, err)
		return 0, nil
	}
	res, err := finishUpload(st)
	if err != nil {
		fmt.Fprintf(out, "%s: upload failed: %v\n", rel, err)
		return 0, errLinkFailed
	}
	if res.Error != "" {
		fmt.Fprintf(out, "%s: %s\n", rel, res.Error)
		return 0, nil
	}
	fmt.Fprintf(out, "Uploaded %s (%s) in %s\n", rel, build.HumanBytes(res.Size), time.Since(start).Round(time.Millisecond))
	name := path.Base(rel)
	r.links = append(r.links, artifactLink{Name: name, Type: strings.TrimPrefix(path.Ext(name), "."), URL: res.URL, MD5: res.MD5})
	return res.Size, nil
}

// finishUpload ends an upload and reads the runner's answer.
func finishUpload(st link.Stream) (link.FileResult, error) {
	var res link.FileResult
	if err := st.CloseWrite(); err != nil {
		return res, err
	}
	line, err := bufio.NewReader(io.LimitReader(st, 64<<10)).ReadBytes('\n')
	if err != nil {
		return res, fmt.Errorf("no answer from the runner: %w", err)
	}
	if err := json.Unmarshal(line, &res); err != nil {
		return res, fmt.Errorf("malformed answer from the runner: %w", err)
	}
	return res, nil
}
