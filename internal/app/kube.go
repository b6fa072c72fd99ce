package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/hangar-ci/hangar/internal/image"
	"github.com/hangar-ci/hangar/internal/machine"
	"github.com/hangar-ci/hangar/internal/machine/kube"
)

// KubeConfig is the configuration of the kube driver (hangar server or
// hangar runner --driver kube); the egress policy is the sandbox driver's.
type KubeConfig struct {
	Kubeconfig   string
	Namespace    string
	ServerID     string
	LinkListen   string
	LinkAddr     string
	BuilderImage string
	BuilderPath  string
	RuntimeClass string
	User         string
	ReposClaim   string
}

// newKubeDriver creates the kube driver: machines are Pods. It deletes what
// an earlier run of this server or runner (the same id) left in the
// cluster.
func newKubeDriver(cfg Config, data string, log *slog.Logger) (*kube.Driver, error) {
	k := cfg.Kube
	id := k.ServerID
	if id == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("--kube-server-id: none given, and no host name: %w", err)
		}
		// Host names are case-insensitive; object names are lowercase.
		id = strings.ToLower(host)
	}
	kc := kube.Config{
		Kubeconfig:       k.Kubeconfig,
		Namespace:        k.Namespace,
		ServerID:         id,
		LinkListen:       k.LinkListen,
		LinkAddr:         k.LinkAddr,
		BuilderImage:     k.BuilderImage,
		BuilderImagePath: k.BuilderPath,
		RuntimeClass:     k.RuntimeClass,
		User:             k.User,
		Egress:           cfg.SandboxEgress,
		EgressAllow:      cfg.SandboxEgressAllow,
		EgressDeny:       cfg.SandboxEgressDeny,
		Logger:           log,
	}
	if k.ReposClaim != "" {
		kc.ReposClaim, kc.ReposDir = k.ReposClaim, filepath.Join(data, "repos")
	}
	d, err := kube.New(context.Background(), kc)
	if err != nil {
		return nil, err
	}
	log.Info("kube driver: builds run as Pods", "namespace", k.Namespace, "server_id", id, "runtime_class", k.RuntimeClass)
	return d, nil
}

// kubeImages maps instance types to registry images, which the cluster
// pulls: the runner's Images for the kube driver. Their labels (toolchain
// versions) are not known to the server or runner.
type kubeImages map[string]string

func newKubeImages(cfg Config, types []string) (kubeImages, error) {
	def := cfg.DefaultImage
	if def == "" || def == image.DefaultName {
		return nil, fmt.Errorf("the kube driver runs registry images only: name the default image with --default-image (and other instance types' in --instance-types); %s is built on one host", image.DefaultName)
	}
	ki := kubeImages{}
	for _, t := range types {
		ref := cfg.InstanceImages[t]
		if ref == "" {
			ref = def
		}
		if ref == image.DefaultName {
			return nil, fmt.Errorf("instance type %s: the kube driver runs registry images only, not %s", t, image.DefaultName)
		}
		ki[t] = ref
	}
	for t := range cfg.InstanceImages {
		if _, ok := ki[t]; !ok {
			return nil, fmt.Errorf("instance types: image for %s, which is not an instance type", t)
		}
	}
	return ki, nil
}

// ForInstanceType implements runner.Images.
func (ki kubeImages) ForInstanceType(name string) (*machine.Image, map[string]string, error) {
	ref, ok := ki[name]
	if !ok {
		return nil, nil, fmt.Errorf("instance type %s has no image on this server", name)
	}
	return &machine.Image{Name: ref}, nil, nil
}

// builderLinkAddr is the address builders dial to reach the link listener
// ln: the kube driver's Pods are told another one (--kube-link-addr).
func builderLinkAddr(d machine.Driver, ln net.Listener) string {
	if k, ok := d.(interface{ LinkAddr() string }); ok {
		return k.LinkAddr()
	}
	return ln.Addr().String()
}
