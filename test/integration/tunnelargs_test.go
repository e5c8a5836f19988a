//go:build integration

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

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
	"github.com/ssmtunnel/ssmtunnel/internal/testutil/hostsamples"
)

// specSample is a generated sample of PortForward specs around every rule the API and the tunnel share:
// edge lengths and forms of instance IDs, remote hosts, documents, regions, role ARNs, ports and sizes.
// Some are meant to be refused by the API server; the test only needs that none it accepts is refused by
// the tunnel.
func specSample() map[string]func(pf *v1alpha1.PortForward) {
	s := map[string]func(pf *v1alpha1.PortForward){}
	for _, id := range []string{"i-01234567", "i-0123456789abcdef0", "mi-0123456789abcdef0", "i-0123456789", "i-fffffffff"} {
		s["instance "+id] = func(pf *v1alpha1.PortForward) { pf.Spec.Target.InstanceID = id }
	}
	hosts := []string{"a-b.c-d.e", "255.255.255.255", strings.Repeat("a", 63) + "." + strings.Repeat("b", 63),
		strings.Repeat("a.", 126) + "a", "db_1.internal", "-db", "db-"}
	hosts = append(append(hosts, hostsamples.Allowed...), hostsamples.Denied...)
	for _, h := range hosts {
		s["remote host "+h] = func(pf *v1alpha1.PortForward) { pf.Spec.RemoteHost = h }
	}
	docs := []string{"abc", "ab", "AWS-StartPortForwardingSession", "AWS-StartPortForwardingSessionToRemoteHost",
		"arn:aws:ssm:eu-west-1:123456789012:document/My_Doc-1.0", strings.Repeat("d", 128), strings.Repeat("d", 129), "doc name",
		"AWS-StartSSHSession", "arn:aws:ssm:eu-west-1::document/AWS-StartInteractiveCommand", "arn:aws:ssm:eu-west-1::document/AWS-StartPortForwardingSession"}
	for _, d := range docs {
		s["document "+d] = func(pf *v1alpha1.PortForward) { pf.Spec.DocumentName = d }
	}
	for _, r := range []string{"eu-west-1", "us-gov-west-1", "cn-north-1", "us-isob-east-1", "ap-southeast-3", "eu-west1", "local"} {
		s["region "+r] = func(pf *v1alpha1.PortForward) { pf.Spec.Region = r }
	}
	for _, a := range []string{"arn:aws:iam::123456789012:role/a", "arn:aws-cn:iam::123456789012:role/path/x+y=z,@.", "arn:aws-us-gov:iam::123456789012:role/r",
		"arn:aws:iam::12345678901:role/short-account", "arn:aws:iam::123456789012:user/not-a-role"} {
		s["role "+a] = func(pf *v1alpha1.PortForward) { pf.Spec.RoleARN = a }
	}
	for _, p := range [][2]int32{{1, 1}, {65535, 65535}, {80, 0}, {80, 65536}} {
		s[fmt.Sprintf("port %d remote %d", p[0], p[1])] = func(pf *v1alpha1.PortForward) {
			pf.Spec.Ports = []v1alpha1.PortSpec{{Name: "p", Port: p[0], RemotePort: p[1]}}
		}
	}
	s["sixteen ports"] = func(pf *v1alpha1.PortForward) {
		pf.Spec.Ports = nil
		for i := range int32(16) {
			pf.Spec.Ports = append(pf.Spec.Ports, v1alpha1.PortSpec{Name: fmt.Sprintf("p%d", i), Port: 1000 + i, RemotePort: 2000 + i})
		}
	}
	for _, n := range []int32{1, 8, 9} {
		s[fmt.Sprintf("sessions %d", n)] = func(pf *v1alpha1.PortForward) { pf.Spec.SessionsPerReplica = ptr.To(n) }
	}
	for _, n := range []int32{1, 1_000_000} {
		s[fmt.Sprintf("max connections %d", n)] = func(pf *v1alpha1.PortForward) { pf.Spec.MaxConnections = ptr.To(n) }
	}
	for _, p := range []int32{5, 3600} {
		s[fmt.Sprintf("probe every %ds", p)] = func(pf *v1alpha1.PortForward) {
			pf.Spec.DestinationProbe = &v1alpha1.DestinationProbe{PeriodSeconds: p}
		}
	}
	for _, m := range []string{"8Mi", "48Mi", "16Gi"} {
		s["memory limit "+m] = func(pf *v1alpha1.PortForward) {
			pf.Spec.SessionsPerReplica = ptr.To[int32](8)
			pf.Spec.PodTemplate.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(m)}}
		}
	}
	s["remote host with its document"] = func(pf *v1alpha1.PortForward) {
		pf.Spec.RemoteHost, pf.Spec.DocumentName = "db.internal", "AWS-StartPortForwardingSessionToRemoteHost"
	}
	return s
}

// TestSpecsTheAPIAcceptsRunInTheTunnel: every spec of the sample the API server accepts becomes tunnel
// arguments (through the operator's real reconcile) that the tunnel binary itself accepts (forward
// --dry-run): a tunnel pod never crash-loops on its arguments.
func TestSpecsTheAPIAcceptsRunInTheTunnel(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "ssmtunnel")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/ssmtunnel")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the tunnel: %v\n%s", err, out)
	}
	ns := newNamespace(t)
	startManager(t, ns, testOptions(), nil)

	accepted := map[string]string{} // PortForward name -> case
	i := 0
	for name, mutate := range specSample() {
		i++
		pfName := fmt.Sprintf("s%d", i)
		err := k8sClient.Create(ctx, newPF(ns, pfName, mutate))
		if err != nil {
			t.Logf("refused by the API server: %s: %v", name, firstLine(err.Error()))
			continue
		}
		accepted[pfName] = name
	}
	if len(accepted) < 30 {
		t.Fatalf("only %d specs of the sample were accepted: the sample no longer exercises the rules", len(accepted))
	}
	for pfName, name := range accepted {
		var args []string
		eventually(t, 30*time.Second, "the Deployment of "+name, func() error {
			d := &appsv1.Deployment{}
			if err := k8sClient.Get(ctx, key(ns, pfName), d); err != nil {
				return err
			}
			args = d.Spec.Template.Spec.Containers[0].Args
			return nil
		})
		cmd := exec.Command(bin, append(args, "--dry-run")...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: the API server accepted it, the tunnel refuses its arguments %q: %v\n%s", name, args, err, out)
		}
	}
	t.Logf("%d specs accepted by the API server, each accepted by the tunnel", len(accepted))
}

// TestDeniedRemoteHostsRefused: the API server refuses every metadata, credential and loopback host in every
// notation, with a message that says what is wrong, as the tunnel does (session.CheckRemoteHost).
func TestDeniedRemoteHostsRefused(t *testing.T) {
	ns := newNamespace(t)
	for i, h := range hostsamples.Denied {
		pf := newPF(ns, fmt.Sprintf("d%d", i), func(pf *v1alpha1.PortForward) { pf.Spec.RemoteHost = h })
		err := k8sClient.Create(ctx, pf, client.DryRunAll)
		if err == nil {
			t.Errorf("remoteHost %q: accepted by the API server, want refused", h)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "remoteHost must") {
			t.Errorf("remoteHost %q: refused with %q, want a remoteHost rule's message", h, firstLine(msg))
		}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
