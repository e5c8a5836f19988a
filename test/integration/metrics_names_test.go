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

// The chart's dashboard and alerts query metric names as strings; nothing but this test ties them to the
// metrics the code exports. It scrapes the real /metrics of a running tunnel (a Forwarder against the
// emulator, served by promhttp as the ssmtunnel CLI serves it) and of the operator (controller-runtime's
// registry after a reconcile), and fails on any queried name neither exports.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	"github.com/ssmtunnel/ssmtunnel/internal/testutil"
	"github.com/ssmtunnel/ssmtunnel/internal/testutil/emutest"
	"github.com/ssmtunnel/ssmtunnel/internal/tunnelmetrics"
	"github.com/ssmtunnel/ssmtunnel/tunnel/emulator"
	"github.com/ssmtunnel/ssmtunnel/tunnel/portforward"
	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

var metricName = regexp.MustCompile(`ssmtunnel_[a-z_]+`)

// queriedNames returns the ssmtunnel_ metric names in the PromQL of the chart's dashboard (panel queries and
// variable queries) and alert rules, each mapped to where it is used.
func queriedNames(t *testing.T) map[string][]string {
	t.Helper()
	chart := filepath.Join("..", "..", "charts", "ssmtunnel")
	used := map[string][]string{}
	add := func(where, promql string) {
		for _, n := range metricName.FindAllString(promql, -1) {
			used[n] = append(used[n], where)
		}
	}

	b, err := os.ReadFile(filepath.Join(chart, "dashboards", "ssmtunnel.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboards/ssmtunnel.json: %v", err)
	}
	dashNames := 0
	for _, v := range dash.Templating.List {
		add("dashboard variable "+v.Name, v.Definition)
	}
	for _, p := range dash.Panels {
		for _, q := range p.Targets {
			dashNames += len(metricName.FindAllString(q.Expr, -1))
			add("dashboard panel "+p.Title, q.Expr)
		}
	}

	b, err = os.ReadFile(filepath.Join(chart, "alerts", "ssmtunnel-alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
				Expr  string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("alerts/ssmtunnel-alerts.yaml: %v", err)
	}
	ruleNames := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			ruleNames += len(metricName.FindAllString(r.Expr, -1))
			add("alert "+r.Alert, r.Expr)
		}
	}
	// A guard against a parse that silently finds nothing (a renamed field, an emptied file).
	if dashNames == 0 || ruleNames == 0 {
		t.Fatalf("found %d metric names in dashboard panels and %d in alert rules: both must query ssmtunnel_ metrics", dashNames, ruleNames)
	}
	return used
}

// scrape GETs url and returns the names of the samples in the text exposition, plus the base name of every
// histogram (whose samples are <base>_bucket, _sum and _count).
func scrape(t *testing.T, url string, names map[string]bool) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %d %v", url, resp.StatusCode, err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" && f[3] == "histogram" {
			names[f[2]] = true
		}
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return string(body)
}

// serveCollector serves the tunnel collector of fwd alone on a fresh registry, as the tunnel's --metrics-addr
// does.
func serveCollector(t *testing.T, fwd *portforward.Forwarder) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(tunnelmetrics.NewCollector(fwd))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	return srv.URL + "/metrics"
}

// startForwarder runs a Forwarder of one port to target like a tunnel pod (--retry-start, eager).
func startForwarder(t *testing.T, emu *emulator.Emulator, target string, remote int) *portforward.Forwarder {
	t.Helper()
	client, err := session.NewClient(session.ClientConfig{API: testutil.SSMClient(emu.Endpoint())})
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := portforward.New(portforward.Config{Target: target, Ports: []portforward.PortPair{{Remote: remote}},
		Sessions: 2, RetryStart: true}, client)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fwd.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-fwd.Started():
	case err := <-done:
		t.Fatalf("forwarder: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("forwarder did not start within 30 s")
	}
	return fwd
}

func TestMetricNames(t *testing.T) {
	used := queriedNames(t)
	exported := map[string]bool{}

	// A tunnel with a ready session carries one connection, so the connect-latency histogram has samples.
	emu := emutest.Start(t, emulator.Config{Instances: []emulator.Instance{
		{ID: onlineInstance}, {ID: offlineInstance, PingStatus: emulator.PingConnectionLost}}})
	echo := testutil.EchoServer(t)
	fwd := startForwarder(t, emu, onlineInstance, testutil.Port(echo))
	testutil.WaitFor(t, "the tunnel to be ready", 30*time.Second, func() bool { return fwd.Ready() == nil })
	c, err := net.DialTimeout("tcp", fwd.Addrs()[0].String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 5)); err != nil {
		t.Fatalf("echo through the tunnel: %v", err)
	}
	c.Close()
	tunnelURL := serveCollector(t, fwd)
	testutil.WaitFor(t, "the connection to end", 10*time.Second, func() bool {
		return strings.Contains(scrape(t, tunnelURL, exported), `ssmtunnel_connect_duration_seconds_count{port=`)
	})

	// A tunnel whose instance is offline reports why it has no session (ssmtunnel_port_last_error).
	offline := startForwarder(t, emu, offlineInstance, testutil.Port(echo))
	offlineURL := serveCollector(t, offline)
	testutil.WaitFor(t, "ssmtunnel_port_last_error of the offline tunnel", 30*time.Second, func() bool {
		return strings.Contains(scrape(t, offlineURL, exported), "ssmtunnel_port_last_error{")
	})

	// The operator: controller-runtime's registry, which the manager's metrics server serves, after it
	// reconciled a PortForward.
	ns := newNamespace(t)
	startManager(t, ns, testOptions(), nil)
	createPF(t, ns, "metrics", onlineInstance, nil)
	setDeploymentStatus(t, ns, "metrics", 1, 1, 1)
	operator := httptest.NewServer(promhttp.HandlerFor(ctrlmetrics.Registry, promhttp.HandlerOpts{}))
	t.Cleanup(operator.Close)
	series := fmt.Sprintf(`namespace=%q,portforward="metrics"`, ns)
	var body string
	eventually(t, 30*time.Second, "the PortForward's series", func() error {
		body = scrape(t, operator.URL+"/metrics", exported)
		for _, n := range []string{"ssmtunnel_portforward_ready", "ssmtunnel_portforward_condition", "ssmtunnel_portforward_replicas", "ssmtunnel_portforward_ready_replicas"} {
			if !regexp.MustCompile(`(?m)^` + n + `\{[^}]*` + regexp.QuoteMeta(series)).MatchString(body) {
				return fmt.Errorf("no %s{%s}", n, series)
			}
		}
		return nil
	})
	var pfSeries []string
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, "ssmtunnel_portforward_") && strings.Contains(line, series) {
			pfSeries = append(pfSeries, strings.TrimSpace(line))
		}
	}
	t.Logf("the operator's series of PortForward %s/metrics:\n  %s", ns, strings.Join(pfSeries, "\n  "))

	var missing []string
	for n, where := range used {
		if !exported[n] {
			sort.Strings(where)
			missing = append(missing, fmt.Sprintf("%s (used by %s)", n, strings.Join(where, ", ")))
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("the dashboard or the alerts query metrics that neither a tunnel nor the operator exports:\n  %s",
			strings.Join(missing, "\n  "))
	}
	var names []string
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("%d metric names queried, all exported: %s", len(names), strings.Join(names, " "))
}
