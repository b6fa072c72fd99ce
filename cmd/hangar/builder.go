package main

import (
	"context"
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
			return builder.Run(ctx, builder.Config{
				Home:   os.Getenv("HANGAR_HOME"),
				User:   os.Getenv("HANGAR_USER"),
				Stdin:  os.Stdin,
				Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
			})
		},
	}
}
