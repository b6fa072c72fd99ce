package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/gitrepo"
)

// writeAccess writes key, certificate, known_hosts and config into dir and
// returns the config's path.
func writeAccess(dir string, a *api.SSHAccess) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", err
	}
	// The directory may have existed: make it and the files private anyway.
	if err := os.Chmod(abs, 0o700); err != nil {
		return "", err
	}
	files := []struct {
		name, content string
	}{
		{"key", a.Key},
		{"key-cert.pub", a.Cert},
		{"known_hosts", a.KnownHosts},
		{"config", strings.ReplaceAll(a.Config, "@DIR@", abs)},
	}
	for _, f := range files {
		p := filepath.Join(abs, f.name)
		if err := os.WriteFile(p, []byte(f.content), 0o600); err != nil {
			return "", err
		}
		if err := os.Chmod(p, 0o600); err != nil {
			return "", err
		}
	}
	return filepath.Join(abs, "config"), nil
}

func buildSSHScriptCmd(cf *clientFlags) *cobra.Command {
	var shell string
	cmd := &cobra.Command{
		Use:   "ssh-script ID [--shell bash|powershell]",
		Short: "Print the script that opens an SSH session on a build's machine",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, c, err := cf.build(args[0])
			if err != nil {
				return err
			}
			body, err := c.SSHScript(cmd.Context(), id, shell)
			if err != nil {
				return err
			}
			_, err = io.WriteString(os.Stdout, body)
			return err
		},
	}
	cmd.Flags().StringVar(&shell, "shell", "bash", "bash (Linux, macOS) or powershell (Windows)")
	return cmd
}

func buildSSHConfigCmd(cf *clientFlags) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "ssh-config ID --dir DIR",
		Short: "Write the key, certificate, known_hosts and an ssh_config for a build into DIR",
		Long: "Writes DIR/key, DIR/key-cert.pub, DIR/known_hosts and DIR/config (Host build-N),\n" +
			"so that ssh -F DIR/config build-N, scp -F, sftp -F, rsync -e 'ssh -F DIR/config'\n" +
			"and VS Code Remote-SSH (remote.SSH.configFile) reach the build's machine.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, c, err := cf.build(args[0])
			if err != nil {
				return err
			}
			a, err := c.SSHAccess(cmd.Context(), id)
			if err != nil {
				return err
			}
			cfgPath, err := writeAccess(dir, a)
			if err != nil {
				return err
			}
			fmt.Printf("Wrote %s (usable until %s)\n", cfgPath, a.ExpiresAt.Local().Format(time.DateTime))
			fmt.Printf("Connect:  ssh -F %s %s\n", cfgPath, a.Alias)
			fmt.Printf("Copy:     scp -F %s FILE %s:\n", cfgPath, a.Alias)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory to write into (created, mode 0700)")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}

func sshCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "ssh [ID] [-- COMMAND...]",
		Short: "Open an SSH session on a build's machine (or run COMMAND there); without ID, the newest SSH build of this repository's branch",
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := exec.LookPath("ssh"); err != nil {
				return errors.New("hangar ssh needs OpenSSH's ssh client (apt-get install openssh-client)")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			var id int64
			if dash := cmd.ArgsLenAtDash(); len(args) == 0 || dash == 0 {
				b, err := newestSSHBuild(cmd.Context(), c, ".")
				if err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "hangar: %s (build %d), branch %s\n", b.Name(), b.ID, b.Branch)
				id = b.ID
				args = append([]string{""}, args...)
			} else if id, err = parseID(args[0]); err != nil {
				return err
			}
			a, err := c.SSHAccess(cmd.Context(), id)
			if err != nil {
				return err
			}
			dir, err := os.MkdirTemp("", "hangar-ssh-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			cfgPath, err := writeAccess(dir, a)
			if err != nil {
				return err
			}
			sshArgs := []string{"-F", cfgPath}
			if len(args) == 1 {
				sshArgs = append(sshArgs, "-t", a.Alias)
			} else {
				sshArgs = append(sshArgs, a.Alias, "--")
				sshArgs = append(sshArgs, args[1:]...)
			}
			ssh := exec.CommandContext(cmd.Context(), "ssh", sshArgs...)
			ssh.Stdin, ssh.Stdout, ssh.Stderr = os.Stdin, os.Stdout, os.Stderr
			if err := ssh.Run(); err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return &exitError{code: ee.ExitCode()}
				}
				return err
			}
			return nil
		},
	}
}

func buildEventsCmd(cf *clientFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "events ID [--json]",
		Short: "Show a build's events (SSH script fetches, connections, logins)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, c, err := cf.build(args[0])
			if err != nil {
				return err
			}
			evs, err := c.Events(cmd.Context(), id)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(evs)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tEVENT\tDETAILS")
			for _, ev := range evs {
				var parts []string
				for _, k := range []string{"via", "remote", "detail", "shell", "token", "reason", "conn"} {
					if v, ok := ev.Data[k]; ok {
						parts = append(parts, k+"="+v)
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", ev.Time.Local().Format("15:04:05.000"), ev.Kind, strings.Join(parts, " "))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func tokenCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage API tokens (admin)"}
	var apps []string
	var admin bool
	create := &cobra.Command{
		Use:   "create NAME [--app A]... [--admin]",
		Short: "Create an API token for some apps (or an admin token); the token is printed once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			out, err := c.CreateToken(cmd.Context(), api.TokenRequest{Name: args[0], Apps: apps, Admin: admin})
			if err != nil {
				return err
			}
			fmt.Println(out.Token)
			return nil
		},
	}
	create.Flags().StringSliceVar(&apps, "app", nil, "app the token may use (repeatable)")
	create.Flags().BoolVar(&admin, "admin", false, "an admin token (all apps, tokens)")
	cmd.AddCommand(create)
	return cmd
}

// newestSSHBuild is the newest build with SSH access still open of the
// app whose repository the git checkout at dir comes from (any of its
// remotes), on the checkout's branch.
func newestSSHBuild(ctx context.Context, c *api.Client, dir string) (*build.Build, error) {
	gitOut := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...).Output()
		return strings.TrimSpace(string(out)), err
	}
	branch, err := gitOut("symbolic-ref", "--short", "HEAD")
	if err != nil {
		return nil, errors.New("no build ID given and this is not a git checkout on a branch: give the build's ID (see `hangar build list`)")
	}
	remotes, _ := gitOut("remote")
	ids := map[string]bool{}
	for _, r := range strings.Fields(remotes) {
		if u, err := gitOut("remote", "get-url", r); err == nil {
			ids[gitrepo.Identity(u)] = true
		}
	}
	apps, err := c.Apps(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, a := range apps {
		if ids[gitrepo.Identity(a.Repo)] {
			names = append(names, a.Name)
		}
	}
	if len(names) == 0 {
		return nil, errors.New("no build ID given and no app of this server builds this checkout's repository (its remotes): give the build's ID (see `hangar build list`)")
	}
	for _, app := range names {
		list, err := c.Builds(ctx, app, 100)
		if err != nil {
			return nil, err
		}
		for i := range list {
			b := &list[i]
			if b.Branch == branch && b.SSH.Enabled && b.SSH.State != build.SSHClosed && !b.Status.Done() {
				return b, nil
			}
		}
	}
	return nil, fmt.Errorf("no build of %s on branch %s has SSH access open: start one with `hangar build start %s --branch %s --ssh`", strings.Join(names, ", "), branch, names[0], branch)
}
