package builder

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

const stepsUsage = `usage: hangar-steps [list]        the build's steps: status, exit code, duration
       hangar-steps run STEP      run a step again as the build ran it: its
                                  variables, the CM_ENV exports of the steps
                                  before it, its working directory
       hangar-steps env STEP      print that environment
       hangar-steps continue      resume a build paused at a breakpoint
STEP is a step's number (as in ~/.hangar/steps/NN-*.sh) or its name.
`

// StepsMain is `hangar-steps` (the builder's binary under that name, in a
// build machine): it reads what the builder left in ~/.hangar. It returns
// the exit status.
func StepsMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	home := os.Getenv("HANGAR_HOME")
	if home == "" {
		home = os.Getenv("HOME")
	}
	hangarDir := filepath.Join(home, ".hangar")
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "hangar-steps: "+format+"\n", a...)
		return 2
	}
	if len(args) == 0 {
		args = []string{"list"}
	}
	if args[0] == "continue" && len(args) == 1 {
		return stepsContinue(filepath.Join(hangarDir, controlSock), stdout, stderr)
	}
	data, err := os.ReadFile(filepath.Join(hangarDir, stepsFile))
	if errors.Is(err, os.ErrNotExist) {
		return fail("no build here: %s is missing (hangar-steps runs inside a Hangar build machine)", filepath.Join(hangarDir, stepsFile))
	}
	if err != nil {
		return fail("%v", err)
	}
	var st StepsState
	if err := json.Unmarshal(data, &st); err != nil {
		return fail("%s: %v", filepath.Join(hangarDir, stepsFile), err)
	}
	switch {
	case args[0] == "list" && len(args) == 1:
		stepsList(&st, stdout)
		return 0
	case (args[0] == "run" || args[0] == "env") && len(args) == 2:
		s, err := st.find(args[1])
		if err != nil {
			return fail("%v", err)
		}
		env, note, err := st.envOf(s)
		if err != nil {
			return fail("step %d (%s): %v", s.Number, s.Name, err)
		}
		if args[0] == "env" {
			if note != "" {
				fmt.Fprintf(stderr, "hangar-steps: %s\n", note)
			}
			for _, kv := range env {
				fmt.Fprintln(stdout, kv)
			}
			return 0
		}
		if s.Script == "" {
			return fail("step %d (%s) is one of Hangar's own (cache, artifacts): it has no script to run again", s.Number, s.Name)
		}
		return stepsRun(s, env, note, stdin, stdout, stderr)
	case args[0] == "-h" || args[0] == "--help" || args[0] == "help":
		fmt.Fprint(stdout, stepsUsage)
		return 0
	}
	fmt.Fprint(stderr, stepsUsage)
	return 2
}

// find is the script step named by arg: its number or its name.
func (st *StepsState) find(arg string) (*StepState, error) {
	scripts := st.Steps[min(1, len(st.Steps)):]
	if n, err := strconv.Atoi(arg); err == nil {
		if n < 1 || n > len(scripts) {
			return nil, fmt.Errorf("no step %d: the steps are numbered 1 to %d (see `hangar-steps list`)", n, len(scripts))
		}
		return &scripts[n-1], nil
	}
	for i := range scripts {
		if strings.EqualFold(scripts[i].Name, arg) {
			return &scripts[i], nil
		}
	}
	return nil, fmt.Errorf("no step named %q (see `hangar-steps list`)", arg)
}

// envOf is step s's environment: the one it ran with, or for a step that
// has not run, the one it would get now (with a note saying so).
func (st *StepsState) envOf(s *StepState) (env []string, note string, err error) {
	if s.Env != "" {
		env, err = readEnvEntries(s.Env)
		return env, "", err
	}
	env, err = readEnvEntries(st.BaseEnv)
	if err != nil {
		return nil, "", err
	}
	exports := readEnvFile(st.CMEnv)
	return mergeEnv(env, exports), fmt.Sprintf("step %d has not run: this is the environment it would get now (with the CM_ENV exports so far)", s.Number), nil
}

func stepsList(st *StepsState, w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "STEP\tNAME\tSTATUS\tEXIT\tDURATION\n")
	for _, s := range st.Steps[min(1, len(st.Steps)):] {
		exit, dur := "", ""
		if s.ExitCode != nil {
			exit = strconv.Itoa(*s.ExitCode)
		}
		if s.DurationMS != nil {
			dur = (time.Duration(*s.DurationMS) * time.Millisecond).Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", s.Number, s.Name, s.Status, exit, dur)
	}
	tw.Flush()
	if i := slices.IndexFunc(st.Steps, func(s StepState) bool { return s.Status == "paused" }); i >= 0 {
		fmt.Fprintf(w, "\nThe build is paused before step %d: `hangar-steps continue` resumes it.\n", st.Steps[i].Number)
	}
}

// stepsRun runs step s again with env, in the foreground, and returns its
// exit status.
func stepsRun(s *StepState, env []string, note string, stdin io.Reader, stdout, stderr io.Writer) int {
	if note != "" {
		fmt.Fprintf(stderr, "hangar-steps: %s\n", note)
	}
	fmt.Fprintf(stderr, "hangar-steps: running step %d (%s) in %s\n", s.Number, s.Name, s.Dir)
	var cmd *exec.Cmd
	if s.Shebang {
		cmd = exec.Command(s.Script)
	} else {
		cmd = exec.Command("bash", "--noprofile", "--norc", "-eo", "pipefail", s.Script)
	}
	cmd.Dir, cmd.Env = s.Dir, env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		fmt.Fprintf(stderr, "hangar-steps: step %d (%s) succeeded\n", s.Number, s.Name)
		return 0
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		fmt.Fprintf(stderr, "hangar-steps: step %d (%s) failed: exit status %d\n", s.Number, s.Name, ee.ExitCode())
		return ee.ExitCode()
	}
	fmt.Fprintf(stderr, "hangar-steps: step %d (%s): %v\n", s.Number, s.Name, err)
	return 1
}

// stepsContinue asks the builder to resume a paused build.
func stepsContinue(sock string, stdout, stderr io.Writer) int {
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "hangar-steps: cannot reach the builder (%v): is this a Hangar build machine whose build still runs?\n", err)
		return 2
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "continue\n"); err != nil {
		fmt.Fprintf(stderr, "hangar-steps: %v\n", err)
		return 2
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fmt.Fprintf(stderr, "hangar-steps: no answer from the builder: %v\n", err)
		return 2
	}
	line = strings.TrimSpace(line)
	if msg, ok := strings.CutPrefix(line, "ok: "); ok {
		fmt.Fprintf(stdout, "hangar-steps: %s\n", msg)
		return 0
	}
	fmt.Fprintf(stderr, "hangar-steps: %s\n", strings.TrimPrefix(line, "error: "))
	return 1
}
