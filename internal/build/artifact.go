package build

import (
	"fmt"
	"net/url"
	"strings"
)

// ArtifactPath is the API path that downloads build id's artifact name
// (each component of name escaped).
func ArtifactPath(id int64, name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return fmt.Sprintf("/api/v1/builds/%d/artifacts/%s", id, strings.Join(parts, "/"))
}
