package build

import (
	"fmt"
	"strconv"
	"strings"
)

// aliasPrefix starts every build alias.
const aliasPrefix = "build-"

// Alias is build id's alias, "build-12": its machine's name, its SSH host
// name and the user at the gateway.
func Alias(id int64) string {
	return aliasPrefix + strconv.FormatInt(id, 10)
}

// ParseAlias returns the id of alias s ("build-12"). It refuses anything
// else, plain numbers included.
func ParseAlias(s string) (int64, error) {
	digits, ok := strings.CutPrefix(s, aliasPrefix)
	if !ok || digits == "" || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a build alias (build-N)", s)
	}
	id, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%q is not a build alias: N in build-N is a positive number", s)
	}
	return id, nil
}
