package kube

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/hangar-ci/hangar/internal/machine"
)

// The objects of one machine: its Pod, the Secret with its hello and its
// NetworkPolicy, all named PodName(server, machine).

// terminationGrace is how long the builder has between SIGTERM and SIGKILL
// when its Pod is deleted (it ends at once on SIGTERM).
const terminationGrace = 5

// blockedNets are the IPv4 networks machines never reach unless
// EgressAllow opens them (the sandbox driver's list).
var blockedNets = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("10.0.0.0/8"),     // RFC 1918
	netip.MustParsePrefix("100.64.0.0/10"),  // CGNAT (RFC 6598)
	netip.MustParsePrefix("127.0.0.0/8"),    // loopback
	netip.MustParsePrefix("169.254.0.0/16"), // link-local: cloud metadata services
	netip.MustParsePrefix("172.16.0.0/12"),  // RFC 1918
	netip.MustParsePrefix("192.168.0.0/16"), // RFC 1918
	netip.MustParsePrefix("224.0.0.0/4"),    // multicast
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, broadcast
}

// meta is the metadata of one of machine name's objects.
func (d *Driver) meta(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:            PodName(d.cfg.ServerID, name),
		Namespace:       d.cfg.Namespace,
		Labels:          d.labels(name),
		OwnerReferences: []metav1.OwnerReference{d.owner},
	}
}

// helloSecret holds the builder's hello.
func (d *Driver) helloSecret(name string, hello []byte) *corev1.Secret {
	immutable := true
	return &corev1.Secret{
		ObjectMeta: d.meta(name),
		Immutable:  &immutable,
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{filepath.Base(HelloPath): hello},
	}
}

// resources turns a machine's limits into a container's requests and
// limits (equal). Pids have no Pod-level setting (a node's kubelet has
// podPidsLimit): they are not set.
func resources(r machine.Resources) corev1.ResourceRequirements {
	list := corev1.ResourceList{}
	if r.CPUs > 0 {
		list[corev1.ResourceCPU] = *resource.NewMilliQuantity(int64(r.CPUs*1000+0.5), resource.DecimalSI)
	}
	if r.Memory > 0 {
		list[corev1.ResourceMemory] = *resource.NewQuantity(r.Memory, resource.BinarySI)
	}
	if r.Disk > 0 {
		list[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(r.Disk, resource.BinarySI)
	}
	if len(list) == 0 {
		return corev1.ResourceRequirements{}
	}
	return corev1.ResourceRequirements{Requests: list, Limits: list.DeepCopy()}
}

// repoMounts maps the spec's mounts onto the repository claim.
func (d *Driver) repoMounts(mounts []machine.Mount) ([]corev1.VolumeMount, error) {
	var out []corev1.VolumeMount
	for _, m := range mounts {
		if d.cfg.ReposClaim == "" {
			return nil, fmt.Errorf("mount %s: the kube driver has no repository claim to take it from (--kube-repos-claim)", m.Source)
		}
		rel, err := filepath.Rel(d.cfg.ReposDir, m.Source)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
			return nil, fmt.Errorf("mount %s: outside %s, the directory of the repository claim", m.Source, d.cfg.ReposDir)
		}
		if !filepath.IsAbs(m.Target) {
			return nil, fmt.Errorf("mount target %q: must be an absolute path", m.Target)
		}
		if rel == "." {
			rel = ""
		}
		out = append(out, corev1.VolumeMount{Name: "repos", MountPath: m.Target, SubPath: rel, ReadOnly: true})
	}
	return out, nil
}

// pod is machine spec.Name's Pod.
func (d *Driver) pod(spec machine.Spec, repoMounts []corev1.VolumeMount) *corev1.Pod {
	no := false
	grace := int64(terminationGrace)
	res := resources(spec.Resources)
	env := []corev1.EnvVar{}
	for _, kv := range spec.Env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "HANGAR_HOME", "HANGAR_USER", "HANGAR_HELLO_FILE":
			continue // the driver's own
		}
		env = append(env, corev1.EnvVar{Name: k, Value: v})
	}
	env = append(env,
		corev1.EnvVar{Name: "HANGAR_HOME", Value: Home},
		corev1.EnvVar{Name: "HANGAR_USER", Value: d.cfg.User},
		corev1.EnvVar{Name: "HANGAR_HELLO_FILE", Value: HelloPath})
	volumes := []corev1.Volume{
		{Name: "hangar-bin", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "hello", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: PodName(d.cfg.ServerID, spec.Name), DefaultMode: ptr(int32(0o400))}}},
		{Name: "home", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	if len(repoMounts) > 0 {
		volumes = append(volumes, corev1.Volume{Name: "repos", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: d.cfg.ReposClaim, ReadOnly: true}}})
	}
	mounts := append([]corev1.VolumeMount{
		{Name: "hangar-bin", MountPath: BinDir, ReadOnly: true},
		{Name: "hello", MountPath: HelloDir, ReadOnly: true},
		{Name: "home", MountPath: Home},
	}, repoMounts...)
	p := &corev1.Pod{
		ObjectMeta: d.meta(spec.Name),
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			Hostname:                      spec.Name,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			TerminationGracePeriodSeconds: &grace,
			SecurityContext: &corev1.PodSecurityContext{
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Volumes: volumes,
			InitContainers: []corev1.Container{{
				Name:            "install-builder",
				Image:           d.cfg.BuilderImage,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Command:         []string{d.cfg.BuilderImagePath, "install-builder", BuilderBin},
				VolumeMounts:    []corev1.VolumeMount{{Name: "hangar-bin", MountPath: BinDir}},
				// The same as the builder's: a Pod is Guaranteed only
				// if every container is.
				Resources: res,
			}},
			Containers: []corev1.Container{{
				Name:            "builder",
				Image:           spec.Image.Name,
				ImagePullPolicy: d.cfg.ImagePullPolicy,
				Command:         append([]string{BuilderBin}, spec.Args...),
				Env:             env,
				WorkingDir:      "/",
				VolumeMounts:    mounts,
				Resources:       res,
			}},
		},
	}
	if d.cfg.RuntimeClass != "" {
		p.Spec.RuntimeClassName = &d.cfg.RuntimeClass
	}
	return p
}

// networkPolicy admits no ingress to machine name's Pod and lets out the
// builder link and what the egress policy allows.
func (d *Driver) networkPolicy(name string) *networkingv1.NetworkPolicy {
	var rules []networkingv1.NetworkPolicyEgressRule
	if host, port, err := net.SplitHostPort(d.LinkAddr()); err == nil {
		if ip, err := netip.ParseAddr(host); err == nil {
			n, _ := strconv.Atoi(port)
			rules = append(rules, networkingv1.NetworkPolicyEgressRule{
				To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: netip.PrefixFrom(ip, ip.BitLen()).String()}}},
				Ports: []networkingv1.NetworkPolicyPort{tcpPort(n)},
			})
		}
	}
	if d.cfg.Egress {
		udp := corev1.ProtocolUDP
		rules = append(rules, networkingv1.NetworkPolicyEgressRule{
			To: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "kube-system"}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
			}},
			Ports: []networkingv1.NetworkPolicyPort{tcpPort(53), {Protocol: &udp, Port: ptr(intstr.FromInt32(53))}},
		})
		rules = append(rules, networkingv1.NetworkPolicyEgressRule{To: egressPeers(d.cfg.EgressAllow, d.cfg.EgressDeny)})
	}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: d.meta(name),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: d.labels(name)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Egress:      rules,
		},
	}
}

func tcpPort(n int) networkingv1.NetworkPolicyPort {
	tcp := corev1.ProtocolTCP
	return networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: ptr(intstr.FromInt(n))}
}

// egressPeers are the IP blocks of the egress policy: every public IPv4
// address but the denied networks, and each allowed network but the denied
// networks inside it (so the longest prefix wins, as in the sandbox
// driver).
func egressPeers(allow, deny []netip.Prefix) []networkingv1.NetworkPolicyPeer {
	public := &networkingv1.IPBlock{CIDR: "0.0.0.0/0"}
	for _, p := range blockedNets {
		public.Except = append(public.Except, p.String())
	}
	for _, p := range deny {
		if p.Bits() > 0 && !covered(p, blockedNets) {
			public.Except = append(public.Except, p.Masked().String())
		}
	}
	peers := []networkingv1.NetworkPolicyPeer{{IPBlock: public}}
	for _, a := range allow {
		b := &networkingv1.IPBlock{CIDR: a.Masked().String()}
		for _, p := range deny {
			if p.Bits() > a.Bits() && a.Contains(p.Addr()) {
				b.Except = append(b.Except, p.Masked().String())
			}
		}
		peers = append(peers, networkingv1.NetworkPolicyPeer{IPBlock: b})
	}
	return peers
}

// covered reports whether p lies inside one of nets.
func covered(p netip.Prefix, nets []netip.Prefix) bool {
	for _, n := range nets {
		if n.Bits() <= p.Bits() && n.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

func ptr[T any](v T) *T { return &v }
