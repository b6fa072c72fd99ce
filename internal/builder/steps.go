package builder

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hangar-ci/hangar/internal/link"
)

// What the builder leaves in the machine for `hangar-steps` (steps_cmd.go),
// under ~/.hangar:
//
//	steps.json        the steps: number, name, script, directory, status,
//	                  exit code, duration (no secrets: readable by the user)
//	steps/NN-*.sh     each step's script
//	steps/NN.env      the environment step NN ran with (0600, the user's):
//	                  the build's variables and the CM_ENV exports of the
//	                  steps before it, one KEY=VALUE per NUL-ended entry
//	steps/base.env    the environment before any CM_ENV export
//	control.sock      where `hangar-steps continue` reaches the builder
//	bin/hangar-steps  the builder's own binary, on the steps' and the
//	                  sessions' PATH
const (
	stepsFile   = "steps.json"
	controlSock = "control.sock"
	stepsCmd    = "hangar-steps"
)

// StepState is one step as `hangar-steps` shows it. Number is the step's
// number in the workflow (1 is its first script; 0 the clone), as in the
// script's file name.
type StepState struct {
	Number     int    `json:"number"`
	Name       string `json:"name"`
	Script     string `json:"script,omitempty"`
	Dir        string `json:"dir,omitempty"`
	Env        string `json:"env,omitempty"` // the env file, once the step started
	Shebang    bool   `json:"shebang,omitempty"`
	Status     string `json:"status"` // pending, paused, running, success, failed, skipped (its when)
	ExitCode   *int   `json:"exit_code,omitempty"`
	DurationMS *int64 `json:"duration_ms,omitempty"`
}

// StepsState is the content of steps.json.
type StepsState struct {
	Build   string      `json:"build"`
	BaseEnv string      `json:"base_env"` // the env file before any export
	CMEnv   string      `json:"cm_env"`   // the CM_ENV file
	Steps   []StepState `json:"steps"`
}

// stepBook keeps steps.json, and the pause before a breakpoint.
type stepBook struct {
	r    *run
	path string

	mu      sync.Mutex
	state   StepsState
	started map[int]time.Time
	paused  int           // the step waited before; -1: not paused
	resume  chan string   // who resumed a pause
	ln      net.Listener  // control.sock
	done    chan struct{} // closed when ln's server returns
}

func newStepBook(r *run, name string) (*stepBook, error) {
	hangarDir := filepath.Join(r.home, ".hangar")
	sb := &stepBook{r: r, path: filepath.Join(hangarDir, stepsFile), started: map[int]time.Time{}, paused: -1, resume: make(chan string, 1)}
	sb.state = StepsState{Build: name, BaseEnv: filepath.Join(hangarDir, "steps", "base.env"), CMEnv: r.cmEnv}
	if err := r.writePrivate(sb.state.BaseEnv, envFile(r.env)); err != nil {
		return nil, err
	}
	for i, st := range r.job.Steps {
		s := StepState{Number: i, Name: st.Name, Status: "pending"}
		if i > 0 && st.Script != "" {
			s.Script = r.scriptPath(i, st)
			s.Dir = r.stepDir(st)
			s.Shebang = strings.HasPrefix(st.Script, "#!")
		}
		sb.state.Steps = append(sb.state.Steps, s)
	}
	if err := sb.save(); err != nil {
		return nil, err
	}
	// hangar-steps: this very binary under that name.
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("builder: %w", err)
	}
	cmd := filepath.Join(hangarDir, "bin", stepsCmd)
	_ = os.Remove(cmd)
	if err := os.Symlink(self, cmd); err != nil {
		return nil, fmt.Errorf("builder: %w", err)
	}
	if err := r.chown(cmd); err != nil {
		return nil, err
	}
	sock := filepath.Join(hangarDir, controlSock)
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("builder: control socket: %w", err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("builder: %w", err)
	}
	if err := r.chown(sock); err != nil {
		ln.Close()
		return nil, err
	}
	sb.ln, sb.done = ln, make(chan struct{})
	go sb.serve()
	return sb, nil
}

// close stops the control socket's server.
func (sb *stepBook) close() {
	sb.ln.Close()
	<-sb.done
}

// save writes steps.json (whole, by rename: a reader never sees half).
func (sb *stepBook) save() error {
	data, err := json.MarshalIndent(sb.state, "", "  ")
	if err != nil {
		return err
	}
	tmp := sb.path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	if err := sb.r.chown(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, sb.path); err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	return nil
}

// update changes step i's state and saves it. A failure to save is
// logged: the build goes on without it.
func (sb *stepBook) update(i int, change func(*StepState)) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if i < 0 || i >= len(sb.state.Steps) {
		return
	}
	change(&sb.state.Steps[i])
	if err := sb.save(); err != nil {
		sb.r.log.Warn("save steps", "err", err)
	}
}

// start notes that step i starts, with env (its environment).
func (sb *stepBook) start(i int, env []string) {
	file := ""
	if i > 0 {
		file = filepath.Join(sb.r.home, ".hangar", "steps", fmt.Sprintf("%02d.env", i))
		if err := sb.r.writePrivate(file, envFile(env)); err != nil {
			sb.r.log.Warn("save step environment", "step", i, "err", err)
			file = ""
		}
	}
	sb.mu.Lock()
	sb.started[i] = time.Now()
	sb.mu.Unlock()
	sb.update(i, func(s *StepState) { s.Status, s.Env = "running", file })
}

// end notes step i's end.
func (sb *stepBook) end(i int, status string, exitCode int) {
	sb.mu.Lock()
	d := time.Since(sb.started[i]).Milliseconds()
	sb.mu.Unlock()
	sb.update(i, func(s *StepState) { s.Status, s.ExitCode, s.DurationMS = status, &exitCode, &d })
}

// pause holds the build before step i until someone resumes it (the
// runner, or `hangar-steps continue` in the machine) or ctx ends, calling
// paused once it can be resumed. It returns who resumed it.
func (sb *stepBook) pause(ctx context.Context, i int, paused func()) (string, error) {
	sb.mu.Lock()
	sb.paused = i
	sb.mu.Unlock()
	sb.update(i, func(s *StepState) { s.Status = "paused" })
	paused()
	defer func() {
		sb.mu.Lock()
		sb.paused = -1
		sb.mu.Unlock()
		sb.update(i, func(s *StepState) {
			if s.Status == "paused" {
				s.Status = "pending"
			}
		})
	}()
	select {
	case who := <-sb.resume:
		return who, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// pausedAt returns the pause the build is in, or nil.
func (sb *stepBook) pausedAt() *paused {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.paused < 0 {
		return nil
	}
	return &paused{Step: sb.paused, Name: sb.state.Steps[sb.paused].Name}
}

// cont resumes a paused build; who is for the log. It says what happened.
func (sb *stepBook) cont(who string) (string, error) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.paused < 0 {
		return "", errors.New("the build is not paused")
	}
	select {
	case sb.resume <- who:
	default:
		return "", errors.New("the build is resuming already")
	}
	return fmt.Sprintf("the build goes on with step %d (%s)", sb.paused, sb.state.Steps[sb.paused].Name), nil
}

// serve answers control.sock: one command per connection ("continue"),
// answered with "ok: ..." or "error: ...".
func (sb *stepBook) serve() {
	defer close(sb.done)
	for {
		c, err := sb.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return
			}
			var msg string
			switch cmd := strings.TrimSpace(line); cmd {
			case "continue":
				msg, err = sb.cont("hangar-steps continue (in the machine)")
			default:
				err = fmt.Errorf("unknown command %q", cmd)
			}
			if err != nil {
				fmt.Fprintf(c, "error: %v\n", err)
				return
			}
			fmt.Fprintf(c, "ok: %s\n", msg)
		}()
	}
}

// envFile is env as an env file's content: NUL-ended KEY=VALUE entries
// (values may hold newlines).
func envFile(env []string) []byte {
	var b []byte
	for _, kv := range env {
		b = append(append(b, kv...), 0)
	}
	return b
}

// readEnvEntries reads an env file written by envFile.
func readEnvEntries(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var env []string
	for _, kv := range strings.Split(string(data), "\x00") {
		if kv != "" {
			env = append(env, kv)
		}
	}
	return env, nil
}

// breaks is the set of steps to pause before.
func breaks(job *link.Job) map[int]bool {
	m := map[int]bool{}
	for _, i := range job.BreakBefore {
		if i > 0 && i < len(job.Steps) {
			m[i] = true
		}
	}
	return m
}
