// Package secrets keeps the secrets builds use, encrypted at rest:
// environment variable groups (an app's own, and global ones every app may
// use) and Android keystores. A Vault seals values with the server's
// secrets key (AES-256-GCM, each value bound to its place: app, group and
// key) before the store sees them, checks that what a workflow names
// exists when a build is created, and opens them for the runner when the
// build starts. The key lives in the data directory (secrets.key) or where
// --secrets-key says (LoadSealer); every server of one database needs the
// same key.
package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/hangar-ci/hangar/internal/sshca"
	"github.com/hangar-ci/hangar/internal/store"
	"github.com/hangar-ci/hangar/internal/workflow"
)

// Limits of what is kept.
const (
	MaxValueBytes    = 256 << 10 // one variable's value
	MaxKeystoreBytes = 256 << 10 // one keystore file (real ones have a few KiB)
	maxNameLen       = 100
)

// Store is what a Vault needs of the store.
type Store interface {
	SetGroupVars(ctx context.Context, app, group string, vars []store.SealedVar) error
	GroupValues(ctx context.Context, app, name string) (*store.Group, error)
	PutKeystore(ctx context.Context, k *store.Keystore) error
	Keystore(ctx context.Context, app, ref string) (*store.Keystore, error)
	Groups(ctx context.Context, app string) ([]store.Group, error)
	DeleteGroup(ctx context.Context, app, group string) error
	DeleteGroupVar(ctx context.Context, app, group, key string) error
	Keystores(ctx context.Context, app string) ([]store.Keystore, error)
	DeleteKeystore(ctx context.Context, app, ref string) error
}

// Vault seals and opens groups and keystores.
type Vault struct {
	Store  Store
	Sealer *sshca.Sealer
}

// Var is one variable of a group.
type Var struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Keystore is an Android keystore with what opens it.
type Keystore struct {
	File        []byte `json:"keystore"` // the .jks or .keystore file
	Password    string `json:"keystore_password"`
	Alias       string `json:"key_alias"`
	KeyPassword string `json:"key_password"`
}

// Resolved is what a build gets from the vault.
type Resolved struct {
	// Env are the groups' variables, KEY=VALUE, groups in the order the
	// workflow lists them (a later group's key wins, as later assignments
	// do), keys by name within a group.
	Env []string
	// Secure are the values to hide in the build's log: every group value
	// and every keystore password.
	Secure []string
	// Keystores are those of android_signing, in its order.
	Keystores []NamedKeystore
}

// NamedKeystore is a keystore with its reference.
type NamedKeystore struct {
	Ref string
	Keystore
}

// MissingError is a group or keystore that a workflow names and the app
// does not have.
type MissingError struct {
	Kind string // "group" or "keystore"
	App  string
	Name string
}

func (e *MissingError) Error() string {
	if e.Kind == "keystore" {
		return fmt.Sprintf("environment.android_signing names keystore %q, which app %s does not have: add it with `hangar app keystore add %s %s --file KEYSTORE ...`",
			e.Name, e.App, e.App, e.Name)
	}
	return fmt.Sprintf("environment.groups names group %q, which app %s does not have (nor is there a global group of that name): create it with `hangar group set %s %s KEY=VALUE`",
		e.Name, e.App, e.App, e.Name)
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

// CheckName says what is wrong with a group name or keystore reference
// (what names it, e.g. "group"), or nil.
func CheckName(what, name string) error {
	if len(name) > maxNameLen || !nameRE.MatchString(name) {
		return fmt.Errorf("%s name %q is not valid: use letters, digits, '_', '.' and '-' (at most %d characters, not starting with '.' or '-')", what, name, maxNameLen)
	}
	return nil
}

// CheckVar says what is wrong with a variable to set, without its value.
func CheckVar(v Var) error {
	if !workflow.ValidVarName(v.Name) {
		return fmt.Errorf("variable name %q is not valid: use letters, digits and '_', not starting with a digit", v.Name)
	}
	if len(v.Value) > MaxValueBytes {
		return fmt.Errorf("the value of %s has %d bytes, more than the %d a variable may have", v.Name, len(v.Value), MaxValueBytes)
	}
	if strings.IndexByte(v.Value, 0) >= 0 {
		return fmt.Errorf("the value of %s has a NUL byte, which an environment variable cannot hold (base64-encode binary files)", v.Name)
	}
	return nil
}

func groupLabel(app, group, key string) string {
	scope := "global"
	if app != "" {
		scope = "app:" + app
	}
	return "env-group\x00" + scope + "\x00" + group + "\x00" + key
}

func keystoreLabel(app, ref string) string { return "keystore\x00app:" + app + "\x00" + ref }

// SetGroup sets variables of app's group (app "": a global group),
// creating it if needed. Errors never hold a value.
func (v *Vault) SetGroup(ctx context.Context, app, group string, vars []Var) error {
	if err := CheckName("group", group); err != nil {
		return err
	}
	if len(vars) == 0 {
		return errors.New("no variables to set: give KEY=VALUE")
	}
	sealed := make([]store.SealedVar, len(vars))
	for i, x := range vars {
		if err := CheckVar(x); err != nil {
			return err
		}
		sealed[i] = store.SealedVar{Name: x.Name, Sealed: v.Sealer.Seal([]byte(x.Value), groupLabel(app, group, x.Name))}
	}
	return v.Store.SetGroupVars(ctx, app, group, sealed)
}

// PutKeystore adds app's keystore ref, replacing one of the same name.
func (v *Vault) PutKeystore(ctx context.Context, app, ref string, ks *Keystore) error {
	if err := CheckName("keystore reference", ref); err != nil {
		return err
	}
	switch {
	case len(ks.File) == 0:
		return errors.New("the keystore file is empty")
	case len(ks.File) > MaxKeystoreBytes:
		return fmt.Errorf("the keystore file has %d bytes, more than %d", len(ks.File), MaxKeystoreBytes)
	case ks.Password == "" || ks.Alias == "" || ks.KeyPassword == "":
		return errors.New("a keystore needs its password, key alias and key password (--password, --alias, --key-password)")
	case strings.ContainsAny(ks.Password+ks.Alias+ks.KeyPassword, "\x00\n"):
		return errors.New("the keystore password, key alias and key password must be one line each")
	}
	data, err := json.Marshal(ks)
	if err != nil {
		return err
	}
	return v.Store.PutKeystore(ctx, &store.Keystore{App: app, Ref: ref, Alias: ks.Alias, Sealed: v.Sealer.Seal(data, keystoreLabel(app, ref))})
}

// Check says whether app has every group and keystore named (a
// *MissingError for the first it lacks), without opening any.
func (v *Vault) Check(ctx context.Context, app string, groups, keystores []string) error {
	for _, g := range groups {
		if _, err := v.Store.GroupValues(ctx, app, g); err != nil {
			return missing(err, "group", app, g)
		}
	}
	for _, ref := range keystores {
		if _, err := v.Store.Keystore(ctx, app, ref); err != nil {
			return missing(err, "keystore", app, ref)
		}
	}
	return nil
}

func missing(err error, kind, app, name string) error {
	if errors.Is(err, store.ErrNotFound) {
		return &MissingError{Kind: kind, App: app, Name: name}
	}
	return err
}

// errKey is a sealed value that does not open.
func errKey(what string) error {
	return fmt.Errorf("%s does not open with this server's secrets key: it was set on a server with another key (give every server the same --secrets-key), or set it again", what)
}

// Resolve opens the groups and keystores a build of app names.
func (v *Vault) Resolve(ctx context.Context, app string, groups, keystores []string) (*Resolved, error) {
	r := &Resolved{}
	for _, name := range groups {
		g, err := v.Store.GroupValues(ctx, app, name)
		if err != nil {
			return nil, missing(err, "group", app, name)
		}
		for _, x := range g.Vars {
			value, err := v.Sealer.Open(x.Sealed, groupLabel(g.App, g.Name, x.Name))
			if err != nil {
				return nil, errKey(fmt.Sprintf("variable %s of group %s", x.Name, name))
			}
			r.Env = append(r.Env, x.Name+"="+string(value))
			if !slices.Contains(r.Secure, string(value)) {
				r.Secure = append(r.Secure, string(value))
			}
		}
	}
	for _, ref := range keystores {
		k, err := v.Store.Keystore(ctx, app, ref)
		if err != nil {
			return nil, missing(err, "keystore", app, ref)
		}
		data, err := v.Sealer.Open(k.Sealed, keystoreLabel(app, ref))
		if err != nil {
			return nil, errKey("keystore " + ref)
		}
		nk := NamedKeystore{Ref: ref}
		if err := json.Unmarshal(data, &nk.Keystore); err != nil {
			return nil, fmt.Errorf("keystore %s: its stored form is unreadable", ref)
		}
		r.Keystores = append(r.Keystores, nk)
		r.Secure = append(r.Secure, nk.Password, nk.KeyPassword)
	}
	return r, nil
}

// Groups lists app's groups ("": the global ones): names and keys only.
func (v *Vault) Groups(ctx context.Context, app string) ([]store.Group, error) {
	return v.Store.Groups(ctx, app)
}

// DeleteGroup deletes app's group ("": a global one).
func (v *Vault) DeleteGroup(ctx context.Context, app, group string) error {
	return v.Store.DeleteGroup(ctx, app, group)
}

// DeleteGroupVar deletes one variable of app's group.
func (v *Vault) DeleteGroupVar(ctx context.Context, app, group, key string) error {
	return v.Store.DeleteGroupVar(ctx, app, group, key)
}

// Keystores lists app's keystores, without their contents.
func (v *Vault) Keystores(ctx context.Context, app string) ([]store.Keystore, error) {
	return v.Store.Keystores(ctx, app)
}

// DeleteKeystore deletes app's keystore ref.
func (v *Vault) DeleteKeystore(ctx context.Context, app, ref string) error {
	return v.Store.DeleteKeystore(ctx, app, ref)
}
