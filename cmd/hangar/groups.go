package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/secrets"
)

// shortValue is the length under which `group set` warns that masking a
// value will hide its every occurrence in logs.
const shortValue = 4

func groupCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "group",
		Short: "Manage environment variable groups (secrets that workflows import with environment.groups)",
		Long: `Environment variable groups hold variables, secrets mostly, that a workflow imports
with environment.groups. A group belongs to an app, or is global (--global): every app
may use it, and an app's own group of the same name takes its place. Values are
encrypted at rest and write-only: no command or API answer shows them again, and builds
show them as ***** in their logs.`,
	}
	var global bool
	var fromFile string
	set := &cobra.Command{
		Use:   "set (APP GROUP | --global GROUP) [KEY=VALUE | KEY]... [--from-file FILE]",
		Short: "Set variables of a group (made if needed); KEY alone reads its value from standard input",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			app, group, rest, err := groupArgs(args, global, "set")
			if err != nil {
				return err
			}
			var vars []api.GroupVar
			if fromFile != "" {
				data, err := os.ReadFile(fromFile)
				if err != nil {
					return fmt.Errorf("--from-file: %w", err)
				}
				list, err := secrets.ParseDotenv(string(data))
				if err != nil {
					return fmt.Errorf("--from-file %s: %w", fromFile, err)
				}
				for _, v := range list {
					vars = append(vars, api.GroupVar{Name: v.Name, Value: v.Value})
				}
			}
			stdin := bufio.NewReader(os.Stdin)
			for _, kv := range rest {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					if v, err = readValue(stdin, k); err != nil {
						return err
					}
				}
				vars = append(vars, api.GroupVar{Name: k, Value: v})
			}
			if len(vars) == 0 {
				return errors.New("nothing to set: give KEY=VALUE arguments or --from-file FILE")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			g, err := c.SetGroup(cmd.Context(), app, group, vars)
			if err != nil {
				return err
			}
			for _, v := range vars {
				if n := len([]rune(v.Value)); n > 0 && n < shortValue {
					fmt.Fprintf(os.Stderr, "note: %s has a value of %d character(s); it is masked like every value, so each occurrence of it in a build's log shows as *****\n", v.Name, n)
				}
			}
			fmt.Printf("Set %d variable(s) in %s; it now has %s (values are not shown again)\n", len(vars), groupName(app, group), strings.Join(g.Keys, ", "))
			return nil
		},
	}
	set.Flags().BoolVar(&global, "global", false, "a global group, which every app may use (admin)")
	set.Flags().StringVar(&fromFile, "from-file", "", "read KEY=VALUE lines from FILE (dotenv style: # comments, quotes, export)")

	var listJSON bool
	list := &cobra.Command{
		Use:   "list [APP]",
		Short: "List an app's groups and the global ones, with their keys (never their values); without APP, the global groups",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			var groups []api.Group
			if len(args) == 1 {
				if groups, err = c.Groups(cmd.Context(), args[0]); err != nil {
					return err
				}
			}
			globals, err := c.Groups(cmd.Context(), "")
			if err != nil {
				return err
			}
			groups = append(groups, globals...)
			if listJSON {
				return printJSON(groups)
			}
			if len(groups) == 0 {
				fmt.Println("No environment variable groups: create one with `hangar group set APP GROUP KEY=VALUE`")
				return nil
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "GROUP\tSCOPE\tKEYS\tUPDATED")
			for _, g := range groups {
				scope := "app " + args[0]
				if g.Global {
					scope = "global"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", g.Name, scope, strings.Join(g.Keys, ", "), g.UpdatedAt.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")

	del := &cobra.Command{
		Use:   "delete (APP GROUP | --global GROUP) [KEY]...",
		Short: "Delete a group, or only the keys named",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			app, group, keys, err := groupArgs(args, global, "delete")
			if err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			if len(keys) == 0 {
				if err := c.DeleteGroup(cmd.Context(), app, group); err != nil {
					return err
				}
				fmt.Printf("Deleted %s\n", groupName(app, group))
				return nil
			}
			for _, k := range keys {
				if err := c.DeleteGroupVar(cmd.Context(), app, group, k); err != nil {
					return err
				}
			}
			fmt.Printf("Deleted %s from %s\n", strings.Join(keys, ", "), groupName(app, group))
			return nil
		},
	}
	del.Flags().BoolVar(&global, "global", false, "a global group (admin)")
	cmd.AddCommand(set, list, del)
	return cmd
}

// groupArgs splits (APP GROUP | --global GROUP) REST....
func groupArgs(args []string, global bool, verb string) (app, group string, rest []string, err error) {
	if global {
		return "", args[0], args[1:], nil
	}
	if len(args) < 2 {
		return "", "", nil, fmt.Errorf("give the app and the group (hangar group %s APP GROUP ...), or --global GROUP", verb)
	}
	return args[0], args[1], args[2:], nil
}

func groupName(app, group string) string {
	if app == "" {
		return "global group " + group
	}
	return "group " + group + " of app " + app
}

// readValue reads KEY's value from standard input: one line from a
// terminal or a pipe (its newline dropped).
func readValue(in *bufio.Reader, key string) (string, error) {
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		fmt.Fprintf(os.Stderr, "Value of %s: ", key)
	}
	line, err := in.ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", fmt.Errorf("read the value of %s from standard input: %w", key, err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func keystoreCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "keystore", Short: "Manage an app's Android keystores (environment.android_signing)"}
	var file, password, alias, keyPassword string
	add := &cobra.Command{
		Use:   "add APP REFERENCE --file KEYSTORE --alias A [--password P --key-password P]",
		Short: "Upload a keystore under the reference workflows name in environment.android_signing (replaces one of that name)",
		Long: `Upload a keystore under the reference workflows name in environment.android_signing (replaces one of
that name). The passwords come from --password and --key-password, or, kept out of the process
list and the shell's history, from HANGAR_KEYSTORE_PASSWORD and HANGAR_KEY_PASSWORD.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, p := range []struct {
				v          *string
				flag, name string
			}{{&password, "--password", "HANGAR_KEYSTORE_PASSWORD"}, {&keyPassword, "--key-password", "HANGAR_KEY_PASSWORD"}} {
				if *p.v == "" {
					*p.v = os.Getenv(p.name)
				}
				if *p.v == "" {
					return fmt.Errorf("%s: give the password, or set %s (kept out of the process list)", p.flag, p.name)
				}
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("--file: %w", err)
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			k, err := c.PutKeystore(cmd.Context(), args[0], args[1], api.KeystoreRequest{Keystore: data, KeystorePassword: password, KeyAlias: alias, KeyPassword: keyPassword})
			if err != nil {
				return err
			}
			fmt.Printf("Added keystore %s to app %s (key alias %s); builds get it at $CM_KEYSTORE_PATH\n", k.Reference, args[0], k.KeyAlias)
			return nil
		},
	}
	add.Flags().StringVar(&file, "file", "", "the keystore file (.jks or .keystore)")
	add.Flags().StringVar(&password, "password", "", "the keystore's password (CM_KEYSTORE_PASSWORD; default: HANGAR_KEYSTORE_PASSWORD)")
	add.Flags().StringVar(&alias, "alias", "", "the key's alias (CM_KEY_ALIAS)")
	add.Flags().StringVar(&keyPassword, "key-password", "", "the key's password (CM_KEY_PASSWORD; default: HANGAR_KEY_PASSWORD)")
	for _, f := range []string{"file", "alias"} {
		_ = add.MarkFlagRequired(f)
	}
	list := &cobra.Command{
		Use:   "list APP",
		Short: "List an app's keystores",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			list, err := c.Keystores(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REFERENCE\tKEY ALIAS\tADDED")
			for _, k := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", k.Reference, k.KeyAlias, k.CreatedAt.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	del := &cobra.Command{
		Use:   "delete APP REFERENCE",
		Short: "Delete an app's keystore",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			if err := c.DeleteKeystore(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			fmt.Printf("Deleted keystore %s of app %s\n", args[1], args[0])
			return nil
		},
	}
	cmd.AddCommand(add, list, del)
	return cmd
}
