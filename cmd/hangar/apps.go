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
	var asJSON bool
	add := &cobra.Command{
		Use:   "add NAME --repo URL_OR_PATH [--webhook-secret S]",
		Short: "Register an app",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			a, err := c.AddApp(cmd.Context(), api.AppRequest{Name: args[0], Repo: repo, WebhookSecret: secret})
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
			fmt.Fprintln(tw, "NAME\tREPOSITORY\tCREATED")
			for _, a := range apps {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", a.Name, a.Repo, a.CreatedAt.Local().Format(time.DateTime))
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
			fmt.Printf("Name:        %s\nRepository:  %s\nWebhook URL: %s\nCreated:     %s\n", a.Name, a.Repo, a.WebhookURL, a.CreatedAt.Local().Format(time.DateTime))
			return nil
		},
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print JSON")

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
	cmd.AddCommand(add, list, show, del, keystoreCmd(cf))
	return cmd
}
