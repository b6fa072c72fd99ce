package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/workflow"
)

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func appCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "app", Short: "Manage apps (repositories Hangar builds)"}
	var repo, secret string
	var asJSON, refuse bool
	add := &cobra.Command{
		Use:   "add NAME --repo URL_OR_PATH [--webhook-secret S] [--refuse-unsupported]",
		Short: "Register an app",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			a, err := c.AddApp(cmd.Context(), api.AppRequest{Name: args[0], Repo: repo, WebhookSecret: secret, RefuseUnsupported: refuse})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a)
			}
			fmt.Printf("Added app %s (%s)\n", a.Name, a.Repo)
			fmt.Printf("Webhook URL:    %s\n", a.WebhookURL)
			if secret == "" {
				fmt.Printf("Webhook secret: %s (shown once)\n", a.WebhookSecret)
			}
			if a.RefuseUnsupported {
				fmt.Printf("Unsupported:    builds of workflows using keys Hangar does not support are refused\n")
			}
			fmt.Printf("Start a build:  hangar build start %s --follow\n", a.Name)
			// What Hangar makes of the workflow file, before any build.
			wfs, err := c.Workflows(cmd.Context(), a.Name, "")
			if err != nil {
				fmt.Printf("\nWorkflow file: %v\n", err)
				return nil
			}
			reports := make([]workflow.Report, len(wfs.Workflows))
			for i, w := range wfs.Workflows {
				reports[i] = w.Check
			}
			fmt.Println()
			printReports(os.Stdout, fmt.Sprintf("%s (branch %s at %.10s)", wfs.File, wfs.Branch, wfs.Commit), reports)
			return nil
		},
	}
	add.Flags().StringVar(&repo, "repo", "", "git URL or local path of the repository (required)")
	add.Flags().StringVar(&secret, "webhook-secret", "", "secret of the GitHub webhook (default: a random one, shown once)")
	add.Flags().BoolVar(&asJSON, "json", false, "print the app as JSON")
	add.Flags().BoolVar(&refuse, "refuse-unsupported", false, "refuse to start builds of workflows that use keys Hangar does not support (see `hangar workflow check`)")
	_ = add.MarkFlagRequired("repo")

	var listJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List apps",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			apps, err := c.Apps(cmd.Context())
			if err != nil {
				return err
			}
			if listJSON {
				return printJSON(apps)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tREPOSITORY\tCREATED\tUNSUPPORTED KEYS")
			for _, a := range apps {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Name, a.Repo, a.CreatedAt.Local().Format(time.DateTime), unsupportedPolicy(a))
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")

	var showJSON bool
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show an app",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			a, err := c.App(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if showJSON {
				return printJSON(a)
			}
			fmt.Printf("Name:        %s\nRepository:  %s\nWebhook URL: %s\nCreated:     %s\nUnsupported: %s\n", a.Name, a.Repo, a.WebhookURL, a.CreatedAt.Local().Format(time.DateTime), unsupportedHint(*a))
			return nil
		},
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print JSON")

	var setRefuse, setJSON bool
	set := &cobra.Command{
		Use:   "set NAME --refuse-unsupported=true|false",
		Short: "Change an app's settings",
		Long: "Change an app's settings (an admin, or a token for the app).\n\n" +
			"--refuse-unsupported=true refuses to start builds (by hand, reruns and webhooks) of workflows that use\n" +
			"keys Hangar does not support (listed by `hangar workflow check` and on the app page); false allows them.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("refuse-unsupported") {
				return fmt.Errorf("nothing to change: give --refuse-unsupported=true or --refuse-unsupported=false")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			a, err := c.SetAppSettings(cmd.Context(), args[0], api.AppSettings{RefuseUnsupported: &setRefuse})
			if err != nil {
				return err
			}
			if setJSON {
				return printJSON(a)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "App %s: workflows using unsupported keys are %s\n", a.Name, unsupportedHint(*a))
			return nil
		},
	}
	set.Flags().BoolVar(&setRefuse, "refuse-unsupported", false, "refuse builds of workflows that use keys Hangar does not support")
	set.Flags().BoolVar(&setJSON, "json", false, "print the app as JSON")

	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an app with its builds",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			if err := c.DeleteApp(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Printf("Deleted app %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(add, list, show, set, del, keystoreCmd(cf))
	return cmd
}

// unsupportedPolicy says what a's builds do with workflows using keys
// Hangar does not support.
func unsupportedPolicy(a api.App) string {
	if a.RefuseUnsupported {
		return "refused"
	}
	return "allowed"
}

// unsupportedHint is unsupportedPolicy with how to change it.
func unsupportedHint(a api.App) string {
	if a.RefuseUnsupported {
		return "refused (`hangar app set " + a.Name + " --refuse-unsupported=false` allows them)"
	}
	return "allowed, listed in the build log (`hangar app set " + a.Name + " --refuse-unsupported=true` refuses them)"
}
