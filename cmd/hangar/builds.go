package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
)

func buildCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "build", Short: "Start, follow and inspect builds"}
	cmd.AddCommand(buildStartCmd(cf), buildShowCmd(cf), buildLogsCmd(cf), buildListCmd(cf), buildCancelCmd(cf), buildRerunCmd(cf), buildContinueCmd(cf), buildSSHExtendCmd(cf),
		buildSSHScriptCmd(cf), buildSSHConfigCmd(cf), buildEventsCmd(cf), buildArtifactsCmd(cf))
	return cmd
}

// parseID reads a build argument: the id ("12") or the alias ("build-12").
func parseID(s string) (int64, error) {
	if id, err := build.ParseAlias(s); err == nil {
		return id, nil
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%q is not a build id: ids are positive numbers (see `hangar build list`)", s)
	}
	return id, nil
}

// exitFor is the exit status for a build that ended: 0 only if it finished.
func exitFor(b *build.Build) error {
	if b.Status == build.Finished {
		return nil
	}
	msg := ""
	if b.Message != "" {
		msg = ": " + b.Message
	}
	fmt.Fprintf(os.Stderr, "hangar: %s (build %d) %s%s\n", b.Name(), b.ID, b.Status, msg)
	return &exitError{code: 1}
}

func buildStartCmd(cf *clientFlags) *cobra.Command {
	var wf, branch string
	var follow, asJSON bool
	var sshMode string
	var breaks, inputs []string
	cmd := &cobra.Command{
		Use:   "start APP [--workflow ID] [--branch B] [--input KEY=VALUE]... [--ssh] [--ssh-break-before STEP]... [--follow] [--json]",
		Short: "Start a build of an app",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			req := api.StartRequest{App: args[0], Workflow: wf, Branch: branch, SSHBreakBefore: breaks}
			if req.Inputs, err = parseInputs(inputs); err != nil {
				return err
			}
			switch sshMode {
			case "on", "true", "yes":
				req.SSH = true
			case "on-failure":
				req.SSHOnFailure = true
			case "", "off", "false", "no":
			default:
				return fmt.Errorf("--ssh=%s: use --ssh (SSH from the start) or --ssh=on-failure (only if a step fails)", sshMode)
			}
			// A breakpoint holds the build for you to SSH in: it implies --ssh.
			if len(breaks) > 0 {
				if req.SSHOnFailure {
					return errors.New("--ssh-break-before holds the build for you to SSH in before the step: it needs --ssh, not --ssh=on-failure")
				}
				req.SSH = true
			}
			b, err := c.StartBuild(cmd.Context(), req)
			if err != nil {
				return err
			}
			if asJSON && !follow {
				return printJSON(b)
			}
			if !asJSON {
				fmt.Printf("%s (build %d): workflow %s, branch %s at %.10s\n", b.Name(), b.ID, b.Workflow, b.Branch, b.Commit)
			}
			if !follow {
				if b.Status.Done() {
					return exitFor(b)
				}
				fmt.Printf("Follow it with: hangar build logs %d --follow\n", b.ID)
				if b.SSH.Enabled {
					fmt.Printf("SSH into it:    hangar ssh %d%s\n", b.ID, oneLinerNote(b))
				} else if b.SSH.Mode == build.SSHOnFailure {
					fmt.Printf("SSH on failure: if a step fails, hangar ssh %d gets you in\n", b.ID)
				}
				return nil
			}
			out := io.Writer(os.Stdout)
			if asJSON {
				out = io.Discard
			}
			end, err := followBuild(cmd.Context(), c, b.ID, out)
			if err != nil {
				return err
			}
			if asJSON {
				_ = printJSON(end)
			}
			return exitFor(end)
		},
	}
	cmd.Flags().StringVar(&wf, "workflow", "", "workflow id (required when the file has several)")
	cmd.Flags().StringVar(&branch, "branch", "", "branch to build (default: the repository's default branch)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "show the steps and their output as the build runs")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the build as JSON (with --follow: once it ends)")
	cmd.Flags().StringVar(&sshMode, "ssh", "", "enable SSH access to the build's machine (see `hangar ssh ID`); --ssh=on-failure: only if a step fails (a passing build finishes at once)")
	cmd.Flags().Lookup("ssh").NoOptDefVal = "on"
	cmd.Flags().StringArrayVar(&inputs, "input", nil, "a value for one of the workflow's inputs, KEY=VALUE (repeat for several; see `hangar workflow check`)")
	cmd.Flags().StringArrayVar(&breaks, "ssh-break-before", nil, "pause the build before this step (its number, 1 for the first script, or its name; repeatable), with SSH open, until `hangar build continue ID` or `hangar-steps continue` in the machine (implies --ssh)")
	return cmd
}

// parseInputs reads --input KEY=VALUE flags. Values stay strings: the
// server reads them as the inputs' types ("3", "true").
func parseInputs(flags []string) (map[string]any, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	out := map[string]any{}
	for _, f := range flags {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--input %q: write --input KEY=VALUE", f)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("--input %s is given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

// followBuild prints a build's progress and log until it ends, and returns
// it as it ended. The server sends a step's lines before the step's end.
func followBuild(ctx context.Context, c *api.Client, id int64, out io.Writer) (*build.Build, error) {
	var steps []build.Step
	header := map[int]bool{}
	ended := map[int]bool{}
	var sshShown build.SSHState
	printHeader := func(i int) {
		if !header[i] && i < len(steps) {
			header[i] = true
			fmt.Fprintf(out, "==> %s\n", stepLabel(steps[i]))
		}
	}
	err := c.Follow(ctx, id, func(ev api.LogEvent) error {
		switch {
		case ev.Build != nil:
			b := ev.Build
			steps = b.Steps
			if b.SSH.Enabled && b.SSH.State != sshShown && (b.SSH.State == build.SSHReady || b.SSH.State == build.SSHClosed) {
				sshShown = b.SSH.State
				if b.SSH.State == build.SSHReady {
					fmt.Fprintf(out, "*** SSH is ready: hangar ssh %d%s\n", b.ID, oneLinerNote(b))
				} else {
					fmt.Fprintf(out, "*** SSH access closed: %s\n", b.SSH.ClosedReason)
				}
			}
			for i, s := range steps {
				switch s.Status {
				case build.StepRunning:
					printHeader(i)
				case build.StepSuccess, build.StepFailed, build.StepCanceled:
					if !ended[i] {
						printHeader(i)
						ended[i] = true
						fmt.Fprintf(out, "%s %s (%s)%s\n", mark(s.Status), s.Name, stepDuration(s), exitNote(s))
					}
				case build.StepSkipped:
					if !ended[i] && s.Reason != "" {
						printHeader(i)
						ended[i] = true
						fmt.Fprintf(out, "%s %s (skipped: %s)\n", mark(s.Status), s.Name, s.Reason)
					}
				}
			}
		case ev.Line != nil:
			printHeader(ev.Line.Step)
			fmt.Fprintf(out, "    %s\n", ev.Line.Text)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	b, err := c.Build(ctx, id)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "%s (build %d) %s in %s\n", b.Name(), b.ID, b.Status, buildDuration(b))
	return b, nil
}

func mark(s build.StepStatus) string {
	switch s {
	case build.StepSuccess:
		return "✔"
	case build.StepFailed:
		return "✘"
	case build.StepCanceled:
		return "■"
	case build.StepSkipped:
		return "-"
	case build.StepRunning:
		return "▶"
	case build.StepPaused:
		return "‖"
	}
	return "·"
}

func stepDuration(s build.Step) string {
	if s.DurationMS != nil {
		return (time.Duration(*s.DurationMS) * time.Millisecond).String()
	}
	if s.StartedAt != nil {
		return time.Since(*s.StartedAt).Round(time.Millisecond).String()
	}
	return string(s.Status)
}

func exitNote(s build.Step) string {
	if s.ExitCode != nil && *s.ExitCode != 0 {
		return fmt.Sprintf(", exit status %d", *s.ExitCode)
	}
	return ""
}

func buildDuration(b *build.Build) string {
	switch {
	case b.StartedAt == nil:
		return "-"
	case b.FinishedAt == nil:
		return time.Since(*b.StartedAt).Round(time.Second).String()
	}
	return b.FinishedAt.Sub(*b.StartedAt).Round(time.Millisecond).String()
}

func buildShowCmd(cf *clientFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show ID [--json]",
		Short: "Show a build and its steps",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, c, err := cf.build(args[0])
			if err != nil {
				return err
			}
			b, err := c.Build(cmd.Context(), id)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(b)
			}
			fmt.Printf("%s (build %d)\n", b.Name(), b.ID)
			fmt.Printf("Workflow: %s (%s)\nBranch:   %s at %.10s\nTrigger:  %s\nStatus:   %s\nDuration: %s\n",
				b.WorkflowName, b.Workflow, b.Branch, b.Commit, b.Trigger, statusLine(b, time.Now()), buildDuration(b))
			if b.Message != "" {
				fmt.Printf("Message:  %s\n", b.Message)
			}
			printSSH(os.Stdout, b, time.Now())
			if b.RerunOf != nil {
				fmt.Printf("Rerun of: build %d\n", *b.RerunOf)
			}
			for _, id := range b.Reruns {
				fmt.Printf("Rerun as: build %d\n", id)
			}
			if len(b.Steps) > 0 {
				fmt.Println("Steps:")
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				for _, s := range b.Steps {
					d := ""
					if s.Status != build.StepPending && s.Status != build.StepSkipped {
						d = stepDuration(s)
					}
					if s.Reason != "" {
						d = s.Reason
					}
					fmt.Fprintf(tw, "  %s %s\t%s\t%s%s\n", mark(s.Status), stepLabel(s), s.Status, d, exitNote(s))
				}
				_ = tw.Flush()
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the build as JSON")
	return cmd
}

// logPage is how many lines `hangar build logs` asks for at once.
const logPage = 10000

func buildLogsCmd(cf *clientFlags) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs ID [--follow]",
		Short: "Print a build's log",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, c, err := cf.build(args[0])
			if err != nil {
				return err
			}
			if follow {
				b, err := followBuild(cmd.Context(), c, id, os.Stdout)
				if err != nil {
					return err
				}
				return exitFor(b)
			}
			b, err := c.Build(cmd.Context(), id)
			if err != nil {
				return err
			}
			step := -1
			var after int64
			for {
				lines, err := c.Logs(cmd.Context(), id, after, logPage)
				if err != nil {
					return err
				}
				for _, l := range lines {
					if l.Step != step {
						step = l.Step
						if step < len(b.Steps) {
							fmt.Printf("==> %s\n", stepLabel(b.Steps[step]))
						}
					}
					fmt.Printf("    %s\n", l.Text)
					after = l.Seq
				}
				if len(lines) < logPage {
					return nil
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the build ends")
	return cmd
}

func buildListCmd(cf *clientFlags) *cobra.Command {
	var appName string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--app A]",
		Short: "List the newest builds",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			list, err := c.Builds(cmd.Context(), appName, 0)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(list)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tAPP\tWORKFLOW\tBRANCH\tCOMMIT\tSTATUS\tTRIGGER\tDURATION")
			for _, b := range list {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%.10s\t%s\t%s\t%s\n", b.ID, b.App, b.Workflow, b.Branch, b.Commit, b.Status, b.Trigger, buildDuration(&b))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&appName, "app", "", "only builds of this app")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func buildCancelCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a build",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, c, err := cf.build(args[0])
			if err != nil {
				return err
			}
			b, err := c.CancelBuild(cmd.Context(), id)
			if err != nil {
				return err
			}
			fmt.Printf("%s (build %d) %s\n", b.Name(), b.ID, b.Status)
			return nil
		},
	}
}

// oneLinerNote is the one-line command of b, if shown, and until when it
// works (it is shown for a few minutes; hangar ssh has no such limit).
func oneLinerNote(b *build.Build) string {
	if b.SSH.Command == "" {
		return ""
	}
	until := ""
	if t := b.SSH.CommandExpiresAt; t != nil {
		until = fmt.Sprintf(", works until %s", t.UTC().Format("15:04 MST"))
	}
	return fmt.Sprintf("   (or paste%s: %s)", until, b.SSH.Command)
}

func buildContinueCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "continue ID",
		Short: "Resume a build paused at a breakpoint (--ssh-break-before)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, c, err := cf.build(args[0])
			if err != nil {
				return err
			}
			b, err := c.ContinueBuild(cmd.Context(), id)
			if err != nil {
				return err
			}
			fmt.Printf("%s (build %d) %s: resumed\n", b.Name(), b.ID, statusLine(b, time.Now()))
			return nil
		},
	}
}

// statusLine is a build's status in words, with the time left while it
// waits for its SSH user.
func statusLine(b *build.Build, now time.Time) string {
	st := string(b.Status)
	if b.Status == build.WaitingForSSH {
		st = "waiting for SSH"
		if b.SSH.ExpiresAt != nil {
			st += fmt.Sprintf(" (%s left)", b.SSH.ExpiresAt.Sub(now).Round(time.Second))
		}
	}
	return st
}

// onFailureLine says where a build with SSH on failure stands while no
// step has failed: no credential exists.
func onFailureLine(b *build.Build) string {
	if b.Status.Done() {
		return "on failure: not opened (no step failed), no credential was ever made"
	}
	return "on failure: opens only if a step fails; no credential exists until then"
}

// printSSH prints an SSH build's access: its state, until when and why,
// who is connected, how to connect.
func printSSH(w io.Writer, b *build.Build, now time.Time) {
	a := b.SSH
	if !a.Enabled {
		if a.Mode == build.SSHOnFailure {
			fmt.Fprintf(w, "SSH:      %s\n", onFailureLine(b))
		}
		return
	}
	line := string(a.State)
	if a.Mode == build.SSHOnFailure {
		line = "on failure, a step failed: " + line
	}
	switch {
	case a.State == build.SSHClosed && a.ClosedReason != "":
		line += ": " + a.ClosedReason
	case a.State != build.SSHClosed && a.ExpiresAt != nil:
		line += fmt.Sprintf(", until %s (%s left", a.ExpiresAt.UTC().Format("15:04 UTC"), a.ExpiresAt.Sub(now).Round(time.Second))
		if a.ExpiresBecause != "" {
			line += ": " + a.ExpiresBecause
		}
		line += ")"
	}
	if a.Connections > 0 {
		line += fmt.Sprintf(", %d connected", a.Connections)
	}
	fmt.Fprintf(w, "SSH:      %s\n", line)
	if a.State != build.SSHClosed && !b.Status.Done() {
		fmt.Fprintf(w, "Connect:  hangar ssh %d\n", b.ID)
		if a.Command != "" {
			fmt.Fprintf(w, "          or: %s\n", a.Command)
			if a.CommandExpiresAt != nil {
				fmt.Fprintf(w, "          (this command works until %s; build show again for a fresh one)\n", a.CommandExpiresAt.UTC().Format("15:04 UTC"))
			}
		}
	}
}

func buildSSHExtendCmd(cf *clientFlags) *cobra.Command {
	var by time.Duration
	cmd := &cobra.Command{
		Use:   "ssh-extend ID --by 10m",
		Short: "Give a build's SSH access more time (never past its max_build_duration)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, c, err := cf.build(args[0])
			if err != nil {
				return err
			}
			b, err := c.ExtendSSH(cmd.Context(), id, by)
			if err != nil {
				return err
			}
			fmt.Printf("%s (build %d) %s\n", b.Name(), b.ID, statusLine(b, time.Now()))
			printSSH(os.Stdout, b, time.Now())
			return nil
		},
	}
	cmd.Flags().DurationVar(&by, "by", 10*time.Minute, "how much more time")
	return cmd
}

func buildRerunCmd(cf *clientFlags) *cobra.Command {
	var withSSH, asJSON bool
	cmd := &cobra.Command{
		Use:   "rerun ID [--ssh] [--json]",
		Short: "Start a new build of an ended build's commit, workflow and inputs (--ssh: with SSH access)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, c, err := cf.build(args[0])
			if err != nil {
				return err
			}
			b, err := c.RerunBuild(cmd.Context(), id, api.RerunRequest{SSH: withSSH})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(b)
			}
			fmt.Printf("%s (build %d): a rerun of build %d, workflow %s, branch %s at %.10s\n", b.Name(), b.ID, id, b.Workflow, b.Branch, b.Commit)
			fmt.Printf("Follow it with: hangar build logs %d --follow\n", b.ID)
			if b.SSH.Enabled {
				fmt.Printf("SSH into it:    hangar ssh %d\n", b.ID)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&withSSH, "ssh", false, "enable SSH access to the new build's machine")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the new build as JSON")
	return cmd
}
