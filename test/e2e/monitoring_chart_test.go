//go:build chart

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

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/ssmtunnel/ssmtunnel/controllers"
)

// monitoringAPIs are the helm template flags of a cluster with the Prometheus Operator's CRDs.
var monitoringAPIs = []string{
	"--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
	"--api-versions", "monitoring.coreos.com/v1/PodMonitor",
	"--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
}

// The parts of the Prometheus Operator's objects the chart renders (the module is not a dependency).
type relabel struct {
	SourceLabels []string `json:"sourceLabels"`
	Regex        string   `json:"regex"`
	TargetLabel  string   `json:"targetLabel"`
	Replacement  string   `json:"replacement"`
	Action       string   `json:"action"`
}

type podMonitor struct {
	Metadata struct {
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		NamespaceSelector struct {
			Any        bool     `json:"any"`
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		PodMetricsEndpoints []struct {
			Port        string    `json:"port"`
			Path        string    `json:"path"`
			Scheme      string    `json:"scheme"`
			Interval    string    `json:"interval"`
			Relabelings []relabel `json:"relabelings"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

type serviceMonitor struct {
	Spec struct {
		Endpoints []struct {
			MetricRelabelings []relabel `json:"metricRelabelings"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type ruleGroups struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	} `json:"groups"`
}

type rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type prometheusRule struct {
	Metadata struct {
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec ruleGroups `json:"spec"`
}

type configMap struct {
	Metadata struct {
		Namespace   string            `json:"namespace"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Data map[string]string `json:"data"`
}

// dashboard is the part of a Grafana dashboard the checks read.
type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Type    string `json:"type"`
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func readAlertFile(t *testing.T) ruleGroups {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir(t), "alerts", "ssmtunnel-alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var g ruleGroups
	if err := yaml.UnmarshalStrict(b, &g); err != nil {
		t.Fatalf("alerts/ssmtunnel-alerts.yaml: %v", err)
	}
	return g
}

// TestChartMonitoringDefaults renders ci/monitoring-values.yaml: the PodMonitor selects exactly the tunnel
// pods the operator labels and gives their series namespace, portforward and pod; the dashboard ConfigMap
// carries the sidecar label and valid JSON; the PrometheusRule holds every alert of the chart's rule file.
func TestChartMonitoringDefaults(t *testing.T) {
	objs := render(t, append([]string{"-f", filepath.Join(chartDir(t), "ci", "monitoring-values.yaml")}, monitoringAPIs...)...)

	var pm podMonitor
	find(t, objs, "PodMonitor", "ssmtunnel-tunnels").into(t, &pm)
	want := map[string]string{
		controllers.LabelName:      controllers.LabelNameValue,
		controllers.LabelComponent: controllers.LabelComponentValue,
		controllers.LabelManagedBy: controllers.ManagedByValue,
	}
	if d := cmp.Diff(want, pm.Spec.Selector.MatchLabels); d != "" {
		t.Errorf("PodMonitor selector is not the tunnel pods' labels (-want +got):\n%s", d)
	}
	if !pm.Spec.NamespaceSelector.Any || len(pm.Spec.NamespaceSelector.MatchNames) > 0 {
		t.Errorf("PodMonitor namespaceSelector = %+v, want any: true without watchNamespaces", pm.Spec.NamespaceSelector)
	}
	if pm.Metadata.Namespace != "ssmtunnel-system" {
		t.Errorf("PodMonitor namespace %q, want the release namespace", pm.Metadata.Namespace)
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("PodMonitor has %d endpoints, want 1", len(pm.Spec.PodMetricsEndpoints))
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	if ep.Port != "metrics" || ep.Path != "/metrics" || ep.Scheme != "http" {
		t.Errorf("PodMonitor endpoint %s %s %s, want the tunnel container's plain-HTTP port metrics, /metrics", ep.Port, ep.Scheme, ep.Path)
	}
	instanceMeta := "__meta_kubernetes_pod_label_" + strings.NewReplacer(".", "_", "/", "_", "-", "_").Replace(controllers.LabelInstance)
	targets := map[string]string{}
	for _, r := range ep.Relabelings {
		if len(r.SourceLabels) == 1 && (r.Action == "" || r.Action == "replace") {
			targets[r.TargetLabel] = r.SourceLabels[0]
		}
	}
	if d := cmp.Diff(map[string]string{
		"namespace":   "__meta_kubernetes_namespace",
		"portforward": instanceMeta,
		"pod":         "__meta_kubernetes_pod_name",
	}, targets); d != "" {
		t.Errorf("PodMonitor relabelings (-want +got):\n%s", d)
	}

	var sm serviceMonitor
	find(t, objs, "ServiceMonitor", "").into(t, &sm)
	if len(sm.Spec.Endpoints) != 1 || !slices.ContainsFunc(sm.Spec.Endpoints[0].MetricRelabelings, func(r relabel) bool {
		return slices.Equal(r.SourceLabels, []string{"exported_namespace"}) && r.TargetLabel == "namespace"
	}) {
		t.Errorf("ServiceMonitor does not give the per-PortForward series back their namespace label: %+v", sm.Spec.Endpoints)
	}

	var cm configMap
	find(t, objs, "ConfigMap", "ssmtunnel-dashboard").into(t, &cm)
	if cm.Metadata.Labels["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap labels %v, want grafana_dashboard: \"1\"", cm.Metadata.Labels)
	}
	file, err := os.ReadFile(filepath.Join(chartDir(t), "dashboards", "ssmtunnel.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cm.Data["ssmtunnel.json"]; got != strings.TrimSpace(string(file)) {
		t.Errorf("ConfigMap ssmtunnel.json differs from dashboards/ssmtunnel.json")
	}
	var dash dashboard
	if err := json.Unmarshal([]byte(cm.Data["ssmtunnel.json"]), &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var vars []string
	for _, v := range dash.Templating.List {
		vars = append(vars, v.Name)
	}
	if d := cmp.Diff([]string{"datasource", "namespace", "portforward"}, vars); d != "" {
		t.Errorf("dashboard variables (-want +got):\n%s", d)
	}
	panels := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		panels++
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if !strings.Contains(q.Expr, `namespace=~"$namespace"`) || !strings.Contains(q.Expr, `portforward=~"$portforward"`) {
				t.Errorf("panel %q query ignores the namespace or portforward variable: %s", p.Title, q.Expr)
			}
		}
	}
	if panels < 10 {
		t.Errorf("dashboard has %d panels, want the 10+ of the chart README's sketch", panels)
	}

	var pr prometheusRule
	find(t, objs, "PrometheusRule", "").into(t, &pr)
	if d := cmp.Diff(readAlertFile(t), pr.Spec); d != "" {
		t.Errorf("PrometheusRule differs from alerts/ssmtunnel-alerts.yaml with default values (-file +rendered):\n%s", d)
	}
	n := 0
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || r.Expr == "" || r.For == "" || r.Labels["severity"] == "" {
				t.Errorf("rule %+v lacks alert, expr, for or a severity label", r)
			}
			for _, a := range []string{"summary", "description"} {
				if !strings.Contains(r.Annotations[a], "$labels.namespace") || !strings.Contains(r.Annotations[a], "$labels.portforward") &&
					!strings.Contains(r.Annotations[a], "$labels.pod") {
					t.Errorf("%s: the %s annotation does not name the namespace and the PortForward (or pod): %q", r.Alert, a, r.Annotations[a])
				}
			}
			if !strings.Contains(readme(t), "### "+r.Alert) {
				t.Errorf("%s has no runbook section (### %s) in the chart README", r.Alert, r.Alert)
			}
		}
	}
	if n < 5 {
		t.Errorf("%d alerts, want at least 5", n)
	}
}

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestChartMonitoringFullValues renders the non-default monitoring values of ci/full-values.yaml.
func TestChartMonitoringFullValues(t *testing.T) {
	objs := render(t, append([]string{"-f", filepath.Join(chartDir(t), "ci", "full-values.yaml")}, monitoringAPIs...)...)

	var pm podMonitor
	find(t, objs, "PodMonitor", "").into(t, &pm)
	if pm.Metadata.Namespace != "monitoring" || pm.Metadata.Labels["release"] != "prometheus" {
		t.Errorf("PodMonitor namespace %q labels %v, want monitoring and release: prometheus", pm.Metadata.Namespace, pm.Metadata.Labels)
	}
	if pm.Spec.NamespaceSelector.Any || !slices.Equal(pm.Spec.NamespaceSelector.MatchNames, []string{"team-a"}) {
		t.Errorf("PodMonitor namespaceSelector %+v, want matchNames [team-a]", pm.Spec.NamespaceSelector)
	}
	if ep := pm.Spec.PodMetricsEndpoints[0]; ep.Interval != "15s" {
		t.Errorf("PodMonitor interval %q, want 15s", ep.Interval)
	}

	var cm configMap
	find(t, objs, "ConfigMap", "").into(t, &cm)
	if cm.Metadata.Namespace != "grafana" || cm.Metadata.Labels["example.com/dashboard"] != "ssmtunnel" ||
		cm.Metadata.Labels["team"] != "platform" || cm.Metadata.Annotations["grafana_folder"] != "Platform" {
		t.Errorf("dashboard ConfigMap %+v, want namespace grafana, labels example.com/dashboard: ssmtunnel and team, folder annotation", cm.Metadata)
	}
	if _, ok := cm.Metadata.Labels["grafana_dashboard"]; ok {
		t.Error("dashboard ConfigMap keeps the default sidecar label beside labelKey")
	}

	var pr prometheusRule
	find(t, objs, "PrometheusRule", "").into(t, &pr)
	if pr.Metadata.Namespace != "monitoring" || pr.Metadata.Labels["release"] != "prometheus" {
		t.Errorf("PrometheusRule namespace %q labels %v", pr.Metadata.Namespace, pr.Metadata.Labels)
	}
	file := map[string]rule{}
	for _, g := range readAlertFile(t).Groups {
		for _, r := range g.Rules {
			file[r.Alert] = r
		}
	}
	seen := 0
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			seen++
			if r.Alert == "SSMTunnelResumeStorm" {
				t.Error("disabledAlerts: SSMTunnelResumeStorm still rendered")
			}
			if r.Labels["team"] != "platform" || r.Labels["severity"] != file[r.Alert].Labels["severity"] {
				t.Errorf("%s labels %v: want team: platform added and the rule's own severity %q kept", r.Alert, r.Labels, file[r.Alert].Labels["severity"])
			}
			if want := "https://wiki.example.com/ssmtunnel/runbook#" + strings.ToLower(r.Alert); r.Annotations["runbook_url"] != want {
				t.Errorf("%s runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
			}
		}
	}
	if seen != len(file)-1 {
		t.Errorf("%d alerts rendered, want the file's %d less the disabled one", seen, len(file))
	}
}
