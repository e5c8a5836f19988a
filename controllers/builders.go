/*
Copyright 2026 The ssmtunnel Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package controllers

// This file holds the pure builders of the children of a PortForward: no client, no I/O. Each returns the
// apply configuration the reconciler sends with server-side apply; builders_test.go compares them with
// cmp.Diff.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	networkingv1ac "k8s.io/client-go/applyconfigurations/networking/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
)

// Label keys and values on every child (the contract in the design's "Names").
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelComponent = "app.kubernetes.io/component"
	LabelManagedBy = "app.kubernetes.io/managed-by"

	// LabelNameValue is app.kubernetes.io/name of every child.
	LabelNameValue = "ssmtunnel"
	// LabelComponentValue is app.kubernetes.io/component of every child.
	LabelComponentValue = "tunnel"
	// ManagedByValue is app.kubernetes.io/managed-by of every child; the cache watches only objects with it.
	ManagedByValue = "ssmtunnel-operator"

	// FieldOwner is the server-side apply field manager of everything the operator writes.
	FieldOwner = "ssmtunnel-operator"

	// AnnotationPodSpecHash on the pod template records a hash of the tunnel pod spec, so a reader sees at a
	// glance which configuration a pod runs and any spec change visibly rolls the pods.
	AnnotationPodSpecHash = "ssmtunnel.io/pod-spec-hash"
)

// Fixed ports and names inside the tunnel pod.
const (
	tunnelContainerName = "tunnel"
	// firstTunnelPort is the container port of spec.ports[0]; spec.ports[i] listens on firstTunnelPort+i,
	// unprivileged so the pod runs as non-root under the restricted Pod Security Standard.
	firstTunnelPort = 10000
	metricsPort     = 8080
	metricsPortName = "metrics"
	healthPort      = 8081
	healthPortName  = "health"
	tunnelBinary    = "/ssmtunnel"
	nonRootUID      = 65532
)

// defaultReplicas and defaultSessions mirror the API defaults, for objects created before defaulting
// (tests, or a client that bypasses the API server).
const (
	defaultReplicas = 2
	defaultSessions = 1
)

// replicas returns spec.replicas with its API default applied.
func replicas(pf *v1alpha1.PortForward) int32 {
	if pf.Spec.Replicas == nil {
		return defaultReplicas
	}
	return *pf.Spec.Replicas
}

func sessionsPerReplica(pf *v1alpha1.PortForward) int32 {
	if pf.Spec.SessionsPerReplica == nil {
		return defaultSessions
	}
	return *pf.Spec.SessionsPerReplica
}

// selectorLabels select the tunnel pods of one PortForward. They never change, because a Deployment's
// selector is immutable.
func selectorLabels(pf *v1alpha1.PortForward) map[string]string {
	return map[string]string{
		LabelName:      LabelNameValue,
		LabelInstance:  pf.Name,
		LabelComponent: LabelComponentValue,
	}
}

// childLabels are the labels of every child of pf: extra (user labels) first, the operator's keys win.
func childLabels(pf *v1alpha1.PortForward, extra map[string]string) map[string]string {
	l := make(map[string]string, len(extra)+4)
	maps.Copy(l, extra)
	maps.Copy(l, selectorLabels(pf))
	l[LabelManagedBy] = ManagedByValue
	return l
}

// ownerReference makes pf the controller of a child, so the child is garbage-collected with it and its
// changes are routed back to pf by Owns().
func ownerReference(pf *v1alpha1.PortForward) *metav1ac.OwnerReferenceApplyConfiguration {
	return metav1ac.OwnerReference().
		WithAPIVersion(v1alpha1.GroupVersion.String()).
		WithKind("PortForward").
		WithName(pf.Name).
		WithUID(pf.UID).
		WithController(true).
		WithBlockOwnerDeletion(true)
}

// containerPort is the port the tunnel pod listens on for spec.ports[i].
func containerPort(i int) int32 { return int32(firstTunnelPort + i) }

// region returns the AWS region of pf: its own, else the operator default (which may be empty).
func region(pf *v1alpha1.PortForward, opts Options) string {
	if pf.Spec.Region != "" {
		return pf.Spec.Region
	}
	return opts.DefaultRegion
}

// serviceAccountName returns the tunnel pods' ServiceAccount.
func serviceAccountName(pf *v1alpha1.PortForward, opts Options) string {
	if pf.Spec.ServiceAccountName != "" {
		return pf.Spec.ServiceAccountName
	}
	return opts.DefaultServiceAccountName
}

// tunnelArgs is the command line of the tunnel, the contract between operator and tunnel pod:
// forward TARGET LOCAL:REMOTE... --address 0.0.0.0 [flags].
func tunnelArgs(pf *v1alpha1.PortForward, target string, opts Options) []string {
	args := []string{"forward", target}
	for i, p := range pf.Spec.Ports {
		args = append(args, fmt.Sprintf("%d:%d", containerPort(i), p.RemotePort))
	}
	args = append(args, "--address", "0.0.0.0")
	if pf.Spec.RemoteHost != "" {
		args = append(args, "--remote-host", pf.Spec.RemoteHost)
	}
	if r := region(pf, opts); r != "" {
		args = append(args, "--region", r)
	}
	if pf.Spec.DocumentName != "" {
		args = append(args, "--document", pf.Spec.DocumentName)
	}
	args = append(args, "--sessions", strconv.Itoa(int(sessionsPerReplica(pf))))
	if b := sessionReceiveBuffer(pf); b > 0 {
		args = append(args, "--session-receive-buffer", fmt.Sprintf("%dMi", b>>20))
	}
	if pf.Spec.RoleARN != "" {
		args = append(args, "--role-arn", pf.Spec.RoleARN, "--role-session-name", roleSessionName(pf))
	}
	if n := maxConnections(pf); n > 0 {
		args = append(args, "--max-connections", strconv.Itoa(int(n)))
	}
	if strings.HasPrefix(opts.AWSEndpointURL, "http://") {
		// An endpoint over plain HTTP is an emulator: its data channels are ws:// too.
		args = append(args, "--allow-insecure-stream")
	}
	if p := pf.Spec.DestinationProbe; p != nil {
		args = append(args, "--probe-interval", (time.Duration(max(p.PeriodSeconds, minProbePeriod)) * time.Second).String())
	}
	return append(args,
		// A tunnel pod never exits for a session the service ended or could not start: it replaces the
		// session at once and waits NotReady (reason on /readyz) while its target is unreachable.
		"--reconnect", "eager", "--retry-start",
		"--reason", fmt.Sprintf("ssmtunnel PortForward %s/%s", pf.Namespace, pf.Name),
		"--health-addr", fmt.Sprintf(":%d", healthPort),
		"--metrics-addr", fmt.Sprintf(":%d", metricsPort),
		"--drain-timeout", opts.DrainTimeout.String(),
	)
}

// roleSessionName names the tunnel's assumed-role session after the PortForward (namespace.name), so
// CloudTrail and IAM conditions (aws:RoleSessionName... sts:RoleSessionName) tell tenants apart. STS allows
// 64 characters: a longer name keeps its start and a hash of the whole.
func roleSessionName(pf *v1alpha1.PortForward) string {
	n := pf.Namespace + "." + pf.Name
	if len(n) <= 64 {
		return n
	}
	sum := sha256.Sum256([]byte(n))
	return n[:55] + "-" + hex.EncodeToString(sum[:4])
}

// minProbePeriod is the API's minimum of destinationProbe.periodSeconds, and what an unset (0) period
// that skipped defaulting means.
const minProbePeriod = 5

// tunnelEnv is the SDK configuration of the tunnel pod that does not fit a flag.
func tunnelEnv(opts Options) []*corev1ac.EnvVarApplyConfiguration {
	if opts.AWSEndpointURL == "" {
		return nil
	}
	return []*corev1ac.EnvVarApplyConfiguration{
		corev1ac.EnvVar().WithName("AWS_ENDPOINT_URL_SSM").WithValue(opts.AWSEndpointURL),
	}
}

// Session buffers: the tunnel holds up to --session-receive-buffer (16 MiB by default) per session for
// local readers that lag, so a pod needs up to that × ports × sessions of memory.
const (
	tunnelDefaultSessionBuffer = 16 << 20
	minSessionBuffer           = 1 << 20
)

// sessionReceiveBuffer is the tunnel's --session-receive-buffer for pf, or 0 for the tunnel's default: the
// buffers of all ports' sessions together get at most half the container's memory limit (the rest is the
// data channels, copy buffers and the runtime), in whole MiB, at least 1 MiB. Without it, a pod with
// 16 ports × 4 sessions under the default 128Mi limit could hold 1 GiB for lagging readers and be
// OOM-killed, cutting every connection it carries.
func sessionReceiveBuffer(pf *v1alpha1.PortForward) int64 {
	limit := defaultMemoryLimit
	if r := pf.Spec.PodTemplate.Resources; r != nil {
		q, ok := r.Limits[corev1.ResourceMemory]
		if !ok {
			return 0 // no limit: nothing to fit
		}
		limit = q
	}
	n := int64(len(pf.Spec.Ports)) * int64(sessionsPerReplica(pf))
	b := limit.Value() / 2 / max(n, 1) >> 20 << 20
	if b >= tunnelDefaultSessionBuffer {
		return 0
	}
	return max(b, minSessionBuffer)
}

// connectionMemory is what the tunnel budgets per open connection (idle ones take about 8 KiB, busy ones
// borrow a 32 KiB copy buffer for each read); connections get a quarter of the memory limit.
const connectionMemory = 16 << 10

// maxConnections is the tunnel's --max-connections for pf: spec.maxConnections, else a quarter of the
// container's memory limit at connectionMemory each, divided over the ports (at least 64), else 0
// (unlimited) when the container has no memory limit.
func maxConnections(pf *v1alpha1.PortForward) int32 {
	if pf.Spec.MaxConnections != nil {
		return *pf.Spec.MaxConnections
	}
	limit := defaultMemoryLimit
	if r := pf.Spec.PodTemplate.Resources; r != nil {
		q, ok := r.Limits[corev1.ResourceMemory]
		if !ok {
			return 0
		}
		limit = q
	}
	n := limit.Value() / 4 / connectionMemory / int64(max(len(pf.Spec.Ports), 1))
	return int32(min(max(n, 64), 1000000))
}

// defaultMemoryLimit is the tunnel container's memory limit unless the PortForward sets resources.
var defaultMemoryLimit = resource.MustParse("128Mi")

// defaultResources keep a tunnel pod small: it only copies bytes between sockets.
func defaultResources() *corev1ac.ResourceRequirementsApplyConfiguration {
	return corev1ac.ResourceRequirements().
		WithRequests(corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("10m"),
			corev1.ResourceMemory: resource.MustParse("32Mi"),
		}).
		WithLimits(corev1.ResourceList{corev1.ResourceMemory: defaultMemoryLimit})
}

// defaultAffinity prefers one tunnel pod per node, so a node loss does not take every replica; preferred,
// not required, so a single-node cluster still runs all of them.
func defaultAffinity(pf *v1alpha1.PortForward) *corev1ac.AffinityApplyConfiguration {
	return corev1ac.Affinity().WithPodAntiAffinity(corev1ac.PodAntiAffinity().
		WithPreferredDuringSchedulingIgnoredDuringExecution(corev1ac.WeightedPodAffinityTerm().
			WithWeight(100).
			WithPodAffinityTerm(corev1ac.PodAffinityTerm().
				WithTopologyKey(corev1.LabelHostname).
				WithLabelSelector(metav1ac.LabelSelector().WithMatchLabels(selectorLabels(pf))))))
}

// desiredPodSpec is the tunnel pod: restricted Pod Security (non-root, read-only root file system, no
// capabilities, RuntimeDefault seccomp), probes on the tunnel's health server, and the user's scheduling
// overrides.
//
// automountServiceAccountToken is false: the tunnel never calls the Kubernetes API. IRSA and EKS Pod Identity
// do not need the automounted token either: their admission webhooks inject a separate projected token
// volume (audience sts.amazonaws.com / pods.eks.amazonaws.com) whatever automount says.
func desiredPodSpec(pf *v1alpha1.PortForward, target string, opts Options) *corev1ac.PodSpecApplyConfiguration {
	ports := make([]*corev1ac.ContainerPortApplyConfiguration, 0, len(pf.Spec.Ports)+2)
	for i, p := range pf.Spec.Ports {
		ports = append(ports, corev1ac.ContainerPort().
			WithName(p.Name).WithContainerPort(containerPort(i)).WithProtocol(corev1.ProtocolTCP))
	}
	ports = append(ports,
		corev1ac.ContainerPort().WithName(metricsPortName).WithContainerPort(metricsPort).WithProtocol(corev1.ProtocolTCP),
		corev1ac.ContainerPort().WithName(healthPortName).WithContainerPort(healthPort).WithProtocol(corev1.ProtocolTCP),
	)

	probe := func(path string, period, failures int32) *corev1ac.ProbeApplyConfiguration {
		return corev1ac.Probe().
			WithHTTPGet(corev1ac.HTTPGetAction().WithPath(path).WithPort(intstr.FromString(healthPortName))).
			WithPeriodSeconds(period).
			WithFailureThreshold(failures)
	}

	container := corev1ac.Container().
		WithName(tunnelContainerName).
		WithImage(opts.TunnelImage).
		WithImagePullPolicy(corev1.PullIfNotPresent).
		WithCommand(tunnelBinary).
		WithArgs(tunnelArgs(pf, target, opts)...).
		WithPorts(ports...).
		WithEnvFrom(corev1ac.EnvFromSource().WithSecretRef(
			corev1ac.SecretEnvSource().WithName(opts.CredentialsSecretName).WithOptional(true))).
		WithReadinessProbe(probe("/readyz", 5, 3)).
		WithLivenessProbe(probe("/healthz", 10, 6)).
		// Keep accepting while the pod leaves the Service's endpoints (kube-proxy on every node takes a moment
		// to notice); only then does SIGTERM close the listeners and drain.
		WithLifecycle(corev1ac.Lifecycle().WithPreStop(corev1ac.LifecycleHandler().
			WithSleep(corev1ac.SleepAction().WithSeconds(int64(preStopDelay.Seconds()))))).
		WithSecurityContext(corev1ac.SecurityContext().
			WithAllowPrivilegeEscalation(false).
			WithReadOnlyRootFilesystem(true).
			WithRunAsNonRoot(true).
			WithCapabilities(corev1ac.Capabilities().WithDrop(corev1.Capability("ALL")))).
		WithVolumeMounts(corev1ac.VolumeMount().WithName("tmp").WithMountPath("/tmp"))
	if env := tunnelEnv(opts); env != nil {
		container.WithEnv(env...)
	}
	if r := pf.Spec.PodTemplate.Resources; r != nil {
		container.WithResources(convert[corev1ac.ResourceRequirementsApplyConfiguration](r))
	} else {
		container.WithResources(defaultResources())
	}

	grace := int64((preStopDelay + opts.DrainTimeout + terminationMargin).Seconds())
	spec := corev1ac.PodSpec().
		WithServiceAccountName(serviceAccountName(pf, opts)).
		WithAutomountServiceAccountToken(false).
		WithEnableServiceLinks(false).
		WithTerminationGracePeriodSeconds(grace).
		WithSecurityContext(corev1ac.PodSecurityContext().
			WithRunAsNonRoot(true).
			WithRunAsUser(nonRootUID).
			WithRunAsGroup(nonRootUID).
			WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))).
		WithContainers(container).
		WithVolumes(corev1ac.Volume().WithName("tmp").WithEmptyDir(corev1ac.EmptyDirVolumeSource()))

	o := pf.Spec.PodTemplate
	if o.Affinity != nil {
		spec.WithAffinity(convert[corev1ac.AffinityApplyConfiguration](o.Affinity))
	} else {
		spec.WithAffinity(defaultAffinity(pf))
	}
	if len(o.NodeSelector) > 0 {
		spec.WithNodeSelector(o.NodeSelector)
	}
	for i := range o.Tolerations {
		spec.WithTolerations(convert[corev1ac.TolerationApplyConfiguration](&o.Tolerations[i]))
	}
	for i := range o.TopologySpreadConstraints {
		spec.WithTopologySpreadConstraints(
			convert[corev1ac.TopologySpreadConstraintApplyConfiguration](&o.TopologySpreadConstraints[i]))
	}
	if o.PriorityClassName != "" {
		spec.WithPriorityClassName(o.PriorityClassName)
	}
	return spec
}

// podSpecHash is a short, stable hash of a pod spec (encoding/json sorts map keys).
func podSpecHash(spec *corev1ac.PodSpecApplyConfiguration) string {
	b, err := json.Marshal(spec)
	if err != nil {
		panic(fmt.Sprintf("marshal pod spec: %v", err)) // apply configurations always marshal
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// desiredDeployment runs the tunnel pods of pf against target (the instance ID to connect to): a rolling
// update that never drops below the requested ready pods (maxUnavailable 0).
func desiredDeployment(pf *v1alpha1.PortForward, target string, opts Options) *appsv1ac.DeploymentApplyConfiguration {
	podSpec := desiredPodSpec(pf, target, opts)
	return appsv1ac.Deployment(pf.Name, pf.Namespace).
		WithLabels(childLabels(pf, nil)).
		WithOwnerReferences(ownerReference(pf)).
		WithSpec(appsv1ac.DeploymentSpec().
			WithReplicas(replicas(pf)).
			WithRevisionHistoryLimit(3).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(selectorLabels(pf))).
			WithStrategy(appsv1ac.DeploymentStrategy().
				WithType("RollingUpdate").
				WithRollingUpdate(appsv1ac.RollingUpdateDeployment().
					WithMaxUnavailable(intstr.FromInt32(0)).
					WithMaxSurge(intstr.FromInt32(1)))).
			WithTemplate(corev1ac.PodTemplateSpec().
				WithLabels(childLabels(pf, nil)).
				WithAnnotations(map[string]string{AnnotationPodSpecHash: podSpecHash(podSpec)}).
				WithSpec(podSpec)))
}

// headless reports whether pf asks for a Service without a cluster IP.
func headless(pf *v1alpha1.PortForward) bool {
	return pf.Spec.Service.Type == v1alpha1.ServiceTypeHeadless
}

// desiredService maps each spec.ports[i].port to the pod port of the same name. It is named exactly like pf,
// so clients use <name>.<namespace>.svc:<port>.
func desiredService(pf *v1alpha1.PortForward) *corev1ac.ServiceApplyConfiguration {
	ports := make([]*corev1ac.ServicePortApplyConfiguration, 0, len(pf.Spec.Ports))
	for _, p := range pf.Spec.Ports {
		ports = append(ports, corev1ac.ServicePort().
			WithName(p.Name).
			WithProtocol(corev1.ProtocolTCP).
			WithPort(p.Port).
			WithTargetPort(intstr.FromString(p.Name)))
	}
	spec := corev1ac.ServiceSpec().
		WithType(corev1.ServiceTypeClusterIP).
		WithSelector(selectorLabels(pf)).
		WithPorts(ports...)
	if headless(pf) {
		spec.WithClusterIP(corev1.ClusterIPNone)
	}
	svc := corev1ac.Service(pf.Name, pf.Namespace).
		WithLabels(childLabels(pf, pf.Spec.Service.Labels)).
		WithOwnerReferences(ownerReference(pf)).
		WithSpec(spec)
	if len(pf.Spec.Service.Annotations) > 0 {
		svc.WithAnnotations(pf.Spec.Service.Annotations)
	}
	return svc
}

// wantPDB reports whether pf gets a PodDisruptionBudget: only with more than one replica, since with one a
// minAvailable of 1 would block node drains forever.
func wantPDB(pf *v1alpha1.PortForward) bool { return replicas(pf) > 1 }

// desiredPDB keeps at least one tunnel pod during voluntary disruptions (node drains).
func desiredPDB(pf *v1alpha1.PortForward) *policyv1ac.PodDisruptionBudgetApplyConfiguration {
	return policyv1ac.PodDisruptionBudget(pf.Name, pf.Namespace).
		WithLabels(childLabels(pf, nil)).
		WithOwnerReferences(ownerReference(pf)).
		WithSpec(policyv1ac.PodDisruptionBudgetSpec().
			WithMinAvailable(intstr.FromInt32(1)).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(selectorLabels(pf))))
}

// wantNetworkPolicy reports whether pf's tunnel pods get a NetworkPolicy: when it restricts its clients,
// when clients are restricted to the namespace by default, or when the metrics port is restricted.
func wantNetworkPolicy(pf *v1alpha1.PortForward, opts Options) bool {
	return len(pf.Spec.AllowedClients) > 0 || opts.DefaultClients == DefaultClientsNamespace || len(opts.MetricsFromNamespaces) > 0
}

// desiredNetworkPolicy admits to the tunnel ports spec.allowedClients, or without them the pods of pf's
// namespace (DefaultClientsNamespace) or everyone; to the metrics port the namespaces named by
// MetricsFromNamespaces, or everyone; to the health port the operator. Kubelet probes are not subject to
// NetworkPolicy.
func desiredNetworkPolicy(pf *v1alpha1.PortForward, opts Options) *networkingv1ac.NetworkPolicyApplyConfiguration {
	peers := make([]*networkingv1ac.NetworkPolicyPeerApplyConfiguration, 0, len(pf.Spec.AllowedClients))
	for _, c := range pf.Spec.AllowedClients {
		peer := networkingv1ac.NetworkPolicyPeer()
		if c.NamespaceSelector != nil {
			peer.WithNamespaceSelector(convert[metav1ac.LabelSelectorApplyConfiguration](c.NamespaceSelector))
		}
		if c.PodSelector != nil {
			peer.WithPodSelector(convert[metav1ac.LabelSelectorApplyConfiguration](c.PodSelector))
		}
		peers = append(peers, peer)
	}
	if len(peers) == 0 && opts.DefaultClients == DefaultClientsNamespace {
		peers = append(peers, networkingv1ac.NetworkPolicyPeer().WithPodSelector(metav1ac.LabelSelector()))
	}
	tcp := corev1.ProtocolTCP
	ports := make([]*networkingv1ac.NetworkPolicyPortApplyConfiguration, 0, len(pf.Spec.Ports))
	for i := range pf.Spec.Ports {
		ports = append(ports, networkingv1ac.NetworkPolicyPort().
			WithProtocol(tcp).WithPort(intstr.FromInt32(containerPort(i))))
	}
	metrics := networkingv1ac.NetworkPolicyIngressRule().WithPorts(networkingv1ac.NetworkPolicyPort().
		WithProtocol(tcp).WithPort(intstr.FromInt32(metricsPort)))
	if len(opts.MetricsFromNamespaces) > 0 {
		metrics.WithFrom(networkingv1ac.NetworkPolicyPeer().WithNamespaceSelector(metav1ac.LabelSelector().
			WithMatchExpressions(metav1ac.LabelSelectorRequirement().WithKey(corev1.LabelMetadataName).
				WithOperator(metav1.LabelSelectorOpIn).WithValues(opts.MetricsFromNamespaces...))))
	}
	return networkingv1ac.NetworkPolicy(pf.Name, pf.Namespace).
		WithLabels(childLabels(pf, nil)).
		WithOwnerReferences(ownerReference(pf)).
		WithSpec(networkingv1ac.NetworkPolicySpec().
			WithPodSelector(metav1ac.LabelSelector().WithMatchLabels(selectorLabels(pf))).
			WithPolicyTypes("Ingress").
			WithIngress(
				networkingv1ac.NetworkPolicyIngressRule().WithFrom(peers...).WithPorts(ports...),
				metrics,
				operatorIngress(opts),
			))
}

// operatorIngress lets the operator read the tunnel pods' /readyz, where it learns why a pod is not ready:
// from the operator's namespace when it is known, from anywhere otherwise (the health port serves only
// the pod's state, no secret).
func operatorIngress(opts Options) *networkingv1ac.NetworkPolicyIngressRuleApplyConfiguration {
	rule := networkingv1ac.NetworkPolicyIngressRule().WithPorts(networkingv1ac.NetworkPolicyPort().
		WithProtocol(corev1.ProtocolTCP).WithPort(intstr.FromInt32(healthPort)))
	if opts.OperatorNamespace != "" {
		rule.WithFrom(networkingv1ac.NetworkPolicyPeer().WithNamespaceSelector(metav1ac.LabelSelector().
			WithMatchLabels(map[string]string{corev1.LabelMetadataName: opts.OperatorNamespace})))
	}
	return rule
}

// desiredServiceAccount is the default tunnel ServiceAccount of a namespace. It has no owner: every
// PortForward of the namespace without spec.serviceAccountName shares it, and it holds no rights in the
// cluster, so it stays when they are deleted.
func desiredServiceAccount(namespace string, opts Options) *corev1ac.ServiceAccountApplyConfiguration {
	sa := corev1ac.ServiceAccount(opts.DefaultServiceAccountName, namespace).
		WithLabels(map[string]string{
			LabelName:      LabelNameValue,
			LabelComponent: LabelComponentValue,
			LabelManagedBy: ManagedByValue,
		}).
		WithAutomountServiceAccountToken(false)
	if len(opts.ServiceAccountAnnotations) > 0 {
		ann := make(map[string]string, len(opts.ServiceAccountAnnotations))
		for k, v := range opts.ServiceAccountAnnotations {
			ann[k] = strings.ReplaceAll(v, NamespacePlaceholder, namespace)
		}
		sa.WithAnnotations(ann)
	}
	return sa
}

// NamespacePlaceholder in a default tunnel ServiceAccount annotation is replaced by the namespace, so each
// namespace can get an IAM role of its own: eks.amazonaws.com/role-arn=arn:aws:iam::111122223333:role/tunnel-{namespace}.
const NamespacePlaceholder = "{namespace}"

// addresses are the in-cluster addresses of pf's ports, for status.
func addresses(pf *v1alpha1.PortForward) []string {
	out := make([]string, 0, len(pf.Spec.Ports))
	for _, p := range pf.Spec.Ports {
		out = append(out, fmt.Sprintf("%s.%s.svc:%d", pf.Name, pf.Namespace, p.Port))
	}
	return out
}

// portSummary is "port:remotePort,..." for the PORTS printer column.
func portSummary(pf *v1alpha1.PortForward) string {
	parts := make([]string, 0, len(pf.Spec.Ports))
	for _, p := range pf.Spec.Ports {
		parts = append(parts, fmt.Sprintf("%d:%d", p.Port, p.RemotePort))
	}
	return strings.Join(parts, ",")
}

// convert turns an API type into its apply configuration through JSON, which both share field for field.
// It is used only for user-supplied types the API server has already validated, so it cannot fail.
func convert[T any](in any) *T {
	b, err := json.Marshal(in)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", in, err))
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		panic(fmt.Sprintf("convert %T to %T: %v", in, out, err))
	}
	return out
}
