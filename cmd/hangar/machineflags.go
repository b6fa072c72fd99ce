package main

import (
	"errors"

	"github.com/spf13/pflag"

	hangarapp "github.com/hangar-ci/hangar/internal/app"
)

// The machine flags that hangar server and hangar runner share: both run
// builds on machines of the same drivers.

// driverUsage is the help of --driver.
const driverUsage = "machine driver: sandbox (isolated, needs root and runc), host (no isolation), kube (Kubernetes Pods, see docs/kubernetes.md), or auto"

// kubeFlags defines the kube driver's flags into k.
func kubeFlags(f *pflag.FlagSet, k *hangarapp.KubeConfig) {
	f.StringVar(&k.Kubeconfig, "kubeconfig", "", "kube driver: kubeconfig file of the cluster (default: the in-cluster config)")
	f.StringVar(&k.Namespace, "namespace", "", "kube driver: namespace of the builder Pods")
	f.StringVar(&k.ServerID, "kube-server-id", "", "kube driver: this server's (or runner's) name among those sharing the namespace, in its objects' names and labels; each server and runner needs its own (default: a server's host name, lowercased; a runner's runner-NAME, from its runner name; keep it stable across restarts)")
	f.StringVar(&k.LinkListen, "kube-link-listen", "0.0.0.0:7443", "kube driver: address the builder link listens on")
	f.StringVar(&k.LinkAddr, "kube-link-addr", "", "kube driver: host:port at which builder Pods reach the link (required when --kube-link-listen is on all addresses)")
	f.StringVar(&k.BuilderImage, "kube-builder-image", "", "kube driver: image holding this version's hangar binary (copied into each Pod by an init container)")
	f.StringVar(&k.BuilderPath, "kube-builder-path", "/usr/local/bin/hangar", "kube driver: path of the hangar binary in --kube-builder-image")
	f.StringVar(&k.RuntimeClass, "kube-runtime-class", "", "kube driver: runtimeClassName of builder Pods, e.g. gvisor or kata (default: the cluster's default runtime)")
	f.StringVar(&k.User, "kube-user", "", "kube driver: account steps run as, which the images must have (default: the image's user)")
	f.StringVar(&k.ReposClaim, "kube-repos-claim", "", "kube driver: PersistentVolumeClaim holding <data>/repos (the repository mirrors), mounted read-only by builder Pods")
}

// egressFlags are the machines' egress policy (sandbox and kube drivers).
type egressFlags struct {
	on               onOff
	allow, deny, dns []string
}

// addEgressFlags defines the egress flags; apply sets them in a config.
func addEgressFlags(f *pflag.FlagSet) *egressFlags {
	e := &egressFlags{on: true}
	f.Var(&e.on, "sandbox-egress", "on: machines reach public IPv4 addresses (NAT; never the host, other machines, private, CGNAT or link-local networks); off: nothing outside")
	f.Lookup("sandbox-egress").NoOptDefVal = "on"
	f.StringSliceVar(&e.allow, "sandbox-egress-allow", nil, "IPv4 networks (CIDR, comma-separated) machines may reach although private, e.g. an artifact proxy at 10.1.2.3/32")
	f.StringSliceVar(&e.deny, "sandbox-egress-deny", nil, "IPv4 networks (CIDR, comma-separated) machines may not reach")
	f.StringSliceVar(&e.dns, "sandbox-dns", nil, "name servers of sandbox machines, comma-separated IPv4 addresses (default: the host's non-loopback ones; their port 53 is opened)")
	return e
}

// apply validates the egress flags and sets them in cfg.
func (e *egressFlags) apply(cfg *hangarapp.Config) error {
	cfg.SandboxEgress = bool(e.on)
	var err error
	if cfg.SandboxEgressAllow, err = parseNetworks("--sandbox-egress-allow", e.allow); err != nil {
		return err
	}
	if cfg.SandboxEgressDeny, err = parseNetworks("--sandbox-egress-deny", e.deny); err != nil {
		return err
	}
	if cfg.SandboxDNS, err = parseAddrs("--sandbox-dns", e.dns); err != nil {
		return err
	}
	if !cfg.SandboxEgress && (len(e.allow) > 0 || len(e.deny) > 0 || len(e.dns) > 0) {
		return errors.New("--sandbox-egress-allow, --sandbox-egress-deny and --sandbox-dns need --sandbox-egress=on")
	}
	return nil
}
