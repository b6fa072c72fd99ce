package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/hangar-ci/hangar/internal/sshd"
)

// builderSFTPCmd is the SFTP server that the builder's SSH server runs for
// each sftp/scp session (sshd.Server.SFTPCommand), as the session's user:
// it speaks SFTP on stdin and stdout.
func builderSFTPCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "builder-sftp",
		Short:  "Serve SFTP on stdin/stdout (run by the builder's SSH server)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return sshd.ServeSFTP(os.Stdin, os.Stdout)
		},
	}
}
