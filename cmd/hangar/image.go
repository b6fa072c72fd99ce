package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hangar-ci/hangar/internal/image"
)

// imageFlags locate the image store: --images, else <--data>/images.
type imageFlags struct {
	data, images string
}

func (f *imageFlags) add(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&f.data, "data", "./hangar-data", "the server's data directory (its image store is <data>/images)")
	cmd.PersistentFlags().StringVar(&f.images, "images", "", "the image store directory (default: <data>/images; hangar server --images)")
}

func (f *imageFlags) open() (*image.Store, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("image commands need root (unpacked layers hold device nodes and root-owned files)")
	}
	dir := f.images
	if dir == "" {
		dir = filepath.Join(f.data, "images")
	}
	return image.Open(dir)
}

func imageCmd() *cobra.Command {
	var f imageFlags
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage the images that sandbox machines boot from (on this host's image store)",
	}
	f.add(cmd)
	cmd.AddCommand(imageBuildCmd(&f), imageListCmd(&f), imagePullCmd(&f), imageRmCmd(&f))
	return cmd
}

func imageBuildCmd(f *imageFlags) *cobra.Command {
	var sp image.DebianSpec
	var pkgs string
	var force bool
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build the default image from Debian packages with mmdebstrap (once: skipped while up to date)",
		Long: "Build an image from Debian packages with mmdebstrap and store it (default name " + image.DefaultName + ",\n" +
			"the image of instance types that name none). It is labelled with the versions of Java, Node.js and\n" +
			"Python it holds (io.hangar.java, io.hangar.node, io.hangar.python). An image made from the same\n" +
			"release and packages is kept: the command then returns at once.\n\n" +
			"Default packages: " + strings.Join(image.DefaultPackages, " "),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if pkgs != "" {
				sp.Packages = strings.FieldsFunc(pkgs, func(r rune) bool { return r == ',' || r == ' ' })
			}
			s, err := f.open()
			if err != nil {
				return err
			}
			if info, ok, err := s.UpToDate(sp); err != nil {
				return err
			} else if ok && !force {
				fmt.Fprintf(cmd.OutOrStdout(), "%s is up to date (%s; %s)\n", info.Name, short(info.Digest.Hex), image.Versions(info.Labels))
				return nil
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			sp.Log = cmd.ErrOrStderr()
			start := time.Now()
			fmt.Fprintln(cmd.ErrOrStderr(), "building the image with mmdebstrap (a few minutes)")
			info, err := s.BuildDebian(ctx, sp)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "built %s (%s, %s compressed) in %v: %s\n", info.Name, short(info.Digest.Hex),
				sizeMiB(info.Size), time.Since(start).Round(time.Second), image.Versions(info.Labels))
			return nil
		},
	}
	cmd.Flags().StringVar(&sp.Name, "name", image.DefaultName, "name to store the image under")
	cmd.Flags().StringVar(&sp.Release, "release", image.DefaultRelease, "Debian release")
	cmd.Flags().StringVar(&pkgs, "packages", "", "Debian packages, comma-separated (default: the list above)")
	cmd.Flags().BoolVar(&force, "force", false, "build even if the image is up to date")
	return cmd
}

func imageListCmd(f *imageFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the images of the store",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := f.open()
			if err != nil {
				return err
			}
			list, err := s.List()
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tDIGEST\tSIZE\tTOOLCHAINS")
			for _, i := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", i.Name, short(i.Digest.Hex), sizeMiB(i.Size), image.Versions(i.Labels))
			}
			return tw.Flush()
		},
	}
}

func imagePullCmd(f *imageFlags) *cobra.Command {
	var auth string
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image from an OCI registry (or an OCI layout: oci:DIR[@NAME]) into the store",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := f.open()
			if err != nil {
				return err
			}
			kc, err := image.Keychain(auth)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			info, err := s.Pull(ctx, args[0], kc)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pulled %s (%s, %s compressed): %s\n", info.Name, short(info.Digest.Hex),
				sizeMiB(info.Size), image.Versions(info.Labels))
			return nil
		},
	}
	cmd.Flags().StringVar(&auth, "registry-auth", "", "Docker config.json with registry credentials (default: anonymous)")
	return cmd
}

func imageRmCmd(f *imageFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rm REF...",
		Short: "Remove images from the store (and the layers no other image uses)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := f.open()
			if err != nil {
				return err
			}
			for _, ref := range args {
				if err := s.Remove(ref); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", ref)
			}
			return nil
		},
	}
}

// sizeMiB writes n bytes in MiB with one decimal.
func sizeMiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func short(hex string) string {
	if len(hex) > 12 {
		return hex[:12]
	}
	return hex
}
