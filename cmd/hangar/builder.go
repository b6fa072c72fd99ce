package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/hangar-ci/hangar/internal/builder"
)

func builderCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "builder",
		Short:  "Run inside a build machine (started by the runner; reads its credentials from stdin)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if os.Getpid() == 1 || os.Getenv(builder.InitEnv) == "subreaper" {
				// PID 1 of a machine (or its subreaper, see InitEnv): stay
				// as its init, run the builder below.
				return &exitError{code: builder.Init([]string{"builder"})}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// The kube driver hands the hello over in a file (a Secret
			// volume) rather than on stdin.
			hello := io.Reader(os.Stdin)
			if path := os.Getenv("HANGAR_HELLO_FILE"); path != "" {
				f, err := os.Open(path)
				if err != nil {
					return fmt.Errorf("builder: %w", err)
				}
				defer f.Close()
				hello = f
			}
			return builder.Run(ctx, builder.Config{
				Home:   os.Getenv("HANGAR_HOME"),
				User:   os.Getenv("HANGAR_USER"),
				Stdin:  hello,
				Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
			})
		},
	}
}

// installBuilderCmd copies this binary to a path: the kube driver's init
// container runs it to put the builder into the Pod's build image.
func installBuilderCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "install-builder DEST",
		Short:  "Copy this hangar binary to DEST (run by the kube driver's init container)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("install-builder: %w", err)
			}
			src, err := os.Open(exe)
			if err != nil {
				return fmt.Errorf("install-builder: %w", err)
			}
			defer src.Close()
			dst, err := os.OpenFile(args[0], os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
			if err != nil {
				return fmt.Errorf("install-builder: %w", err)
			}
			if _, err := io.Copy(dst, src); err != nil {
				dst.Close()
				return fmt.Errorf("install-builder: %w", err)
			}
			if err := dst.Close(); err != nil {
				return fmt.Errorf("install-builder: %w", err)
			}
			return nil
		},
	}
}
