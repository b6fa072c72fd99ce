package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hangar-ci/hangar/internal/workflow"
)

func workflowCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "workflow", Short: "Work with workflow files (codemagic.yaml)"}
	cmd.AddCommand(workflowCheckCmd())
	return cmd
}

func workflowCheckCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check [FILE]",
		Short: "Validate a workflow file locally and show, per workflow, what Hangar runs, honours and does not support",
		Long: "Validate a workflow file without a server. FILE defaults to codemagic.yaml (or hangar.yaml) in the\n" +
			"current directory. The exit status is 1 when the file has an error.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := ""
			if len(args) == 1 {
				path = args[0]
			} else {
				for _, n := range workflow.FileNames {
					if _, err := os.Stat(n); err == nil {
						path = n
						break
					}
				}
				if path == "" {
					return fmt.Errorf("no %s in this directory: name the file, `hangar workflow check FILE`", strings.Join(workflow.FileNames, " or "))
				}
			}
			data, err := os.ReadFile(path)
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s does not exist", path)
			}
			if err != nil {
				return err
			}
			f, err := workflow.Parse(filepath.Base(path), data)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return &exitError{code: 1}
			}
			reports := make([]workflow.Report, len(f.Workflows))
			for i, w := range f.Workflows {
				reports[i] = w.Report()
			}
			if asJSON {
				return printJSON(reports)
			}
			printReports(os.Stdout, f.Name, reports)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the reports as JSON")
	return cmd
}

// printReports writes what Hangar makes of each workflow of a file.
func printReports(out io.Writer, file string, reports []workflow.Report) {
	fmt.Fprintf(out, "%s is valid: %d workflow(s)\n", file, len(reports))
	for _, r := range reports {
		fmt.Fprintf(out, "\nWorkflow %s (%s)\n  Runs:\n", r.ID, r.Name)
		for _, s := range r.Steps {
			fmt.Fprintf(out, "    %s\n", s)
		}
		fmt.Fprintln(out, "  Honoured:")
		for _, h := range r.Honoured {
			fmt.Fprintf(out, "    %s\n", h)
		}
		if len(r.Unsupported) == 0 {
			fmt.Fprintln(out, "  Not supported: nothing; every key of this workflow is acted on")
			continue
		}
		fmt.Fprintln(out, "  Not supported (accepted, not run by Hangar):")
		for _, u := range r.Unsupported {
			fmt.Fprintf(out, "    %s: %s\n", u.Key, u.Why)
		}
	}
}
