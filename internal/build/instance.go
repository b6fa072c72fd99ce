package build

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// DefaultInstanceType is the instance type of a workflow that names none.
const DefaultInstanceType = "linux"

// Resources are the limits of one build's machine. A zero field means no
// limit of that kind (the driver's default).
type Resources struct {
	// CPUs is the CPU time the machine may use, in CPUs (1.5: one and a
	// half CPUs' worth of time per wall-clock second).
	CPUs float64 `json:"cpus,omitempty"`
	// Memory is the most memory the machine's processes may use, in
	// bytes, tmpfs files (/tmp) included; there is no swap.
	Memory int64 `json:"memory,omitempty"`
	// Pids is the most processes and threads the machine may have at once.
	Pids int64 `json:"pids,omitempty"`
	// Disk is, in bytes, the size of the machine's /tmp and, apart, of
	// its writable layer (its /home and what it writes outside /tmp).
	Disk int64 `json:"disk,omitempty"`
}

// String describes r for a build log, e.g. "2 vCPU, 4 GiB memory, 2048
// processes, 8 GiB disk and /tmp each".
func (r Resources) String() string {
	var parts []string
	if r.CPUs > 0 {
		parts = append(parts, strconv.FormatFloat(r.CPUs, 'f', -1, 64)+" vCPU")
	}
	if r.Memory > 0 {
		parts = append(parts, FormatBytes(r.Memory)+" memory")
	}
	if r.Pids > 0 {
		parts = append(parts, strconv.FormatInt(r.Pids, 10)+" processes")
	}
	if r.Disk > 0 {
		parts = append(parts, FormatBytes(r.Disk)+" disk and /tmp each")
	}
	if len(parts) == 0 {
		return "no limits"
	}
	return strings.Join(parts, ", ")
}

// FormatBytes writes n in the largest binary unit that divides it, e.g.
// "4 GiB", "256 MiB", "1536 KiB".
func FormatBytes(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	if n >= 1<<30 {
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%d bytes", n)
}

// InstanceTypes maps the instance type names a server offers (a
// workflow's instance_type) to their resources.
type InstanceTypes map[string]Resources

// DefaultInstanceTypes are the instance types of a server with no
// --instance-types file: Codemagic's Linux names and sizes.
func DefaultInstanceTypes() InstanceTypes {
	return InstanceTypes{
		"linux":    {CPUs: 2, Memory: 4 << 30, Pids: 2048, Disk: 8 << 30},
		"linux_x2": {CPUs: 4, Memory: 8 << 30, Pids: 2048, Disk: 16 << 30},
	}
}

// Names returns the instance type names, sorted.
func (t InstanceTypes) Names() []string {
	names := make([]string, 0, len(t))
	for n := range t {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Lookup returns the resources of instance type name ("" is
// DefaultInstanceType), or an error, for the build's user, that lists the
// types this server has.
func (t InstanceTypes) Lookup(name string) (Resources, error) {
	if name == "" {
		name = DefaultInstanceType
	}
	if r, ok := t[name]; ok {
		return r, nil
	}
	return Resources{}, fmt.Errorf("instance_type %q is not available on this server; available instance types: %s",
		name, strings.Join(t.Names(), ", "))
}

var instanceNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// ParseInstanceTypes parses an instance types file: a YAML mapping of
// names to their resources, e.g.
//
//	linux:
//	  cpus: 2         # CPUs' worth of CPU time
//	  memory: 4GiB    # KiB, MiB, GiB, TiB or a plain number of bytes
//	  pids: 2048
//	  disk: 8GiB      # the size of /tmp, and of the writable layer
//	  image: registry.example.com/ci/android:2   # optional, see InstanceImages
//
// Every field but image is required (0 means unlimited); unknown fields
// are errors.
func ParseInstanceTypes(data []byte) (InstanceTypes, error) {
	var raw map[string]struct {
		CPUs   *float64 `yaml:"cpus"`
		Memory *string  `yaml:"memory"`
		Pids   *int64   `yaml:"pids"`
		Disk   *string  `yaml:"disk"`
		Image  string   `yaml:"image"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("instance types: %w", err)
	}
	if len(raw) == 0 {
		return nil, errors.New("instance types: no instance type defined")
	}
	t := InstanceTypes{}
	for name, r := range raw {
		if !instanceNameRE.MatchString(name) {
			return nil, fmt.Errorf("instance type %q: want letters, digits, '_', '.' and '-'", name)
		}
		if r.CPUs == nil || r.Memory == nil || r.Pids == nil || r.Disk == nil {
			return nil, fmt.Errorf("instance type %s: cpus, memory, pids and disk are all required (0: unlimited)", name)
		}
		var res Resources
		var err error
		res.CPUs, res.Pids = *r.CPUs, *r.Pids
		if res.CPUs < 0 || res.CPUs > 1024 {
			return nil, fmt.Errorf("instance type %s: cpus %v: want 0 to 1024", name, res.CPUs)
		}
		if res.Pids < 0 || res.Pids > 1<<22 || res.Pids > 0 && res.Pids < 16 {
			return nil, fmt.Errorf("instance type %s: pids %d: want 0 (unlimited) or 16 to 4194304", name, res.Pids)
		}
		if res.Memory, err = ParseBytes(*r.Memory); err != nil {
			return nil, fmt.Errorf("instance type %s: memory: %w", name, err)
		}
		if res.Memory > 0 && res.Memory < 32<<20 {
			return nil, fmt.Errorf("instance type %s: memory %s: want 0 (unlimited) or at least 32 MiB", name, *r.Memory)
		}
		if res.Disk, err = ParseBytes(*r.Disk); err != nil {
			return nil, fmt.Errorf("instance type %s: disk: %w", name, err)
		}
		if res.Disk > 0 && res.Disk < 1<<20 {
			return nil, fmt.Errorf("instance type %s: disk %s: want 0 (unlimited) or at least 1 MiB", name, *r.Disk)
		}
		t[name] = res
	}
	return t, nil
}

// ParseBytes parses a size such as "4GiB", "256 MiB", "512KiB" or "1048576".
func ParseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	num := strings.TrimRight(s, "KMGTiB ")
	unit := strings.TrimSpace(s[len(num):])
	mult := int64(1)
	switch unit {
	case "", "B":
	case "KiB":
		mult = 1 << 10
	case "MiB":
		mult = 1 << 20
	case "GiB":
		mult = 1 << 30
	case "TiB":
		mult = 1 << 40
	default:
		return 0, fmt.Errorf("%q: want a number of bytes with an optional unit KiB, MiB, GiB or TiB", s)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q: want a number of bytes with an optional unit KiB, MiB, GiB or TiB", s)
	}
	return n * mult, nil
}

// InstanceImages returns the image of each instance type of an instance
// types file (see ParseInstanceTypes) that names one: instance type ->
// image reference. Types without one boot the server's default image.
func InstanceImages(data []byte) (map[string]string, error) {
	var raw map[string]struct {
		Image string `yaml:"image"`
	}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("instance types: %w", err)
	}
	out := map[string]string{}
	for name, r := range raw {
		if img := strings.TrimSpace(r.Image); img != "" {
			out[name] = img
		}
	}
	return out, nil
}
