// Package kube is the machine driver that runs each builder machine as a
// Kubernetes Pod (client-go), for Hangar servers and runners whose builds
// outgrow one host.
//
// A machine is a Pod in Config.Namespace running `hangar builder` in the
// build's image (the instance type's image, pulled by the cluster): an init
// container copies the hangar binary out of Config.BuilderImage into an
// emptyDir, which the builder container runs it from (images need not carry
// Hangar). Beside the Pod the driver creates a Secret holding the builder's
// hello (what the runner writes to the builder's stdin on other drivers; it
// is mounted read-only at HelloPath) and a NetworkPolicy that admits no
// ingress and lets out only the builder link and the egress policy of the
// config. The instance type's CPU, memory and disk become the container's
// requests and limits (equal, so the Pod's QoS is Guaranteed);
// Config.RuntimeClass sets the Pods' runtimeClassName for stronger sandboxes
// (gVisor, Kata) where the cluster has one.
//
// Cleanup: every object carries the labels of Config.ServerID and its
// machine, and an owner reference to the server's ConfigMap
// (hangar-server-ID), so that deleting that ConfigMap garbage-collects all
// of them. Destroy deletes a machine's objects and waits until the Pod is
// gone; a reaper deletes, at New and every ReapInterval, the objects of this
// server whose machine is not live (left by a crash or a failed delete). It
// touches nothing without this server's label.
//
// The builder dials out to the runner's link: Listen listens on
// Config.LinkListen, and Pods are told Config.LinkAddr (see LinkAddr),
// which must reach it from the cluster's Pod network.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hangar-ci/hangar/internal/machine"
)

// Labels and paths of the objects the driver creates.
const (
	// LabelManagedBy is the standard label; its value is "hangar".
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// LabelServer holds Config.ServerID: the reaper only touches objects
	// with its own.
	LabelServer = "hangar.dev/server"
	// LabelMachine holds the machine's name, e.g. "build-12".
	LabelMachine = "hangar.dev/machine"

	// BinDir is where the init container puts the hangar binary in the Pod
	// (an emptyDir), and BuilderBin the binary.
	BinDir     = "/.hangar/bin"
	BuilderBin = BinDir + "/hangar"
	// HelloDir holds the Secret volume with the builder's hello, HelloPath
	// the file (named by HANGAR_HELLO_FILE in the builder's environment).
	HelloDir  = "/.hangar/hello"
	HelloPath = HelloDir + "/hello"
	// Home is the builder's home (HANGAR_HOME), an emptyDir.
	Home = "/home/builder"
)

// Config configures the driver.
type Config struct {
	// Kubeconfig is a kubeconfig file; empty: the in-cluster config (the
	// server runs in a Pod with a service account).
	Kubeconfig string
	// Namespace holds the machines (required).
	Namespace string
	// ServerID names this server among those that share the namespace; it
	// is in the objects' names and labels: up to 40 lowercase letters,
	// digits and inner '-'. Required.
	ServerID string
	// LinkListen is the address the builder link listens on, e.g.
	// "0.0.0.0:7443" (required); LinkAddr is the host:port Pods dial to
	// reach it (a node, load-balancer or Service address; default: the
	// listener's own address). When LinkAddr's host is an IP address, the
	// NetworkPolicy opens exactly that address and port; when it is a
	// name, the machines' egress (and DNS) must reach it.
	LinkListen string
	LinkAddr   string
	// BuilderImage is an image holding a static hangar binary at
	// BuilderImagePath (default /usr/local/bin/hangar), of the server's
	// version; its init container copies it into the Pod (required).
	BuilderImage     string
	BuilderImagePath string
	// RuntimeClass, if set, is the Pods' runtimeClassName (e.g. "gvisor");
	// New checks that the cluster has it.
	RuntimeClass string
	// User is the account steps run as (HANGAR_USER); it must exist in the
	// images. Empty: the image's own user.
	User string
	// Egress lets machines reach public IPv4 addresses (every address but
	// the private, CGNAT, loopback, link-local, multicast and reserved
	// networks); EgressAllow opens more networks, EgressDeny closes some.
	// Name servers in the kube-system namespace (k8s-app=kube-dns) are
	// open whenever Egress is.
	Egress      bool
	EgressAllow []netip.Prefix
	EgressDeny  []netip.Prefix
	// ReposDir is the server's directory of repository mirrors and
	// ReposClaim a PersistentVolumeClaim holding the same files (mounted
	// read-only by every machine). Machines can only be given mounts from
	// inside ReposDir; without a claim they get none.
	ReposDir   string
	ReposClaim string
	// ImagePullPolicy of the build images (default IfNotPresent).
	ImagePullPolicy corev1.PullPolicy
	// ReapInterval is how often the reaper runs (default one minute).
	ReapInterval time.Duration
	Logger       *slog.Logger
}

// serverIDRE is what a server id may be: a DNS label short enough that
// hangar-ID-build-N is one too.
var serverIDRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$`)

// Driver runs machines as Pods. Create it with New.
type Driver struct {
	cfg    Config
	client kubernetes.Interface
	log    *slog.Logger
	owner  metav1.OwnerReference // the server's ConfigMap

	stopReaper context.CancelFunc
	reaperDone chan struct{}

	mu       sync.Mutex
	machines map[string]*Machine // guarded by mu; live machines by name
	closed   bool                // guarded by mu
}

var _ machine.Driver = (*Driver)(nil)

// New connects to the cluster, checks the config against it, creates or
// finds the server's ConfigMap (the owner of every object the driver
// creates), deletes what an earlier run of this server left, and starts
// the reaper.
func New(ctx context.Context, cfg Config) (*Driver, error) {
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("kube driver: %w", err)
	}
	rc, err := restConfig(cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kube driver: %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kube driver: %w", err)
	}
	return newDriver(ctx, cfg, client)
}

func newDriver(ctx context.Context, cfg Config, client kubernetes.Interface) (*Driver, error) {
	if cfg.BuilderImagePath == "" {
		cfg.BuilderImagePath = "/usr/local/bin/hangar"
	}
	if cfg.ImagePullPolicy == "" {
		cfg.ImagePullPolicy = corev1.PullIfNotPresent
	}
	if cfg.ReapInterval <= 0 {
		cfg.ReapInterval = time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	d := &Driver{cfg: cfg, client: client, log: log, machines: map[string]*Machine{}}
	if _, err := client.CoreV1().Namespaces().Get(ctx, cfg.Namespace, metav1.GetOptions{}); err != nil {
		return nil, fmt.Errorf("kube driver: namespace %s: %w", cfg.Namespace, err)
	}
	if cfg.RuntimeClass != "" {
		if _, err := client.NodeV1().RuntimeClasses().Get(ctx, cfg.RuntimeClass, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("kube driver: the cluster has no RuntimeClass %s (kubectl get runtimeclass lists those it has; set none to use the default runtime)", cfg.RuntimeClass)
		} else if err != nil {
			return nil, fmt.Errorf("kube driver: RuntimeClass %s: %w", cfg.RuntimeClass, err)
		}
	}
	owner, err := d.ownerConfigMap(ctx)
	if err != nil {
		return nil, fmt.Errorf("kube driver: %w", err)
	}
	d.owner = owner
	if err := d.Reap(ctx); err != nil {
		return nil, fmt.Errorf("kube driver: delete what an earlier run left: %w", err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	d.stopReaper, d.reaperDone = cancel, make(chan struct{})
	go d.reapLoop(rctx)
	return d, nil
}

func (c Config) check() error {
	switch {
	case c.Namespace == "":
		return errors.New("no namespace: set one (--namespace)")
	case !serverIDRE.MatchString(c.ServerID):
		return fmt.Errorf("server id %q: want up to 40 lowercase letters, digits and inner '-' (--kube-server-id)", c.ServerID)
	case c.LinkListen == "":
		return errors.New("no link address to listen on (--kube-link-listen)")
	case c.BuilderImage == "":
		return errors.New("no builder image: name an image holding the hangar binary (--kube-builder-image)")
	case (c.ReposClaim == "") != (c.ReposDir == ""):
		return errors.New("a repository claim needs its directory and the other way round")
	}
	if c.LinkAddr != "" {
		if host, _, err := net.SplitHostPort(c.LinkAddr); err != nil || host == "" {
			return fmt.Errorf("link address %q: want host:port (--kube-link-addr)", c.LinkAddr)
		}
	} else {
		// Pods are told the listener's address: it must be one.
		host, _, err := net.SplitHostPort(c.LinkListen)
		if err != nil {
			return fmt.Errorf("link listen address %q: want host:port (--kube-link-listen)", c.LinkListen)
		}
		if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
			return fmt.Errorf("the link listens on all addresses (%s): say at which address Pods reach it (--kube-link-addr HOST:PORT)", c.LinkListen)
		}
	}
	for _, p := range append(c.EgressAllow, c.EgressDeny...) {
		if !p.Addr().Is4() {
			return fmt.Errorf("egress network %s: only IPv4 networks are supported", p)
		}
	}
	return nil
}

// restConfig loads a kubeconfig file, or the in-cluster config.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("not in a cluster (%w): name a kubeconfig file (--kubeconfig)", err)
		}
		return rc, nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return rc, nil
}

// OwnerName is the name of the ConfigMap that owns the objects of server id.
func OwnerName(id string) string { return "hangar-server-" + id }

// ownerConfigMap finds or creates the server's ConfigMap and returns an
// owner reference to it.
func (d *Driver) ownerConfigMap(ctx context.Context) (metav1.OwnerReference, error) {
	cms := d.client.CoreV1().ConfigMaps(d.cfg.Namespace)
	name := OwnerName(d.cfg.ServerID)
	cm, err := cms.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cm, err = cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: d.labels("")},
			Data: map[string]string{
				"about": "Owner of the builder machines (Pods, Secrets, NetworkPolicies) of Hangar server " + d.cfg.ServerID +
					". Deleting it deletes all of them, running builds' included.",
			},
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) { // made meanwhile by a replica of the same id
			cm, err = cms.Get(ctx, name, metav1.GetOptions{})
		}
	}
	if err != nil {
		return metav1.OwnerReference{}, fmt.Errorf("the server's ConfigMap %s: %w", name, err)
	}
	if cm.Labels[LabelServer] != d.cfg.ServerID || cm.Labels[LabelManagedBy] != "hangar" {
		return metav1.OwnerReference{}, fmt.Errorf("ConfigMap %s exists without the labels %s=hangar and %s=%s: it was not made by this Hangar server; delete it or choose another server id",
			name, LabelManagedBy, LabelServer, d.cfg.ServerID)
	}
	return metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: cm.Name, UID: cm.UID}, nil
}

// labels are the labels of the driver's objects; machine may be empty.
func (d *Driver) labels(machineName string) map[string]string {
	l := map[string]string{LabelManagedBy: "hangar", LabelServer: d.cfg.ServerID}
	if machineName != "" {
		l[LabelMachine] = machineName
	}
	return l
}

// selector selects every object of this server.
func (d *Driver) selector() string {
	return LabelManagedBy + "=hangar," + LabelServer + "=" + d.cfg.ServerID
}

// Name implements machine.Driver.
func (d *Driver) Name() string { return "kube" }

// Isolated implements machine.Driver: machines are Pods.
func (d *Driver) Isolated() bool { return true }

// Listen implements machine.Driver: it listens on Config.LinkListen.
func (d *Driver) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", d.cfg.LinkListen)
	if err != nil {
		return nil, fmt.Errorf("kube driver: %w", err)
	}
	if d.cfg.LinkAddr == "" {
		d.mu.Lock()
		d.cfg.LinkAddr = ln.Addr().String()
		d.mu.Unlock()
	}
	return ln, nil
}

// LinkAddr is the address the builders are told to dial: Config.LinkAddr,
// or the listener's (once Listen has been called).
func (d *Driver) LinkAddr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg.LinkAddr
}

// Close implements machine.Driver: it stops the reaper. Machines must have
// been destroyed; the server's ConfigMap stays (it is the server's).
func (d *Driver) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	d.stopReaper()
	<-d.reaperDone
	return nil
}

// PodName is the name of machine name's Pod (and Secret and
// NetworkPolicy) for server id.
func PodName(id, name string) string { return "hangar-" + id + "-" + name }
