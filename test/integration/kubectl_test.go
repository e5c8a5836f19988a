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
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
)

// TestPrinterColumns checks the table the API server serves for `kubectl get pf -o wide` (the printer
// columns of the CRD) and prints it; with kubectl in KUBEBUILDER_ASSETS it also runs `kubectl get pf -o wide`
// and `kubectl explain portforward.spec` against the envtest server and prints their output.
func TestPrinterColumns(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, ns, testOptions(), nil)
	for _, pf := range []*v1alpha1.PortForward{
		newPF(ns, "postgres", nil),
		newPF(ns, "intranet", func(pf *v1alpha1.PortForward) {
			pf.Spec.Target.InstanceID = "mi-0123456789abcdef0"
			pf.Spec.RemoteHost = "intranet.corp.example"
			pf.Spec.Replicas = ptr.To[int32](1)
			pf.Spec.Ports = []v1alpha1.PortSpec{{Name: "http", Port: 80, RemotePort: 8080}, {Name: "https", Port: 443, RemotePort: 8443}}
		}),
	} {
		if err := k8sClient.Create(ctx, pf); err != nil {
			t.Fatalf("create: %v", err)
		}
	}
	setDeploymentStatusWhenCreated := func(name string, n int32) {
		eventually(t, 20*time.Second, "Deployment "+name, func() error { return k8sClient.Get(ctx, key(ns, name), &appsv1.Deployment{}) })
		setDeploymentStatus(t, ns, name, n, n, n)
	}
	setDeploymentStatusWhenCreated("postgres", 2)
	setDeploymentStatusWhenCreated("intranet", 1)
	waitConditions(t, ns, "postgres", "True/Available", "False/RolledOut", "False/AsExpected", "2/2")
	waitConditions(t, ns, "intranet", "True/Available", "False/RolledOut", "False/AsExpected", "1/1")

	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := cs.RESTClient().Get().AbsPath("/apis/ssmtunnel.io/v1alpha1/namespaces", ns, "portforwards").
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(ctx)
	if err != nil {
		t.Fatalf("get table: %v", err)
	}
	var table metav1.Table
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatal(err)
	}
	var headers []string
	for _, c := range table.ColumnDefinitions {
		headers = append(headers, strings.ToUpper(c.Name))
	}
	if want := []string{"NAME", "TARGET", "PORTS", "READY", "STATUS", "AGE", "REMOTE-HOST", "ADDRESS", "MESSAGE"}; !slices.Equal(headers, want) {
		t.Errorf("columns %v, want %v", headers, want)
	}
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 8, 3, ' ', 0)
	fmt.Fprintln(w, strings.Join(headers, "\t"))
	rows := map[string][]string{}
	for _, r := range table.Rows {
		cells := make([]string, len(r.Cells))
		for i, c := range r.Cells {
			cells[i] = "<none>"
			if c != nil {
				cells[i] = fmt.Sprint(c)
			}
		}
		rows[cells[0]] = cells
		fmt.Fprintln(w, strings.Join(cells, "\t"))
	}
	_ = w.Flush()
	t.Logf("API server table for `kubectl get pf -o wide`:\n%s", b.String())
	if got := rows["intranet"]; len(got) != 9 || got[1] != "mi-0123456789abcdef0" || got[2] != "80:8080,443:8443" || got[3] != "1/1" ||
		got[4] != "Available" || got[6] != "intranet.corp.example" || !strings.Contains(got[7], "intranet."+ns+".svc:443") || got[8] == "<none>" || got[8] == "" {
		t.Errorf("intranet row %q", got)
	}

	kubectl := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		t.Logf("no kubectl at %s: only the API server table is checked", kubectl)
		return
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, testEnv.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		out, err := exec.Command(kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %v: %v\n%s", args, err, out)
		}
		t.Logf("$ kubectl %s\n%s", strings.Join(args, " "), out)
		return string(out)
	}
	if out := run("get", "pf", "-o", "wide", "-n", ns); !strings.Contains(out, "REMOTE-HOST") || !strings.Contains(out, "intranet.corp.example") {
		t.Errorf("kubectl get pf -o wide lacks the wide columns")
	}
	if out := run("explain", "portforward.spec"); !strings.Contains(out, "instanceID") && !strings.Contains(out, "target") {
		t.Errorf("kubectl explain lacks the target field")
	}
}
