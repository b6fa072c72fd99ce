package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hangar-ci/hangar/internal/artifact"
	"github.com/hangar-ci/hangar/internal/build"
)

func buildArtifactsCmd(cf *clientFlags) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "artifacts ID",
		Short: "List a build's artifacts, or download them all (--download DIR)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, c, err := cf.build(args[0])
			if err != nil {
				return err
			}
			list, err := c.Artifacts(cmd.Context(), id)
			if err != nil {
				return err
			}
			if dir == "" {
				if len(list) == 0 {
					fmt.Printf("build %d has no artifacts\n", id)
					return nil
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tSIZE\tEXPIRES\tSHA256")
				for _, a := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Name, build.HumanBytes(a.Size), a.ExpiresAt.Local().Format(time.DateTime), a.SHA256)
				}
				return tw.Flush()
			}
			for _, a := range list {
				start := time.Now()
				path, err := download(cmd, cf, id, dir, a)
				if err != nil {
					return err
				}
				fmt.Printf("%s (%s) in %s\n", path, build.HumanBytes(a.Size), time.Since(start).Round(time.Millisecond))
			}
			if len(list) == 0 {
				fmt.Printf("build %d has no artifacts\n", id)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "download", "", "download every artifact into this directory (keeping their paths in the clone), checking their SHA-256")
	return cmd
}

// download writes artifact a of build id under dir and checks its hash.
func download(cmd *cobra.Command, cf *clientFlags, id int64, dir string, a build.Artifact) (string, error) {
	// The server checks names; a client checks again before writing.
	if err := artifact.CheckName(a.Name); err != nil {
		return "", fmt.Errorf("the server sent a bad artifact name: %w", err)
	}
	c, err := cf.client()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, filepath.FromSlash(a.Name))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	body, err := c.DownloadArtifact(cmd.Context(), id, a.Name)
	if err != nil {
		return "", fmt.Errorf("download %s: %w", a.Name, err)
	}
	defer body.Close()
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), body)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("download %s: %w", a.Name, err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); n != a.Size || !strings.EqualFold(sum, a.SHA256) {
		return "", fmt.Errorf("download %s: got %d bytes with SHA-256 %s, want %d bytes with %s; try again", a.Name, n, sum, a.Size, a.SHA256)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	return path, nil
}

func cacheCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "cache", Short: "List and clear the workflows' caches (cache.cache_paths)"}
	list := &cobra.Command{
		Use:   "list [APP]",
		Short: "List the caches of an app, or of every app",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			app := ""
			if len(args) == 1 {
				app = args[0]
			}
			caches, err := c.Caches(cmd.Context(), app)
			if err != nil {
				return err
			}
			if len(caches) == 0 {
				fmt.Println("no caches")
				return nil
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "APP\tWORKFLOW\tSIZE\tSAVED BY\tSAVED\tEXPIRES")
			for _, k := range caches {
				fmt.Fprintf(tw, "%s\t%s\t%s\tbuild %d\t%s\t%s\n", k.App, k.Workflow, build.HumanBytes(k.Size), k.Build,
					k.CreatedAt.Local().Format(time.DateTime), k.ExpiresAt.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	var workflow string
	clear := &cobra.Command{
		Use:   "clear APP",
		Short: "Delete an app's caches (all, or one workflow's with --workflow): the next build starts clean",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			n, err := c.ClearCaches(cmd.Context(), args[0], workflow)
			if err != nil {
				return err
			}
			fmt.Printf("deleted %d cache%s of %s\n", n, map[bool]string{true: "", false: "s"}[n == 1], args[0])
			return nil
		},
	}
	clear.Flags().StringVar(&workflow, "workflow", "", "clear only this workflow's cache")
	cmd.AddCommand(list, clear)
	return cmd
}

// stepLabel is a step's name as the CLI shows it: a publishing script's
// is marked.
func stepLabel(s build.Step) string {
	if s.Kind == build.KindPublishing {
		return "Publishing: " + s.Name
	}
	return s.Name
}
