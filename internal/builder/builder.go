// Package builder is the process that runs inside a build's machine as
// `hangar builder`: it links up with its runner (package link), clones the
// repository, runs the workflow's steps with bash and streams their output.
package builder

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gitrepo"
	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/mask"
	"github.com/hangar-ci/hangar/internal/workflow"
)

// Config is the builder's configuration, read from its environment by the
// command that starts it.
type Config struct {
	// Home is where the clone and the step scripts go (HANGAR_HOME).
	Home string
	// User is the account steps run as (HANGAR_USER); empty: our own.
	User string
	// Stdin carries the runner's link.Hello.
	Stdin io.Reader
	// Logger takes the builder's own diagnostics (never secrets).
	Logger *slog.Logger
}

// Run links up with the runner, runs the job it sends and then waits until
// the runner closes the link.
func Run(ctx context.Context, cfg Config) error {
	hello, err := link.ReadHello(cfg.Stdin)
	if err != nil {
		return err
	}
	c, err := link.Dial(ctx, hello)
	if err != nil {
		return err
	}
	defer c.Close()
	job, err := c.Job()
	if err != nil {
		return err
	}
	r, err := newRun(cfg, job, c)
	if err == nil {
		r.banner = newBanner(job, hello.Name)
		r.steps, err = newStepBook(r, hello.Name)
	}
	if err != nil {
		_ = c.Send(link.Event{Type: link.Done, Failed: true, Error: mask.NewSet(job.Secure).String(err.Error())})
		return c.Wait()
	}
	defer r.steps.close()
	var access *sshAccess
	if job.SSH != nil {
		if access, err = r.startSSH(ctx, hello, job.SSH); err != nil {
			_ = c.Send(link.Event{Type: link.Done, Failed: true, Error: err.Error()})
			return c.Wait()
		}
		defer access.revoke("the build has ended")
	}
	go r.commands(ctx, c, hello, access)
	failed, reason := r.all(ctx)
	r.banner.done()
	// A line that a step's background process has not ended yet goes
	// before done (the runner ends it).
	r.out.drain()
	if err := c.Send(link.Event{Type: link.Done, Failed: failed, Error: r.masks.String(reason)}); err != nil {
		return err
	}
	_ = c.Wait()
	return nil
}

// run is one job being executed.
type run struct {
	job   *link.Job
	log   *slog.Logger
	steps *stepBook // ~/.hangar/steps.json and breakpoints; nil in tests
	send  func(link.Event) error
	out   *outbox // steps' output, on its way to the runner
	home  string
	dir   string // the clone: $FCI_BUILD_DIR
	cred  *syscall.Credential
	uid   int
	gid   int
	env   []string       // base environment of every step, CM_ENV exports merged in
	cmEnv string         // path of the CM_ENV file
	event any            // the job's event, for the steps' conditions
	files fileOpener     // file channels to the runner; nil in tests
	links []artifactLink // the artifacts uploaded, for CM_ARTIFACT_LINKS

	// banner is an SSH login's first words; nil in tests.
	banner *banner
	// masks are the job's secure values, hidden in every step's output.
	masks *mask.Set
}

func newRun(cfg Config, job *link.Job, c *link.Client) (*run, error) {
	r := &run{job: job, log: cfg.Logger, send: c.Send, out: newOutbox(c.Send, job.MaxOutput), home: cfg.Home, uid: -1, gid: -1,
		masks: mask.NewSet(job.Secure)}
	if c != nil {
		r.files = c
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.home == "" {
		return nil, errors.New("builder: HANGAR_HOME is not set")
	}
	userName := cfg.User
	if userName != "" {
		u, err := user.Lookup(userName)
		if err != nil {
			return nil, fmt.Errorf("builder: look up user %s: %w", userName, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		r.uid, r.gid = uid, gid
		r.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if gids, err := u.GroupIds(); err == nil {
			for _, g := range gids {
				if n, err := strconv.Atoi(g); err == nil {
					r.cred.Groups = append(r.cred.Groups, uint32(n))
				}
			}
		}
	} else if u, err := user.Current(); err == nil {
		userName = u.Username
	}
	r.dir = filepath.Join(r.home, "clone")
	steps := filepath.Join(r.home, ".hangar", "steps")
	if err := os.MkdirAll(steps, 0o755); err != nil {
		return nil, fmt.Errorf("builder: %w", err)
	}
	r.cmEnv = filepath.Join(r.home, ".hangar", "env")
	if err := os.WriteFile(r.cmEnv, nil, 0o644); err != nil {
		return nil, fmt.Errorf("builder: %w", err)
	}
	for _, p := range []string{r.home, filepath.Join(r.home, ".hangar"), steps, r.cmEnv} {
		if err := r.chown(p); err != nil {
			return nil, err
		}
	}
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	// hangar-steps (steps.go) is in ~/.hangar/bin, for steps and sessions;
	// a login shell's /etc/profile sets its own PATH, so ~/.profile puts
	// it back when the home has no profile of its own.
	bin := filepath.Join(r.home, ".hangar", "bin")
	if err := r.ensureProfile(bin); err != nil {
		return nil, err
	}
	r.env = []string{
		"PATH=" + bin + ":" + path,
		"HOME=" + r.home,
		"USER=" + userName,
		"LOGNAME=" + userName,
		"SHELL=/bin/bash",
		"LANG=C.UTF-8",
		"FCI_BUILD_DIR=" + r.dir,
		"CM_BUILD_DIR=" + r.dir,
		"CM_ENV=" + r.cmEnv,
	}
	if err := r.writeKeystores(); err != nil {
		return nil, err
	}
	r.env = mergeEnv(r.env, job.Env)
	// The workflow's variables come last, each expanded against the
	// variables before it (Codemagic's order: built-in, groups, vars).
	for _, kv := range job.Vars {
		k, v, _ := strings.Cut(kv, "=")
		v = workflow.Expand(v, func(name string) (string, bool) { return lookupEnv(r.env, name) })
		r.env = mergeEnv(r.env, []string{k + "=" + v})
	}
	if len(job.Event) > 0 {
		if err := json.Unmarshal(job.Event, &r.event); err != nil {
			return nil, fmt.Errorf("builder: the job's event: %w", err)
		}
	}
	return r, nil
}

func (r *run) chown(path string) error {
	if r.cred == nil {
		return nil
	}
	if err := os.Lchown(path, r.uid, r.gid); err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	return nil
}

// all runs every step in order. After the first failure it runs only the
// steps that run after a failure (artifacts, publishing scripts), as
// Codemagic does; the others stay pending (the runner marks them
// skipped). failed and reason are the first failure's.
func (r *run) all(ctx context.Context) (failed bool, reason string) {
	brk := breaks(r.job)
	for i, st := range r.job.Steps {
		if failed && !(st.Kind == build.KindArtifacts || st.Kind == build.KindPublishing) {
			continue
		}
		if brk[i] && !failed {
			if err := r.pauseBefore(ctx, i); err != nil {
				failed, reason = true, fmt.Sprintf("paused before step %q: %v", st.Name, err)
				continue
			}
		}
		var err error
		if i == 0 {
			err = r.step(ctx, i, r.clone)
		} else if fn := r.ownStep(st.Kind); fn != nil {
			err = r.step(ctx, i, fn)
		} else if why, serr := r.skip(st); serr != nil || why != "" {
			if serr == nil {
				_ = r.send(link.Event{Type: link.StepSkipped, Step: i, Text: why})
				if r.steps != nil {
					r.steps.update(i, func(s *StepState) { s.Status = "skipped" })
				}
				continue
			}
			err = r.step(ctx, i, func(context.Context, io.Writer) error { return serr })
		} else {
			err = r.step(ctx, i, func(ctx context.Context, out io.Writer) error { return r.script(ctx, i, st, out) })
		}
		if err != nil && !(i > 0 && st.IgnoreFailure) && !failed {
			failed, reason = true, fmt.Sprintf("step %q failed: %v", st.Name, err)
		}
	}
	return failed, reason
}

// ownStep returns the function of one of Hangar's own steps (nil for a
// script).
func (r *run) ownStep(kind string) func(context.Context, io.Writer) error {
	switch kind {
	case build.KindCacheRestore:
		return r.restoreCache
	case build.KindArtifacts:
		return r.uploadArtifacts
	case build.KindCacheSave:
		return r.saveCache
	}
	return nil
}

// skip says why step st is skipped ("" when it runs): the server's
// changeset decision, or its condition evaluated now, with the
// environment the step would get.
func (r *run) skip(st link.Step) (string, error) {
	if st.Skip != "" || st.Condition == "" {
		return st.Skip, nil
	}
	c, err := workflow.ParseCondition(st.Condition)
	if err != nil {
		return "", fmt.Errorf("when.condition: %w", err)
	}
	env := mergeEnv(r.env, readEnvFile(r.cmEnv))
	ok := c.Eval(workflow.Context{
		Env:    func(name string) (string, bool) { return lookupEnv(env, name) },
		Event:  r.event,
		Inputs: r.job.Inputs,
	})
	if ok {
		return "", nil
	}
	return "when.condition is false: " + st.Condition, nil
}

// lookupEnv finds name in a KEY=VALUE list.
func lookupEnv(env []string, name string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}

// step runs fn as step i, streaming what it writes. The step's end is sent
// only once everything its processes wrote has been sent (see output.go).
func (r *run) step(ctx context.Context, i int, fn func(context.Context, io.Writer) error) error {
	_ = r.send(link.Event{Type: link.StepStart, Step: i})
	if i == 0 && r.steps != nil {
		r.steps.start(0, nil)
	}
	out, err := newStepOutput(r.out, i, r.masks.Stream())
	if err != nil {
		return err
	}
	// The step's processes get the pipe itself (an *os.File), not a
	// writer that exec would copy from and wait on.
	err = fn(ctx, out.w)
	if err != nil {
		fmt.Fprintf(out.w, "hangar: %v\n", err)
	}
	if !out.finish() {
		return errors.New("builder: the link to the runner failed")
	}
	ev := link.Event{Type: link.StepEnd, Step: i}
	if err != nil {
		ev.Failed = true
		ev.Error = r.masks.String(err.Error())
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			ev.ExitCode = ee.ExitCode()
		} else {
			ev.ExitCode = -1
		}
	}
	if r.steps != nil {
		status := "success"
		if err != nil {
			status = "failed"
		}
		r.steps.end(i, status, ev.ExitCode)
	}
	_ = r.send(ev)
	return err
}

// pauseBefore holds the build at a breakpoint before step i, telling the
// runner, until it is resumed.
func (r *run) pauseBefore(ctx context.Context, i int) error {
	who, err := r.steps.pause(ctx, i, func() { _ = r.send(link.Event{Type: link.Paused, Step: i}) })
	if err != nil {
		return err
	}
	_ = r.send(link.Event{Type: link.Resumed, Step: i, Text: who})
	return nil
}

func (r *run) command(ctx context.Context, out io.Writer, dir string, env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred}
	return cmd
}

// clone checks out the job's commit into r.dir.
func (r *run) clone(ctx context.Context, out io.Writer) error {
	j := r.job
	// The runner sends the origin without credentials; strip them again
	// should another runner not: they must not land in .git/config.
	origin := gitrepo.StripCredentials(j.Origin)
	fmt.Fprintf(out, "Cloning %s (branch %s, commit %s)\n", gitrepo.Redact(origin), j.Branch, short(j.Commit))
	env := append(r.env[:len(r.env):len(r.env)], "GIT_TERMINAL_PROMPT=0")
	// Borrow the objects of the server's mirror (mounted read-only in the
	// machine) instead of copying them: a checkout of any size starts at
	// once. The mirror belongs to another user, which git accepts for an
	// alternate object store.
	steps := [][]string{
		{"init", "--quiet", "--initial-branch", j.Branch, r.dir},
		{"-C", r.dir, "remote", "add", "origin", origin},
		{"-C", r.dir, "update-ref", "refs/remotes/origin/" + j.Branch, j.Commit},
		{"-C", r.dir, "checkout", "--quiet", "-B", j.Branch, j.Commit},
		{"-C", r.dir, "branch", "--quiet", "--set-upstream-to", "origin/" + j.Branch},
	}
	alternates := func() error {
		return os.WriteFile(filepath.Join(r.dir, ".git", "objects", "info", "alternates"), []byte(filepath.Join(j.Repo, "objects")+"\n"), 0o644)
	}
	for i, args := range steps {
		if i == 1 {
			if err := alternates(); err != nil {
				return err
			}
		}
		if err := r.command(ctx, out, r.home, env, "git", args...).Run(); err != nil {
			return fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
		}
	}
	fmt.Fprintf(out, "Checked out %s at %s\n", j.Branch, short(j.Commit))
	return nil
}

// scriptPath is where step i's script goes: ~/.hangar/steps/NN-name.sh.
func (r *run) scriptPath(i int, st link.Step) string {
	file := filepath.Base(st.File)
	if st.File == "" || file == "." || file == "/" {
		file = fmt.Sprintf("%02d-step.sh", i)
	}
	return filepath.Join(r.home, ".hangar", "steps", file)
}

// stepDir is the directory a script step runs in.
func (r *run) stepDir(st link.Step) string {
	switch {
	case filepath.IsAbs(st.WorkingDirectory):
		return st.WorkingDirectory
	case st.WorkingDirectory != "":
		return filepath.Join(r.dir, st.WorkingDirectory)
	}
	return r.dir
}

// writePrivate writes a file only the steps' user may read.
// writeKeystores writes the job's keystores into ~/.hangar/keystores
// (0600, the build user's) and sets the first one's variables.
func (r *run) writeKeystores() error {
	if len(r.job.Keystores) == 0 {
		return nil
	}
	dir := filepath.Join(r.home, ".hangar", "keystores")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	if err := r.chown(dir); err != nil {
		return err
	}
	for i, k := range r.job.Keystores {
		path := filepath.Join(dir, k.Ref+".keystore")
		if filepath.Dir(path) != dir {
			return fmt.Errorf("builder: keystore reference %q is not a file name", k.Ref)
		}
		if err := r.writePrivate(path, k.File); err != nil {
			return err
		}
		if i == 0 {
			r.env = mergeEnv(r.env, []string{"CM_KEYSTORE_PATH=" + path, "CM_KEYSTORE_PASSWORD=" + k.Password,
				"CM_KEY_ALIAS=" + k.Alias, "CM_KEY_PASSWORD=" + k.KeyPassword})
		}
	}
	return nil
}

func (r *run) writePrivate(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	return r.chown(path)
}

// ensureProfile makes ~/.hangar/bin and puts it first on a login shell's
// PATH: it adds a line to the profile bash reads (the first of
// ~/.bash_profile, ~/.bash_login and ~/.profile; a new ~/.profile if there
// is none). The home is the build's own.
func (r *run) ensureProfile(bin string) error {
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	if err := r.chown(bin); err != nil {
		return err
	}
	const line = "PATH=\"$HOME/.hangar/bin:$PATH\" # hangar-steps, added by Hangar's builder\n"
	profile := filepath.Join(r.home, ".profile")
	for _, name := range []string{".bash_profile", ".bash_login", ".profile"} {
		if _, err := os.Lstat(filepath.Join(r.home, name)); err == nil {
			profile = filepath.Join(r.home, name)
			break
		}
	}
	old, err := os.ReadFile(profile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("builder: %w", err)
	}
	if bytes.Contains(old, []byte(line)) {
		return nil
	}
	if len(old) > 0 && !bytes.HasSuffix(old, []byte("\n")) {
		old = append(old, '\n')
	}
	if err := os.WriteFile(profile, append(old, line...), 0o644); err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	return r.chown(profile)
}

// script writes step i's script to ~/.hangar/steps and runs it.
func (r *run) script(ctx context.Context, i int, st link.Step, out io.Writer) error {
	path := r.scriptPath(i, st)
	body := st.Script
	if !strings.HasPrefix(body, "#!") {
		body = "#!/usr/bin/env bash\n" + body
	}
	if !strings.HasSuffix(body, "\n") {
		body += "\n"
	}
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		return err
	}
	if err := r.chown(path); err != nil {
		return err
	}
	dir := r.stepDir(st)
	env := mergeEnv(r.env, readEnvFile(r.cmEnv))
	if st.Kind == build.KindPublishing {
		env = mergeEnv(env, []string{"CM_ARTIFACT_LINKS=" + r.artifactLinks()})
	}
	if r.steps != nil {
		r.steps.start(i, env)
	}
	var cmd *exec.Cmd
	if strings.HasPrefix(st.Script, "#!") {
		cmd = r.command(ctx, out, dir, env, path)
	} else {
		cmd = r.command(ctx, out, dir, env, "bash", "--noprofile", "--norc", "-eo", "pipefail", path)
	}
	return cmd.Run()
}

func short(commit string) string {
	if len(commit) > 10 {
		return commit[:10]
	}
	return commit
}

// readEnvFile reads KEY=value lines of a CM_ENV file. Lines that are not
// assignments to a valid name are skipped.
func readEnvFile(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var env []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSuffix(line, "\r")
		k, _, ok := strings.Cut(line, "=")
		if ok && validName.MatchString(k) {
			env = append(env, line)
		}
	}
	return env
}

var validName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// mergeEnv returns base with the assignments of add applied in order.
func mergeEnv(base, add []string) []string {
	out := append([]string(nil), base...)
	idx := make(map[string]int, len(out))
	for i, kv := range out {
		k, _, _ := strings.Cut(kv, "=")
		idx[k] = i
	}
	for _, kv := range add {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}
