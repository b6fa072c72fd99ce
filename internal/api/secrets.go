package api

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// GroupRequest is the body of PUT /api/v1/apps/{app}/groups/{group} and
// PUT /api/v1/groups/{group}: variables to set in the group (made if
// needed); the group's other variables stay.
type GroupRequest struct {
	Variables []GroupVar `json:"variables"`
}

// GroupVar is one variable to set. Values are write-only: no answer ever
// holds one.
type GroupVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Group is an environment variable group as the API shows it: its name
// and keys, never its values.
type Group struct {
	Name string `json:"name"`
	// Global: a group every app may use (an app's own group of the same
	// name takes its place in that app's builds).
	Global    bool      `json:"global"`
	Keys      []string  `json:"keys"`
	UpdatedAt time.Time `json:"updated_at"`
}

// KeystoreRequest is the body of PUT /api/v1/apps/{app}/keystores/{ref}.
type KeystoreRequest struct {
	Keystore         []byte `json:"keystore"` // the file, base64 in JSON
	KeystorePassword string `json:"keystore_password"`
	KeyAlias         string `json:"key_alias"`
	KeyPassword      string `json:"key_password"`
}

// Keystore is an app's keystore as the API shows it, without the file or
// passwords.
type Keystore struct {
	Reference string    `json:"reference"`
	KeyAlias  string    `json:"key_alias"`
	CreatedAt time.Time `json:"created_at"`
}

// groupsPath is the path of app's groups ("": the global ones).
func groupsPath(app string) string {
	if app == "" {
		return "/api/v1/groups"
	}
	return "/api/v1/apps/" + url.PathEscape(app) + "/groups"
}

// Groups lists app's groups ("": the global ones), keys without values.
func (c *Client) Groups(ctx context.Context, app string) ([]Group, error) {
	var out []Group
	if err := c.do(ctx, http.MethodGet, groupsPath(app), nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// SetGroup sets variables of app's group ("": a global group; admin).
func (c *Client) SetGroup(ctx context.Context, app, group string, vars []GroupVar) (*Group, error) {
	var out Group
	if err := c.do(ctx, http.MethodPut, groupsPath(app)+"/"+url.PathEscape(group), GroupRequest{Variables: vars}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteGroup deletes app's group ("": a global group; admin).
func (c *Client) DeleteGroup(ctx context.Context, app, group string) error {
	return c.do(ctx, http.MethodDelete, groupsPath(app)+"/"+url.PathEscape(group), nil, nil)
}

// DeleteGroupVar deletes one variable of app's group.
func (c *Client) DeleteGroupVar(ctx context.Context, app, group, key string) error {
	return c.do(ctx, http.MethodDelete, groupsPath(app)+"/"+url.PathEscape(group)+"/variables/"+url.PathEscape(key), nil, nil)
}

func keystoresPath(app string) string { return "/api/v1/apps/" + url.PathEscape(app) + "/keystores" }

// Keystores lists app's keystores.
func (c *Client) Keystores(ctx context.Context, app string) ([]Keystore, error) {
	var out []Keystore
	if err := c.do(ctx, http.MethodGet, keystoresPath(app), nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// PutKeystore adds app's keystore ref, replacing one of that reference.
func (c *Client) PutKeystore(ctx context.Context, app, ref string, req KeystoreRequest) (*Keystore, error) {
	var out Keystore
	if err := c.do(ctx, http.MethodPut, keystoresPath(app)+"/"+url.PathEscape(ref), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteKeystore deletes app's keystore ref.
func (c *Client) DeleteKeystore(ctx context.Context, app, ref string) error {
	return c.do(ctx, http.MethodDelete, keystoresPath(app)+"/"+url.PathEscape(ref), nil, nil)
}
