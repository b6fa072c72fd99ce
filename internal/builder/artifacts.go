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
	"slices"
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
	abs, _ := r.expandPathUnset(p, env)
	return abs
}

// expandPathUnset is expandPath that also returns the names of the
// variables p refers to that env does not set.
func (r *run) expandPathUnset(p string, env []string) (string, []string) {
	var unset []string
	p = workflow.Expand(p, func(name string) (string, bool) {
		v, ok := lookupEnv(env, name)
		if !ok && !slices.Contains(unset, name) {
			unset = append(unset, name)
		}
		return v, ok
	})
	if p == "~" || strings.HasPrefix(p, "~/") {
		home, _ := lookupEnv(env, "HOME")
		p = home + p[1:]
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(r.dir, p)
	}
	return filepath.Clean(p), unset
}

// within reports whether p is dir or under it.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// uploadArtifacts is the artifacts step: it collects the files and
// directories the patterns match and uploads them to the runner. Nothing
// found, a file over a limit or a refused upload is said in the log; the
// step fails only when the link does.
func (r *run) uploadArtifacts(ctx context.Context, out io.Writer) error {
	env := mergeEnv(r.env, readEnvFile(r.cmEnv))
	lim := r.job.Limits
	if lim == nil || r.files == nil {
		fmt.Fprintln(out, "This server keeps no artifacts: none are uploaded.")
		return nil
	}
	c := &collector{r: r, out: out, lim: lim, seen: map[string]bool{}, names: map[string]bool{}}
	start := time.Now()
	for _, pattern := range r.job.Artifacts {
		abs := r.expandPath(pattern, env)
		root := r.dir
		if !within(abs, r.dir) || abs == r.dir {
			// As on Codemagic, an absolute pattern (/tmp/xcodebuild_logs/*.log).
			if why := r.refuseArtifactPattern(abs); why != "" {
				fmt.Fprintf(out, "Pattern %s (%s) is not collected: %s\n", pattern, abs, why)
				continue
			}
			root = "/"
		}
		rel, _ := filepath.Rel(root, abs)
		matches := glob(root, filepath.ToSlash(rel))
		for _, m := range matches {
			if err := c.collect(ctx, filepath.Join(root, filepath.FromSlash(m.rel))); err != nil {
				return err
			}
		}
		if len(matches) == 0 {
			fmt.Fprintf(out, "Pattern %s matched no files\n", pattern)
		}
	}
	if c.found == 0 {
		fmt.Fprintln(out, "No artifacts found: no file matches the artifacts patterns")
		return nil
	}
	fmt.Fprintf(out, "Uploaded %d artifact%s, %s, in %s\n", len(r.links), plural(len(r.links), "", "s"), build.HumanBytes(c.total), time.Since(start).Round(time.Millisecond))
	return nil
}

// refuseArtifactPattern says why the absolute pattern abs, outside the
// clone, is not searched ("" if it is).
func (r *run) refuseArtifactPattern(abs string) string {
	parts := splitPattern(filepath.ToSlash(abs))
	if len(parts) == 0 || hasMeta(parts[0]) || strings.Contains(parts[0], "{") || parts[0] == "**" {
		return "it would search the whole file system; start it with a directory, such as /tmp/xcodebuild_logs/*.log"
	}
	if within(r.home, abs) {
		return "it holds the build's home ($HOME, with Hangar's own files); list what to collect in it"
	}
	for _, d := range kernelDirs {
		if within(abs, d) {
			return "it is in " + d + ", a file system of the kernel"
		}
	}
	return ""
}

// collector collects one build's artifacts.
type collector struct {
	r     *run
	out   io.Writer
	lim   *link.FileLimits
	seen  map[string]bool // the paths already collected
	names map[string]bool // the artifact names given
	dirs  []string        // the directories collected (zipped), whose entries are in their archive
	found int             // files and directories found
	total int64           // bytes uploaded
}

// collect uploads the match p (absolute): a file as it is, a directory as
// a zip archive, as Codemagic does (Runner.xcarchive becomes
// Runner.xcarchive.zip). Something under a directory collected already is
// in that archive, and is not collected again. An artifact of the clone
// is named by its path in the clone; one from elsewhere by its name,
// suffixed _1, _2, ... if another artifact has it (as Codemagic does).
func (c *collector) collect(ctx context.Context, p string) error {
	if c.seen[p] || slices.ContainsFunc(c.dirs, func(d string) bool { return within(p, d) }) {
		return nil
	}
	c.seen[p] = true
	c.found++
	r, out, lim := c.r, c.out, c.lim
	inClone := within(p, r.dir) && p != r.dir
	shown := p
	if inClone {
		shown = filepath.ToSlash(mustRel(r.dir, p))
	}
	real, fi, err := r.checkArtifact(p, inClone)
	if err != nil {
		fmt.Fprintf(out, "%s: %v: not uploaded\n", shown, err)
		return nil
	}
	base := shown
	if !inClone {
		base = path.Base(filepath.ToSlash(p))
	}
	name := c.uniqueName(base, fi.IsDir())
	c.names[name] = true
	left := lim.ArtifactBuild - c.total
	if fi.IsDir() {
		c.dirs = append(c.dirs, p)
		zf, err := r.zipDir(real, path.Base(filepath.ToSlash(p)), min(lim.ArtifactFile, left))
		switch {
		case errors.Is(err, errTooLarge) && left < lim.ArtifactFile:
			fmt.Fprintf(out, "%s/ (zipped) would take this build's artifacts past the server's limit of %s per build: not uploaded\n", shown, build.HumanBytes(lim.ArtifactBuild))
			return nil
		case errors.Is(err, errTooLarge):
			fmt.Fprintf(out, "%s/ zipped is over the server's limit of %s per artifact: not uploaded\n", shown, build.HumanBytes(lim.ArtifactFile))
			return nil
		case err != nil:
			fmt.Fprintf(out, "%s/: zipping it failed: %v: not uploaded\n", shown, err)
			return nil
		}
		defer zf.Close()
		return c.upload(ctx, zf, name, artifactType(p))
	}
	size := fi.Size()
	if size > lim.ArtifactFile {
		fmt.Fprintf(out, "%s is %s, over the server's limit of %s per artifact: not uploaded\n", shown, build.HumanBytes(size), build.HumanBytes(lim.ArtifactFile))
		return nil
	}
	if size > left {
		fmt.Fprintf(out, "%s (%s) would take this build's artifacts past the server's limit of %s per build: not uploaded\n", shown, build.HumanBytes(size), build.HumanBytes(lim.ArtifactBuild))
		return nil
	}
	f, err := os.Open(real)
	if err != nil {
		fmt.Fprintf(out, "%s: %v: not uploaded\n", shown, err)
		return nil
	}
	defer f.Close()
	return c.upload(ctx, f, name, artifactType(p))
}

// uniqueName is the artifact name of a file (or, zipped, a directory):
// base, or base_N if another artifact has it.
func (c *collector) uniqueName(base string, dir bool) string {
	ext := path.Ext(base)
	stem := strings.TrimSuffix(base, ext)
	if stem == "" {
		stem, ext = base, ""
	}
	suffix := ""
	if dir {
		suffix = ".zip"
	}
	name := base + suffix
	for n := 1; c.names[name]; n++ {
		name = fmt.Sprintf("%s_%d%s%s", stem, n, ext, suffix)
	}
	return name
}

// upload sends f as the artifact name; only a failed link is an error.
func (c *collector) upload(ctx context.Context, f *os.File, name, typ string) error {
	n, err := c.r.uploadArtifact(ctx, c.out, f, name, typ)
	if errors.Is(err, errLinkFailed) {
		return err
	}
	c.total += n
	return nil
}

// artifactType is an artifact's type in CM_ARTIFACT_LINKS: the extension
// of the file or directory collected ("apk", "xcarchive").
func artifactType(rel string) string {
	return strings.TrimPrefix(path.Ext(rel), ".")
}

func plural(n int, one, more string) string {
	if n == 1 {
		return one
	}
	return more
}

// errLinkFailed: the link to the runner failed during an upload.
var errLinkFailed = errors.New("the link to the runner failed")

// checkArtifact returns the real path and the file info of the match p:
// a regular file or a directory that the steps' user can read. A match
// of the clone counts if it is a symbolic link that leads to one of the
// clone; one from elsewhere must not be Hangar's own (~/.hangar) or the
// kernel's.
func (r *run) checkArtifact(p string, inClone bool) (string, os.FileInfo, error) {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", nil, err
	}
	if inClone {
		root, err := filepath.EvalSymlinks(r.dir)
		if err != nil {
			return "", nil, err
		}
		if !within(real, root) {
			return "", nil, errors.New("it is a symbolic link to a file outside the clone")
		}
	} else {
		if hangar, err := filepath.EvalSymlinks(filepath.Join(r.home, ".hangar")); err == nil && within(real, hangar) {
			return "", nil, errors.New("it is Hangar's own file of the build")
		}
		for _, d := range kernelDirs {
			if within(real, d) {
				return "", nil, errors.New("it is in " + d + ", a file system of the kernel")
			}
		}
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", nil, err
	}
	if !fi.Mode().IsRegular() && !fi.IsDir() {
		return "", nil, errors.New("it is not a regular file or a directory")
	}
	if !r.stepsReach(real) || !r.stepsMayArchive(fi) {
		return "", nil, errors.New("the steps' user cannot read it")
	}
	return real, fi, nil
}

// uploadArtifact sends f, from where it stands to its end, as the
// artifact name and records its link. It returns the bytes kept;
// errLinkFailed if the link failed.
func (r *run) uploadArtifact(ctx context.Context, out io.Writer, f *os.File, name, typ string) (int64, error) {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		fmt.Fprintf(out, "%s: not a regular file: not uploaded\n", name)
		return 0, nil
	}
	size := fi.Size()
	start := time.Now()
	st, err := r.files.OpenFile(link.FileHeader{Op: link.PutArtifact, Name: name, Size: size})
	if err != nil {
		if ctx.Err() != nil {
			return 0, errLinkFailed
		}
		fmt.Fprintf(out, "%s: %v\n", name, err)
		return 0, nil
	}
	defer st.Close()
	// Exactly the size announced, should the file grow meanwhile.
	if _, err := io.CopyN(st, f, size); err != nil {
		fmt.Fprintf(out, "%s: upload failed: %v\n", name, err)
		return 0, nil
	}
	res, err := finishUpload(st)
	if err != nil {
		fmt.Fprintf(out, "%s: upload failed: %v\n", name, err)
		return 0, errLinkFailed
	}
	if res.Error != "" {
		fmt.Fprintf(out, "%s: %s\n", name, res.Error)
		return 0, nil
	}
	fmt.Fprintf(out, "Uploaded %s (%s) in %s\n", name, build.HumanBytes(res.Size), time.Since(start).Round(time.Millisecond))
	r.links = append(r.links, artifactLink{Name: path.Base(name), Type: typ, URL: res.URL, MD5: res.MD5})
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
