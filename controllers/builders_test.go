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

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	networkingv1ac "k8s.io/client-go/applyconfigurations/networking/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"
	"k8s.io/utils/ptr"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
	"github.com/ssmtunnel/ssmtunnel/tunnel/portforward"
)

var quantityCmp = cmp.Comparer(func(a, b resource.Quantity) bool { return a.Cmp(b) == 0 })

var testOpts = Options{TunnelImage: "localhost/ssmtunnel:test", DefaultRegion: "eu-west-1"}.WithDefaults()

// basePF is the smallest valid PortForward, as the API server returns it after defaulting.
func basePF() *v1alpha1.PortForward {
	return &v1alpha1.PortForward{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "apps", UID: "uid-1", Generation: 1},
		Spec: v1alpha1.PortForwardSpec{
			Target:             v1alpha1.Target{InstanceID: "i-0123456789abcdef0"},
			Ports:              []v1alpha1.PortSpec{{Name: "postgres", Port: 5432, RemotePort: 5432, Protocol: v1alpha1.ProtocolTCP}},
			Replicas:           ptr.To[int32](2),
			SessionsPerReplica: ptr.To[int32](1),
			Service:            v1alpha1.ServiceSpec{Type: v1alpha1.ServiceTypeClusterIP},
		},
	}
}

func wantLabels() map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":       "ssmtunnel",
		"app.kubernetes.io/instance":   "db",
		"app.kubernetes.io/component":  "tunnel",
		"app.kubernetes.io/managed-by": "ssmtunnel-operator",
	}
}

func wantSelector() map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":      "ssmtunnel",
		"app.kubernetes.io/instance":  "db",
		"app.kubernetes.io/component": "tunnel",
	}
}

func wantOwner() *metav1ac.OwnerReferenceApplyConfiguration {
	return metav1ac.OwnerReference().WithAPIVersion("ssmtunnel.io/v1alpha1").WithKind("PortForward").
		WithName("db").WithUID("uid-1").WithController(true).WithBlockOwnerDeletion(true)
}

// wantPodSpec is the tunnel pod of basePF, written out in full: this is the golden pod spec.
func wantPodSpec() *corev1ac.PodSpecApplyConfiguration {
	return corev1ac.PodSpec().
		WithServiceAccountName("ssmtunnel-tunnel").
		WithAutomountServiceAccountToken(false).
		WithEnableServiceLinks(false).
		WithTerminationGracePeriodSeconds(35).
		WithSecurityContext(corev1ac.PodSecurityContext().WithRunAsNonRoot(true).WithRunAsUser(65532).WithRunAsGroup(65532).
			WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))).
		WithContainers(corev1ac.Container().
			WithName("tunnel").
			WithImage("localhost/ssmtunnel:test").
			WithImagePullPolicy(corev1.PullIfNotPresent).
			WithCommand("/ssmtunnel").
			WithArgs("forward", "i-0123456789abcdef0", "10000:5432", "--address", "0.0.0.0",
				"--region", "eu-west-1", "--sessions", "1",
				"--max-connections", "2048", "--reconnect", "eager", "--retry-start",
				"--reason", "ssmtunnel PortForward apps/db",
				"--health-addr", ":8081", "--metrics-addr", ":8080", "--drain-timeout", "20s").
			WithPorts(
				corev1ac.ContainerPort().WithName("postgres").WithContainerPort(10000).WithProtocol(corev1.ProtocolTCP),
				corev1ac.ContainerPort().WithName("metrics").WithContainerPort(8080).WithProtocol(corev1.ProtocolTCP),
				corev1ac.ContainerPort().WithName("health").WithContainerPort(8081).WithProtocol(corev1.ProtocolTCP)).
			WithEnvFrom(corev1ac.EnvFromSource().WithSecretRef(corev1ac.SecretEnvSource().WithName("ssmtunnel-aws-credentials").WithOptional(true))).
			WithReadinessProbe(corev1ac.Probe().WithHTTPGet(corev1ac.HTTPGetAction().WithPath("/readyz").WithPort(intstr.FromString("health"))).
				WithPeriodSeconds(5).WithFailureThreshold(3)).
			WithLivenessProbe(corev1ac.Probe().WithHTTPGet(corev1ac.HTTPGetAction().WithPath("/healthz").WithPort(intstr.FromString("health"))).
				WithPeriodSeconds(10).WithFailureThreshold(6)).
			WithLifecycle(corev1ac.Lifecycle().WithPreStop(corev1ac.LifecycleHandler().WithSleep(corev1ac.SleepAction().WithSeconds(5)))).
			WithSecurityContext(corev1ac.SecurityContext().WithAllowPrivilegeEscalation(false).WithReadOnlyRootFilesystem(true).
				WithRunAsNonRoot(true).WithCapabilities(corev1ac.Capabilities().WithDrop("ALL"))).
			WithVolumeMounts(corev1ac.VolumeMount().WithName("tmp").WithMountPath("/tmp")).
			WithResources(corev1ac.ResourceRequirements().
				WithRequests(corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")}).
				WithLimits(corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}))).
		WithVolumes(corev1ac.Volume().WithName("tmp").WithEmptyDir(corev1ac.EmptyDirVolumeSource())).
		WithAffinity(corev1ac.Affinity().WithPodAntiAffinity(corev1ac.PodAntiAffinity().
			WithPreferredDuringSchedulingIgnoredDuringExecution(corev1ac.WeightedPodAffinityTerm().WithWeight(100).
				WithPodAffinityTerm(corev1ac.PodAffinityTerm().WithTopologyKey("kubernetes.io/hostname").
					WithLabelSelector(metav1ac.LabelSelector().WithMatchLabels(wantSelector()))))))
}

func wantDeployment(replicas int32, pod *corev1ac.PodSpecApplyConfiguration) *appsv1ac.DeploymentApplyConfiguration {
	return appsv1ac.Deployment("db", "apps").
		WithLabels(wantLabels()).
		WithOwnerReferences(wantOwner()).
		WithSpec(appsv1ac.DeploymentSpec().
			WithReplicas(replicas).
			WithRevisionHistoryLimit(3).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(wantSelector())).
			WithStrategy(appsv1ac.DeploymentStrategy().WithType("RollingUpdate").
				WithRollingUpdate(appsv1ac.RollingUpdateDeployment().WithMaxUnavailable(intstr.FromInt32(0)).WithMaxSurge(intstr.FromInt32(1)))).
			WithTemplate(corev1ac.PodTemplateSpec().
				WithLabels(wantLabels()).
				WithAnnotations(map[string]string{"ssmtunnel.io/pod-spec-hash": podSpecHash(pod)}).
				WithSpec(pod)))
}

func container(p *corev1ac.PodSpecApplyConfiguration) *corev1ac.ContainerApplyConfiguration {
	return &p.Containers[0]
}

func TestSessionReceiveBuffer(t *testing.T) {
	withMemory := func(q string) *corev1.ResourceRequirements {
		return &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(q)}}
	}
	tests := []struct {
		name            string
		ports, sessions int
		resources       *corev1.ResourceRequirements
		want            int64
	}{
		{"one port, one session: the tunnel's default", 1, 1, nil, 0},
		{"2 × 2 under 128Mi: exactly the default", 2, 2, nil, 0},
		{"16 × 4 under 128Mi: 1 MiB", 16, 4, nil, 1 << 20},
		{"16 × 8 under 128Mi: never below 1 MiB", 16, 8, nil, 1 << 20},
		{"16 × 4 under 1Gi: 8 MiB", 16, 4, withMemory("1Gi"), 8 << 20},
		{"no memory limit: the default", 16, 8, &corev1.ResourceRequirements{}, 0},
	}
	for _, tc := range tests {
		pf := basePF()
		pf.Spec.Ports = nil
		for i := range tc.ports {
			pf.Spec.Ports = append(pf.Spec.Ports, v1alpha1.PortSpec{Name: fmt.Sprintf("p%d", i), Port: int32(7000 + i), RemotePort: int32(7000 + i), Protocol: v1alpha1.ProtocolTCP})
		}
		pf.Spec.SessionsPerReplica = ptr.To(int32(tc.sessions))
		pf.Spec.PodTemplate.Resources = tc.resources
		if got := sessionReceiveBuffer(pf); got != tc.want {
			t.Errorf("%s: sessionReceiveBuffer = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestDesiredDeployment(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(pf *v1alpha1.PortForward)
		opts   func(o *Options)
		target string
		want   func(p *corev1ac.PodSpecApplyConfiguration) // changes to wantPodSpec
		reps   int32
	}{
		{name: "defaults"},
		{
			name: "selector target uses the resolved instance",
			mutate: func(pf *v1alpha1.PortForward) {
				pf.Spec.Target = v1alpha1.Target{Selector: &v1alpha1.InstanceSelector{Tags: map[string]string{"role": "db"}}}
			},
			target: "mi-00000000000000001",
			want:   func(p *corev1ac.PodSpecApplyConfiguration) { container(p).Args[1] = "mi-00000000000000001" },
		},
		{
			name: "remote host, own region, document, role, sessions",
			mutate: func(pf *v1alpha1.PortForward) {
				pf.Spec.RemoteHost = "db.internal"
				pf.Spec.Region = "us-east-2"
				pf.Spec.DocumentName = "Custom-Doc"
				pf.Spec.RoleARN = "arn:aws:iam::123456789012:role/tunnel"
				pf.Spec.SessionsPerReplica = ptr.To[int32](3)
			},
			want: func(p *corev1ac.PodSpecApplyConfiguration) {
				container(p).Args = []string{"forward", "i-0123456789abcdef0", "10000:5432", "--address", "0.0.0.0",
					"--remote-host", "db.internal", "--region", "us-east-2", "--document", "Custom-Doc", "--sessions", "3",
					"--role-arn", "arn:aws:iam::123456789012:role/tunnel", "--role-session-name", "apps.db", "--max-connections", "2048",
					"--reconnect", "eager", "--retry-start",
					"--reason", "ssmtunnel PortForward apps/db",
					"--health-addr", ":8081", "--metrics-addr", ":8080", "--drain-timeout", "20s"}
			},
		},
		{
			name: "no region anywhere leaves it to the pod environment",
			opts: func(o *Options) { o.DefaultRegion = "" },
			want: func(p *corev1ac.PodSpecApplyConfiguration) {
				c := container(p)
				c.Args = append(c.Args[:5:5], c.Args[7:]...)
			},
		},
		{
			name: "several ports listen on consecutive container ports",
			mutate: func(pf *v1alpha1.PortForward) {
				pf.Spec.Ports = append(pf.Spec.Ports, v1alpha1.PortSpec{Name: "http", Port: 80, RemotePort: 8080, Protocol: v1alpha1.ProtocolTCP})
			},
			want: func(p *corev1ac.PodSpecApplyConfiguration) {
				c := container(p)
				c.Args = append(c.Args[:3:3], append([]string{"10001:8080"}, c.Args[3:]...)...)
				c.Args = withArg(c.Args, "--max-connections", "1024") // the budget is shared by the ports
				c.Ports = append([]corev1ac.ContainerPortApplyConfiguration{c.Ports[0],
					*corev1ac.ContainerPort().WithName("http").WithContainerPort(10001).WithProtocol(corev1.ProtocolTCP)}, c.Ports[1:]...)
			},
		},
		{
			name: "endpoint URL, credentials secret, drain timeout, default service account name",
			opts: func(o *Options) {
				o.AWSEndpointURL = "http://10.0.0.1:4566"
				o.CredentialsSecretName = "keys"
				o.DrainTimeout = 45 * time.Second
				o.DefaultServiceAccountName = "tunnels"
			},
			want: func(p *corev1ac.PodSpecApplyConfiguration) {
				c := container(p)
				c.WithEnv(corev1ac.EnvVar().WithName("AWS_ENDPOINT_URL_SSM").WithValue("http://10.0.0.1:4566"))
				c.EnvFrom[0].SecretRef.WithName("keys")
				c.Args[len(c.Args)-1] = "45s"
				// An emulator over plain HTTP: its data channels are ws:// too.
				at := slices.Index(c.Args, "--reconnect")
				c.Args = slices.Insert(c.Args, at, "--allow-insecure-stream")
				p.WithTerminationGracePeriodSeconds(60).WithServiceAccountName("tunnels")
			},
		},
		{
			name:   "own service account",
			mutate: func(pf *v1alpha1.PortForward) { pf.Spec.ServiceAccountName = "irsa-db" },
			want:   func(p *corev1ac.PodSpecApplyConfiguration) { p.WithServiceAccountName("irsa-db") },
		},
		{
			name: "pod template overrides",
			mutate: func(pf *v1alpha1.PortForward) {
				pf.Spec.PodTemplate = v1alpha1.PodTemplateOverrides{
					Resources:    &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}},
					NodeSelector: map[string]string{"pool": "edge"},
					Tolerations:  []corev1.Toleration{{Key: "edge", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
					Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
						NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a"}}}}}}}},
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "zone", WhenUnsatisfiable: corev1.ScheduleAnyway}},
					PriorityClassName:         "critical",
				}
			},
			want: func(p *corev1ac.PodSpecApplyConfiguration) {
				container(p).Resources = corev1ac.ResourceRequirements().WithRequests(corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")})
				container(p).Args = withArg(container(p).Args, "--max-connections", "") // no memory limit to fit
				p.Affinity = corev1ac.Affinity().WithNodeAffinity(corev1ac.NodeAffinity().WithRequiredDuringSchedulingIgnoredDuringExecution(
					corev1ac.NodeSelector().WithNodeSelectorTerms(corev1ac.NodeSelectorTerm().WithMatchExpressions(
						corev1ac.NodeSelectorRequirement().WithKey("zone").WithOperator(corev1.NodeSelectorOpIn).WithValues("a")))))
				p.WithNodeSelector(map[string]string{"pool": "edge"}).
					WithTolerations(corev1ac.Toleration().WithKey("edge").WithOperator(corev1.TolerationOpExists).WithEffect(corev1.TaintEffectNoSchedule)).
					WithTopologySpreadConstraints(corev1ac.TopologySpreadConstraint().WithMaxSkew(1).WithTopologyKey("zone").WithWhenUnsatisfiable(corev1.ScheduleAnyway)).
					WithPriorityClassName("critical")
			},
		},
		{
			name: "session buffers fit half the default memory limit: 3 ports × 2 sessions get 10 MiB each",
			mutate: func(pf *v1alpha1.PortForward) {
				for _, n := range []int32{1, 2} {
					pf.Spec.Ports = append(pf.Spec.Ports, v1alpha1.PortSpec{Name: fmt.Sprintf("p%d", n), Port: 6000 + n, RemotePort: 6000 + n, Protocol: v1alpha1.ProtocolTCP})
				}
				pf.Spec.SessionsPerReplica = ptr.To[int32](2)
			},
			want: func(p *corev1ac.PodSpecApplyConfiguration) {
				c := container(p)
				c.Args = []string{"forward", "i-0123456789abcdef0", "10000:5432", "10001:6001", "10002:6002", "--address", "0.0.0.0",
					"--region", "eu-west-1", "--sessions", "2", "--session-receive-buffer", "10Mi",
					"--max-connections", "682", "--reconnect", "eager", "--retry-start",
					"--reason", "ssmtunnel PortForward apps/db",
					"--health-addr", ":8081", "--metrics-addr", ":8080", "--drain-timeout", "20s"}
				c.Ports = append([]corev1ac.ContainerPortApplyConfiguration{c.Ports[0],
					*corev1ac.ContainerPort().WithName("p1").WithContainerPort(10001).WithProtocol(corev1.ProtocolTCP),
					*corev1ac.ContainerPort().WithName("p2").WithContainerPort(10002).WithProtocol(corev1.ProtocolTCP)}, c.Ports[1:]...)
			},
		},
		{
			name:   "replicas",
			mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Replicas = ptr.To[int32](5) },
			reps:   5,
		},
		{
			name:   "replicas unset falls back to the API default",
			mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Replicas = nil; pf.Spec.SessionsPerReplica = nil },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pf := basePF()
			if tc.mutate != nil {
				tc.mutate(pf)
			}
			opts := testOpts
			if tc.opts != nil {
				tc.opts(&opts)
			}
			target := tc.target
			if target == "" {
				target = pf.Spec.Target.InstanceID
			}
			pod := wantPodSpec()
			if tc.want != nil {
				tc.want(pod)
			}
			reps := tc.reps
			if reps == 0 {
				reps = 2
			}
			got := desiredDeployment(pf, target, opts)
			if diff := cmp.Diff(wantDeployment(reps, pod), got, quantityCmp); diff != "" {
				t.Errorf("desiredDeployment mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPodSpecHashRollsOnChange checks the pod template hash: stable for the same spec, different for any
// change that must roll the pods.
func TestPodSpecHashRollsOnChange(t *testing.T) {
	hash := func(mutate func(pf *v1alpha1.PortForward), target string) string {
		pf := basePF()
		if mutate != nil {
			mutate(pf)
		}
		return desiredDeployment(pf, target, testOpts).Spec.Template.Annotations[AnnotationPodSpecHash]
	}
	base := hash(nil, "i-0123456789abcdef0")
	if again := hash(nil, "i-0123456789abcdef0"); again != base {
		t.Fatalf("hash is not stable: %s then %s", base, again)
	}
	if same := hash(func(pf *v1alpha1.PortForward) { pf.Spec.Replicas = ptr.To[int32](7) }, "i-0123456789abcdef0"); same != base {
		t.Errorf("replicas changed the pod hash (%s -> %s); scaling must not roll pods", base, same)
	}
	changes := map[string]func(pf *v1alpha1.PortForward){
		"remotePort": func(pf *v1alpha1.PortForward) { pf.Spec.Ports[0].RemotePort = 5433 },
		"remoteHost": func(pf *v1alpha1.PortForward) { pf.Spec.RemoteHost = "10.1.2.3" },
		"port name":  func(pf *v1alpha1.PortForward) { pf.Spec.Ports[0].Name = "pg" },
	}
	for name, m := range changes {
		if h := hash(m, "i-0123456789abcdef0"); h == base {
			t.Errorf("%s change kept pod hash %s", name, h)
		}
	}
	if h := hash(nil, "i-0000000000000000f"); h == base {
		t.Errorf("target change kept pod hash %s", h)
	}
}

func TestDesiredService(t *testing.T) {
	base := func() *corev1ac.ServiceApplyConfiguration {
		return corev1ac.Service("db", "apps").
			WithLabels(wantLabels()).
			WithOwnerReferences(wantOwner()).
			WithSpec(corev1ac.ServiceSpec().
				WithType(corev1.ServiceTypeClusterIP).
				WithSelector(wantSelector()).
				WithPorts(corev1ac.ServicePort().WithName("postgres").WithProtocol(corev1.ProtocolTCP).WithPort(5432).WithTargetPort(intstr.FromString("postgres"))))
	}
	tests := []struct {
		name   string
		mutate func(pf *v1alpha1.PortForward)
		want   func() *corev1ac.ServiceApplyConfiguration
	}{
		{name: "cluster IP", want: base},
		{
			name:   "headless",
			mutate: func(pf *v1alpha1.PortForward) { pf.Spec.Service.Type = v1alpha1.ServiceTypeHeadless },
			want:   func() *corev1ac.ServiceApplyConfiguration { s := base(); s.Spec.WithClusterIP("None"); return s },
		},
		{
			name: "user labels merged, operator keys win; annotations",
			mutate: func(pf *v1alpha1.PortForward) {
				pf.Spec.Service.Labels = map[string]string{"team": "a", "app.kubernetes.io/instance": "spoof"}
				pf.Spec.Service.Annotations = map[string]string{"note": "x"}
			},
			want: func() *corev1ac.ServiceApplyConfiguration {
				l := wantLabels()
				l["team"] = "a"
				s := base()
				s.Labels = l
				return s.WithAnnotations(map[string]string{"note": "x"})
			},
		},
		{
			name: "several ports map to the pod ports by name",
			mutate: func(pf *v1alpha1.PortForward) {
				pf.Spec.Ports = append(pf.Spec.Ports, v1alpha1.PortSpec{Name: "http", Port: 80, RemotePort: 8080})
			},
			want: func() *corev1ac.ServiceApplyConfiguration {
				s := base()
				s.Spec.WithPorts(corev1ac.ServicePort().WithName("http").WithProtocol(corev1.ProtocolTCP).WithPort(80).WithTargetPort(intstr.FromString("http")))
				return s
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pf := basePF()
			if tc.mutate != nil {
				tc.mutate(pf)
			}
			if diff := cmp.Diff(tc.want(), desiredService(pf)); diff != "" {
				t.Errorf("desiredService mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDesiredPDB(t *testing.T) {
	for _, tc := range []struct {
		replicas *int32
		want     bool
	}{{ptr.To[int32](0), false}, {ptr.To[int32](1), false}, {ptr.To[int32](2), true}, {nil, true}, {ptr.To[int32](20), true}} {
		pf := basePF()
		pf.Spec.Replicas = tc.replicas
		if got := wantPDB(pf); got != tc.want {
			t.Errorf("wantPDB(replicas=%v) = %v, want %v", ptr.Deref(tc.replicas, -1), got, tc.want)
		}
	}
	want := policyv1ac.PodDisruptionBudget("db", "apps").
		WithLabels(wantLabels()).
		WithOwnerReferences(wantOwner()).
		WithSpec(policyv1ac.PodDisruptionBudgetSpec().WithMinAvailable(intstr.FromInt32(1)).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(wantSelector())))
	if diff := cmp.Diff(want, desiredPDB(basePF())); diff != "" {
		t.Errorf("desiredPDB mismatch (-want +got):\n%s", diff)
	}
}

func TestDesiredNetworkPolicy(t *testing.T) {
	pf := basePF()
	if wantNetworkPolicy(pf, testOpts) {
		t.Fatal("wantNetworkPolicy without allowedClients = true")
	}
	pf.Spec.Ports = append(pf.Spec.Ports, v1alpha1.PortSpec{Name: "http", Port: 80, RemotePort: 8080})
	pf.Spec.AllowedClients = []v1alpha1.ClientPeer{
		{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}}},
		{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}},
			PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"web"}}}}},
	}
	if !wantNetworkPolicy(pf, testOpts) {
		t.Fatal("wantNetworkPolicy with allowedClients = false")
	}
	tcp := corev1.ProtocolTCP
	want := networkingv1ac.NetworkPolicy("db", "apps").
		WithLabels(wantLabels()).
		WithOwnerReferences(wantOwner()).
		WithSpec(networkingv1ac.NetworkPolicySpec().
			WithPodSelector(metav1ac.LabelSelector().WithMatchLabels(wantSelector())).
			WithPolicyTypes("Ingress").
			WithIngress(
				networkingv1ac.NetworkPolicyIngressRule().
					WithFrom(
						networkingv1ac.NetworkPolicyPeer().WithPodSelector(metav1ac.LabelSelector().WithMatchLabels(map[string]string{"app": "api"})),
						networkingv1ac.NetworkPolicyPeer().
							WithNamespaceSelector(metav1ac.LabelSelector().WithMatchLabels(map[string]string{"team": "a"})).
							WithPodSelector(metav1ac.LabelSelector().WithMatchExpressions(metav1ac.LabelSelectorRequirement().
								WithKey("tier").WithOperator(metav1.LabelSelectorOpIn).WithValues("web")))).
					WithPorts(
						networkingv1ac.NetworkPolicyPort().WithProtocol(tcp).WithPort(intstr.FromInt32(10000)),
						networkingv1ac.NetworkPolicyPort().WithProtocol(tcp).WithPort(intstr.FromInt32(10001))),
				networkingv1ac.NetworkPolicyIngressRule().WithPorts(networkingv1ac.NetworkPolicyPort().WithProtocol(tcp).WithPort(intstr.FromInt32(8080))),
				// The operator reads /readyz on the health port from its own namespace.
				networkingv1ac.NetworkPolicyIngressRule().
					WithPorts(networkingv1ac.NetworkPolicyPort().WithProtocol(tcp).WithPort(intstr.FromInt32(8081))).
					WithFrom(networkingv1ac.NetworkPolicyPeer().WithNamespaceSelector(metav1ac.LabelSelector().
						WithMatchLabels(map[string]string{"kubernetes.io/metadata.name": "ssmtunnel-system"}))),
			))
	opts := testOpts
	opts.OperatorNamespace = "ssmtunnel-system"
	if diff := cmp.Diff(want, desiredNetworkPolicy(pf, opts)); diff != "" {
		t.Errorf("desiredNetworkPolicy mismatch (-want +got):\n%s", diff)
	}
	// Without a known namespace, the health port is open to every peer, so the operator is never shut out.
	opts.OperatorNamespace = ""
	got := desiredNetworkPolicy(pf, opts).Spec.Ingress[2]
	if len(got.From) != 0 || *got.Ports[0].Port != intstr.FromInt32(8081) {
		t.Errorf("health-port rule without an operator namespace: %+v, want port 8081 from anywhere", got)
	}
}

// Without allowedClients, DefaultClientsNamespace admits only the PortForward's namespace, and
// MetricsFromNamespaces narrows the metrics port.
func TestDefaultNetworkPolicy(t *testing.T) {
	pf := basePF()
	opts := testOpts
	opts.DefaultClients, opts.MetricsFromNamespaces = DefaultClientsNamespace, []string{"monitoring"}
	if !wantNetworkPolicy(pf, opts) {
		t.Fatal("wantNetworkPolicy under DefaultClientsNamespace = false")
	}
	np := desiredNetworkPolicy(pf, opts)
	clients, metrics := np.Spec.Ingress[0], np.Spec.Ingress[1]
	if len(clients.From) != 1 || clients.From[0].PodSelector == nil || len(clients.From[0].PodSelector.MatchLabels) != 0 ||
		clients.From[0].NamespaceSelector != nil || *clients.Ports[0].Port != intstr.FromInt32(10000) {
		t.Errorf("clients rule %+v, want port 10000 from every pod of the namespace only", clients)
	}
	if len(metrics.From) != 1 || metrics.From[0].NamespaceSelector == nil ||
		metrics.From[0].NamespaceSelector.MatchExpressions[0].Values[0] != "monitoring" || *metrics.Ports[0].Port != intstr.FromInt32(8080) {
		t.Errorf("metrics rule %+v, want port 8080 from namespace monitoring only", metrics)
	}
	opts.DefaultClients = DefaultClientsAll
	if np := desiredNetworkPolicy(pf, opts); len(np.Spec.Ingress[0].From) != 0 {
		t.Errorf("clients rule %+v under DefaultClientsAll, want every source (only metrics is narrowed)", np.Spec.Ingress[0])
	}
}

func TestDesiredServiceAccount(t *testing.T) {
	l := map[string]string{"app.kubernetes.io/name": "ssmtunnel", "app.kubernetes.io/component": "tunnel", "app.kubernetes.io/managed-by": "ssmtunnel-operator"}
	if diff := cmp.Diff(corev1ac.ServiceAccount("ssmtunnel-tunnel", "apps").WithLabels(l).WithAutomountServiceAccountToken(false),
		desiredServiceAccount("apps", testOpts)); diff != "" {
		t.Errorf("without annotations (-want +got):\n%s", diff)
	}
	opts := testOpts
	opts.ServiceAccountAnnotations = map[string]string{"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/t"}
	want := corev1ac.ServiceAccount("ssmtunnel-tunnel", "apps").WithLabels(l).WithAutomountServiceAccountToken(false).
		WithAnnotations(map[string]string{"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/t"})
	if diff := cmp.Diff(want, desiredServiceAccount("apps", opts)); diff != "" {
		t.Errorf("with annotations (-want +got):\n%s", diff)
	}
	// A role per namespace.
	opts.ServiceAccountAnnotations = map[string]string{"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/tunnel-{namespace}"}
	if got := desiredServiceAccount("team-a", opts).Annotations["eks.amazonaws.com/role-arn"]; got != "arn:aws:iam::123456789012:role/tunnel-team-a" {
		t.Errorf("templated role annotation = %q, want the namespace's role", got)
	}
}

func TestAddressesAndPortSummary(t *testing.T) {
	pf := basePF()
	pf.Spec.Ports = append(pf.Spec.Ports, v1alpha1.PortSpec{Name: "http", Port: 80, RemotePort: 8080})
	if diff := cmp.Diff([]string{"db.apps.svc:5432", "db.apps.svc:80"}, addresses(pf)); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	if got, want := portSummary(pf), "5432:5432,80:8080"; got != want {
		t.Errorf("portSummary = %q, want %q", got, want)
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := (Options{}).WithDefaults().Validate(); err == nil {
		t.Error("Validate without a tunnel image = nil, want an error")
	}
	if err := testOpts.Validate(); err != nil {
		t.Errorf("Validate(testOpts) = %v", err)
	}
	bad := testOpts
	bad.ResolveInterval = time.Millisecond
	if err := bad.Validate(); err == nil {
		t.Error("Validate with a 1ms resolve interval = nil, want an error")
	}
}

func TestPickInstance(t *testing.T) {
	for _, tc := range []struct {
		current string
		online  []string
		want    string
	}{
		{"", nil, ""},
		{"i-2", nil, ""},
		{"", []string{"i-1", "i-2"}, "i-1"},
		{"i-2", []string{"i-1", "i-2"}, "i-2"}, // sticky while online
		{"i-3", []string{"i-1", "i-2"}, "i-1"}, // failover
	} {
		if got := pickInstance(tc.current, tc.online); got != tc.want {
			t.Errorf("pickInstance(%q, %v) = %q, want %q", tc.current, tc.online, got, tc.want)
		}
	}
}

// withArg sets flag's value in args, or removes the flag when value is empty.
func withArg(args []string, flag, value string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		if args[i] == flag && i+1 < len(args) {
			if value != "" {
				out = append(out, flag, value)
			}
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

func TestMaxConnections(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(*v1alpha1.PortForward)
		want int32
	}{
		{name: "default limit, one port", want: 2048},
		{name: "explicit", mut: func(pf *v1alpha1.PortForward) { pf.Spec.MaxConnections = ptr.To[int32](10) }, want: 10},
		{name: "larger limit", mut: func(pf *v1alpha1.PortForward) {
			pf.Spec.PodTemplate.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}
		}, want: 16384},
		{name: "tiny limit keeps a floor", mut: func(pf *v1alpha1.PortForward) {
			pf.Spec.PodTemplate.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("2Mi")}}
		}, want: 64},
		{name: "no memory limit: unlimited", mut: func(pf *v1alpha1.PortForward) {
			pf.Spec.PodTemplate.Resources = &corev1.ResourceRequirements{}
		}, want: 0},
	} {
		pf := basePF()
		if tc.mut != nil {
			tc.mut(pf)
		}
		if got := maxConnections(pf); got != tc.want {
			t.Errorf("%s: maxConnections = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// The pod's grace period covers what a tunnel does after SIGTERM: the preStop delay, the drain, then
// ending its sessions and resetting what is left (portforward.MaxShutdownAfterDrain).
func TestGracePeriodCoversTunnelShutdown(t *testing.T) {
	if terminationMargin < portforward.MaxShutdownAfterDrain {
		t.Fatalf("terminationMargin %s < the tunnel's shutdown after the drain %s", terminationMargin, portforward.MaxShutdownAfterDrain)
	}
	opts := testOpts
	opts.DrainTimeout = 45 * time.Second
	d := desiredDeployment(basePF(), "i-0123456789abcdef0", opts)
	grace := time.Duration(*d.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	if need := preStopDelay + opts.DrainTimeout + portforward.MaxShutdownAfterDrain; grace < need {
		t.Errorf("terminationGracePeriodSeconds %s < preStop %s + drain %s + shutdown %s", grace, preStopDelay, opts.DrainTimeout, portforward.MaxShutdownAfterDrain)
	}
	args := d.Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, "45s") {
		t.Errorf("the tunnel's --drain-timeout does not match the grace period's drain: %v", args)
	}
}
