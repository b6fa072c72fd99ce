// Command hangar is Hangar's one binary: the service (`hangar server`), the
// process inside build machines (`hangar builder`) and the client commands.
package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/builder"
)

// exitError ends the program with a code and no further message.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	// In a build machine the binary is also hangar-steps (~/.hangar/bin).
	if filepath.Base(os.Args[0]) == "hangar-steps" {
		os.Exit(builder.StepsMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	root := &cobra.Command{
		Use:           "hangar",
		Short:         "Hangar: CI builds on isolated machines you can SSH into",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	var cf clientFlags
	root.PersistentFlags().StringVar(&cf.server, "server", "", "Hangar server URL (env HANGAR_SERVER, default http://127.0.0.1:8080)")
	root.PersistentFlags().StringVar(&cf.token, "token", "", "API token (env HANGAR_TOKEN; default: ./hangar-data/admin-token when readable)")
	root.AddCommand(serverCmd(), gatewayCmd(), imageCmd(), builderCmd(), installBuilderCmd(), builderSFTPCmd(), appCmd(&cf), buildCmd(&cf), sshCmd(&cf), tokenCmd(&cf), workflowCmd(), groupCmd(&cf), cacheCmd(&cf), runnerCmd(&cf))
	if err := root.Execute(); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		msg := err.Error()
		var ua x509.UnknownAuthorityError
		if errors.Is(err, api.ErrUnreachable) && !errors.As(err, &ua) {
			msg += " (is `hangar server` running? set --server or HANGAR_SERVER)"
		}
		fmt.Fprintln(os.Stderr, "hangar:", msg)
		os.Exit(1)
	}
}
