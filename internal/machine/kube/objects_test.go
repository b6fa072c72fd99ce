package kube

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/hangar-ci/hangar/internal/machine"
)

func TestEgressPeers(t *testing.T) {
	p := netip.MustParsePrefix
	peers := egressPeers([]netip.Prefix{p("10.1.0.0/16"), p("8.8.8.8/32")}, []netip.Prefix{p("10.1.2.0/24"), p("8.8.8.0/24"), p("10.9.0.0/16")})
	if len(peers) != 3 {
		t.Fatalf("peers %+v, want public + 2 allowed", peers)
	}
	public := peers[0].IPBlock
	if public.CIDR != "0.0.0.0/0" {
		t.Fatalf("first peer %+v, want the public block", public)
	}
	for _, want := range []string{"10.0.0.0/8", "169.254.0.0/16", "192.168.0.0/16", "8.8.8.0/24"} {
		if !slices.Contains(public.Except, want) {
			t.Errorf("public block lacks except %s: %v", want, public.Except)
		}
	}
	// 10.9.0.0/16 is private anyway: not listed twice.
	if slices.Contains(public.Except, "10.9.0.0/16") {
		t.Errorf("public block excepts 10.9.0.0/16, already inside 10.0.0.0/8: %v", public.Except)
	}
	// An allowed network keeps out the denied networks inside it (the
	// longest prefix wins); a denied network around an allowed one
	// does not close it.
	if b := peers[1].IPBlock; b.CIDR != "10.1.0.0/16" || !slices.Equal(b.Except, []string{"10.1.2.0/24"}) {
		t.Errorf("allowed 10.1.0.0/16: %+v", b)
	}
	if b := peers[2].IPBlock; b.CIDR != "8.8.8.8/32" || len(b.Except) != 0 {
		t.Errorf("allowed 8.8.8.8/32: %+v", b)
	}
}

func TestResources(t *testing.T) {
	r := resources(machine.Resources{CPUs: 1.5, Memory: 3 << 30, Pids: 100, Disk: 1 << 30})
	want := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("1500m"),
		corev1.ResourceMemory:           resource.MustParse("3Gi"),
		corev1.ResourceEphemeralStorage: resource.MustParse("1Gi"),
	}
	for _, l := range []corev1.ResourceList{r.Requests, r.Limits} {
		if len(l) != len(want) {
			t.Errorf("resources %v, want %v", l, want)
		}
		for k, q := range want {
			if got := l[k]; got.Cmp(q) != 0 {
				t.Errorf("%s = %s, want %s", k, got.String(), q.String())
			}
		}
	}
	if r := resources(machine.Resources{}); r.Requests != nil || r.Limits != nil {
		t.Errorf("no limits: %+v, want none", r)
	}
}

func TestRepoMounts(t *testing.T) {
	d := &Driver{cfg: Config{ReposDir: "/data/repos", ReposClaim: "repos"}}
	got, err := d.repoMounts([]machine.Mount{{Source: "/data/repos/app-1.git", Target: "/hangar/repo.git"}})
	if err != nil || len(got) != 1 || got[0].SubPath != "app-1.git" || !got[0].ReadOnly || got[0].MountPath != "/hangar/repo.git" {
		t.Errorf("mount: %+v %v", got, err)
	}
	if _, err := d.repoMounts([]machine.Mount{{Source: "/data/other", Target: "/x"}}); err == nil {
		t.Error("a mount outside the claim's directory was accepted")
	}
	if _, err := (&Driver{}).repoMounts([]machine.Mount{{Source: "/data/repos/a.git", Target: "/x"}}); err == nil {
		t.Error("a mount without a claim was accepted")
	}
}

func TestConfigCheck(t *testing.T) {
	ok := Config{Namespace: "ci", ServerID: "hangar-1", LinkListen: "0.0.0.0:7443", LinkAddr: "10.0.0.5:7443", BuilderImage: "r/hangar:1"}
	if err := ok.check(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no namespace", func(c *Config) { c.Namespace = "" }, "--namespace"},
		{"uppercase id", func(c *Config) { c.ServerID = "Hangar" }, "--kube-server-id"},
		{"long id", func(c *Config) { c.ServerID = strings.Repeat("a", 41) }, "--kube-server-id"},
		{"no builder image", func(c *Config) { c.BuilderImage = "" }, "--kube-builder-image"},
		{"all addresses, no link address", func(c *Config) { c.LinkAddr = "" }, "--kube-link-addr"},
		{"no port", func(c *Config) { c.LinkAddr = "10.0.0.5" }, "--kube-link-addr"},
		{"IPv6 egress", func(c *Config) { c.Egress, c.EgressAllow = true, []netip.Prefix{netip.MustParsePrefix("fd00::/8")} }, "IPv4"},
		{"claim without dir", func(c *Config) { c.ReposClaim = "repos" }, "claim"},
	} {
		cfg := ok
		c.edit(&cfg)
		if err := cfg.check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %s", c.name, err, c.want)
		}
	}
	loopback := ok
	loopback.LinkAddr, loopback.LinkListen = "", "127.0.0.1:0"
	if err := loopback.check(); err != nil {
		t.Errorf("a loopback listener without link address: %v", err)
	}
}
