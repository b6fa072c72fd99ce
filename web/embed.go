// Package web holds Hangar's web UI: its sources (src/, built with
// build.sh) and the built bundle in dist/, which is committed and embedded
// here so that `go build` alone yields a binary that serves the UI.
package web

import (
	"embed"
	"io/fs"
)

//go:embed dist
var dist embed.FS

// Dist is the built UI: index.html and the hashed files under assets/.
func Dist() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // "dist" is a valid path: cannot happen
	}
	return sub
}
