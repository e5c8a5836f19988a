//go:build e2e

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
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
)

// emulatorAdmin calls the emulator pod's admin endpoint (/emulator/...) through `kubectl port-forward` on
// loopback and decodes the JSON answer into out (may be nil).
func (s *suite) emulatorAdmin(ctx context.Context, t testing.TB, method, path, body string, out any) {
	t.Helper()
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := execIn(pctx, "", nil, s.e.kubectl(), "--kubeconfig", s.e.kubeconfig, "-n", nsAWS, "port-forward",
		"--address", "127.0.0.1", "svc/"+emulator, ":4566")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("kubectl port-forward: %v", err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	addr := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`Forwarding from (127\.0\.0\.1:\d+)`)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
		close(addr)
	}()
	var local string
	select {
	case a, ok := <-addr:
		if !ok {
			t.Fatalf("kubectl port-forward to the emulator ended: %s", stderr.String())
		}
		local = a
	case <-time.After(time.Minute):
		t.Fatalf("kubectl port-forward to the emulator printed no address: %s", stderr.String())
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+local+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

type emulatorStats struct {
	Sessions []struct {
		ID     string `json:"ID"`
		Ended  bool   `json:"Ended"`
		Output string `json:"Output"`
	} `json:"sessions"`
}

func (s *suite) idleClosedSessions(ctx context.Context, t testing.TB) int {
	var st emulatorStats
	s.emulatorAdmin(ctx, t, http.MethodGet, "/emulator/stats", "", &st)
	n := 0
	for _, ss := range st.Sessions {
		if ss.Ended && strings.Contains(ss.Output, "inactivity") {
			n++
		}
	}
	return n
}

func (s *suite) tunnelRestarts(ctx context.Context, t testing.TB) (int32, int) {
	var pods corev1.PodList
	if err := s.k.c.List(ctx, &pods, client.InNamespace(nsApps), client.MatchingLabels(tunnelLabels(pfName))); err != nil {
		t.Fatal(err)
	}
	var n int32
	for _, p := range pods.Items {
		for _, cs := range p.Status.ContainerStatuses {
			n += cs.RestartCount
		}
	}
	return n, len(pods.Items)
}

// idleTimeout: the service ends idle sessions (here after 20 s, as the real one does after 20 min); the
// tunnel pods replace them without a restart and the PortForward stays Ready through three idle closes,
// answering after each.
func (s *suite) idleTimeout(ctx context.Context, t testing.TB) {
	restartsBefore, pods := s.tunnelRestarts(ctx, t)
	s.emulatorAdmin(ctx, t, http.MethodPut, "/emulator/faults", `{"idleTimeout":"20s"}`, nil)
	defer s.emulatorAdmin(context.Background(), t, http.MethodPut, "/emulator/faults", `{}`, nil)
	// The idle timeout applies to sessions started from now on: end the live ones as an administrator
	// would, which the tunnels must survive too.
	var st emulatorStats
	s.emulatorAdmin(ctx, t, http.MethodGet, "/emulator/stats", "", &st)
	terminated := 0
	for _, ss := range st.Sessions {
		if !ss.Ended {
			s.emulatorAdmin(ctx, t, http.MethodPost, "/emulator/sessions/"+ss.ID+"/terminate", "", nil)
			terminated++
		}
	}
	t.Logf("terminated %d live sessions as an administrator", terminated)

	// Watch the PortForward's Ready condition for the whole step.
	watchCtx, stopWatch := context.WithCancel(ctx)
	notReady := make(chan string, 64)
	go func() {
		defer close(notReady)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-watchCtx.Done():
				return
			case <-tick.C:
			}
			var pf v1alpha1.PortForward
			if err := s.k.c.Get(watchCtx, client.ObjectKey{Namespace: nsApps, Name: pfName}, &pf); err != nil {
				continue
			}
			for _, c := range pf.Status.Conditions {
				if c.Type == v1alpha1.ConditionReady && c.Status != metav1.ConditionTrue {
					select {
					case notReady <- fmt.Sprintf("%s %s/%s: %s", time.Now().Format(time.TimeOnly), c.Status, c.Reason, c.Message):
					default:
					}
				}
			}
		}
	}()

	start := time.Now()
	closed := s.idleClosedSessions(ctx, t)
	for round := 1; round <= 3; round++ {
		waitFor(ctx, t, 2*time.Minute, fmt.Sprintf("idle close %d", round), func(ctx context.Context) (bool, string, error) {
			n := s.idleClosedSessions(ctx, t)
			return n > closed, fmt.Sprintf("%d sessions closed idle", n), nil
		})
		closed = s.idleClosedSessions(ctx, t)
		out, ok := runClientPod(ctx, t, s.k, s.e.webImage(), nsApps, fmt.Sprintf("idle-get-%d", round), clientLabels, 2*time.Minute,
			"get", "--url", serviceURL(80)+"/port", "--timeout", "20s")
		if !ok {
			t.Fatalf("request after idle close %d failed: %s", round, out)
		}
	}
	stopWatch()
	var flaps []string
	for f := range notReady {
		flaps = append(flaps, f)
	}
	restartsAfter, podsAfter := s.tunnelRestarts(ctx, t)
	t.Logf("idle timeout 20s: %d idle closes seen in %s; tunnel pods %d -> %d, container restarts %d -> %d; not-Ready observations: %d",
		closed, time.Since(start).Round(time.Second), pods, podsAfter, restartsBefore, restartsAfter, len(flaps))
	if restartsAfter != restartsBefore || podsAfter != pods {
		t.Errorf("tunnel container restarts %d -> %d (pods %d -> %d), want none: an idle close must not restart a tunnel", restartsBefore, restartsAfter, pods, podsAfter)
	}
	if len(flaps) > 0 {
		t.Errorf("PortForward left Ready during idle closes: %s", strings.Join(flaps, "; "))
	}
	s.tm.add(t, "three idle closes, zero restarts", time.Since(start))
}
