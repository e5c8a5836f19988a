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
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
	"github.com/ssmtunnel/ssmtunnel/tunnel/portforward"
)

func notReadyPod(name string, reasons ...string) podReport {
	r := podReport{pod: name}
	for _, reason := range reasons {
		r.report.Ports = append(r.report.Ports, PortReport{Port: "10000:5432", Reason: reason, Destination: "unknown"})
	}
	return r
}

func condOf(t *testing.T, st v1alpha1.PortForwardStatus, typ string) metav1.Condition {
	t.Helper()
	c := meta.FindStatusCondition(st.Conditions, typ)
	if c == nil {
		t.Fatalf("condition %s missing: %+v", typ, st.Conditions)
	}
	return *c
}

func TestSessionReasonsReachReady(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name        string
		reports     []podReport
		crashing    int
		wantReady   string // reason of Ready (False)
		wantDegr    string
		wantMessage string // substring of Ready's message
	}{
		{"offline instance", []podReport{notReadyPod("a", "TargetNotConnected"), notReadyPod("b", "TargetNotConnected")}, 0,
			v1alpha1.ReasonTargetNotConnected, v1alpha1.ReasonTargetNotConnected, "Instance i-0123456789abcdef0 is not connected to Systems Manager"},
		{"denied credentials", []podReport{notReadyPod("a", "AccessDenied"), notReadyPod("b", "AccessDenied")}, 0,
			v1alpha1.ReasonAccessDenied, v1alpha1.ReasonAccessDenied, "ServiceAccount ssmtunnel-tunnel may not start a session"},
		{"pods disagree: the reason to fix first wins", []podReport{notReadyPod("a", "TargetNotConnected"), notReadyPod("b", "AccessDenied")}, 0,
			v1alpha1.ReasonAccessDenied, v1alpha1.ReasonAccessDenied, "(1 of 2 tunnel pods report it)"},
		{"unclassified error", []podReport{notReadyPod("a", "Unknown")}, 0,
			v1alpha1.ReasonSessionFailed, v1alpha1.ReasonSessionFailed, "see the tunnel pods' logs"},
		{"a pod that truly crashes is still CrashLooping", []podReport{notReadyPod("a", "Throttled")}, 1,
			v1alpha1.ReasonThrottled, v1alpha1.ReasonCrashLooping, "throttles"},
		{"no report: Unavailable", []podReport{{pod: "a", err: errors.New("connection refused")}}, 0,
			v1alpha1.ReasonUnavailable, v1alpha1.ReasonUnavailable, "0 of 2 tunnel pods are ready"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pf := basePF()
			obs := observed{target: "i-0123456789abcdef0", deployment: deployment(1, 1, 2, 2, 0), reports: tc.reports, crashLooping: tc.crashing}
			st := computeStatus(pf, obs, testOpts, now)
			ready, degraded := condOf(t, st, v1alpha1.ConditionReady), condOf(t, st, v1alpha1.ConditionDegraded)
			if ready.Status != metav1.ConditionFalse || ready.Reason != tc.wantReady || !strings.Contains(ready.Message, tc.wantMessage) {
				t.Errorf("Ready = %s/%s %q, want False/%s containing %q", ready.Status, ready.Reason, ready.Message, tc.wantReady, tc.wantMessage)
			}
			if degraded.Status != metav1.ConditionTrue || degraded.Reason != tc.wantDegr {
				t.Errorf("Degraded = %s/%s, want True/%s", degraded.Status, degraded.Reason, tc.wantDegr)
			}
			if st.State != tc.wantReady || st.Message != ready.Message {
				t.Errorf("state %q message %q, want Ready's reason and message", st.State, st.Message)
			}
		})
	}
}

// A ready pod's stale reason (an error it recovered from) is not a problem of the PortForward.
func TestSessionReasonOfReadyPodIgnored(t *testing.T) {
	pf := basePF()
	stale := notReadyPod("a", "TargetNotConnected")
	stale.ready, stale.report.Ready = true, true
	obs := observed{target: "i-0123456789abcdef0", deployment: deployment(1, 1, 2, 2, 1), reports: []podReport{stale}}
	st := computeStatus(pf, obs, testOpts, time.Now())
	if c := condOf(t, st, v1alpha1.ConditionDegraded); c.Reason != v1alpha1.ReasonPartiallyAvailable {
		t.Errorf("Degraded reason %s, want PartiallyAvailable", c.Reason)
	}
}

func reachability(state string, at time.Time, problem string) podReport {
	return podReport{pod: "p", ready: true, report: TunnelReport{Ready: true, Ports: []PortReport{
		{Port: "10000:5432", Ready: true, Destination: state, DestinationAt: &at, DestinationError: problem}}}}
}

func TestDestinationReachable(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	refused := "the SSM Agent could not connect to localhost:5432 (ConnectToPortError; refusals so far: 3)"
	for _, tc := range []struct {
		name      string
		reports   []podReport
		probe     bool
		want      metav1.ConditionStatus
		reason    string
		message   string // substring
		wantState string // STATUS: DestinationUnreachable even while Ready
	}{
		{"refused", []podReport{reachability("unreachable", t0, refused)}, false,
			metav1.ConditionFalse, v1alpha1.ReasonDestinationUnreachable, "port 5432 (remote 5432): " + refused, v1alpha1.ReasonDestinationUnreachable},
		{"the latest observation wins across pods", []podReport{reachability("unreachable", t0, refused), reachability("reachable", t0.Add(time.Second), "")}, false,
			metav1.ConditionTrue, v1alpha1.ReasonDestinationReachable, "reached the destination", v1alpha1.ReasonAvailable},
		{"a later refusal wins", []podReport{reachability("reachable", t0, ""), reachability("unreachable", t0.Add(time.Second), refused)}, false,
			metav1.ConditionFalse, v1alpha1.ReasonDestinationUnreachable, "ConnectToPortError", v1alpha1.ReasonDestinationUnreachable},
		{"nothing answered yet, no probe", []podReport{{pod: "p", ready: true, report: TunnelReport{Ready: true, Ports: []PortReport{{Destination: "unknown"}}}}}, false,
			metav1.ConditionUnknown, v1alpha1.ReasonNotObserved, "set spec.destinationProbe", v1alpha1.ReasonAvailable},
		{"nothing answered yet, with a probe", []podReport{{pod: "p", ready: true, report: TunnelReport{Ready: true, Ports: []PortReport{{Destination: "unknown"}}}}}, true,
			metav1.ConditionUnknown, v1alpha1.ReasonNotObserved, "has been answered yet", v1alpha1.ReasonAvailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pf := basePF()
			if tc.probe {
				pf.Spec.DestinationProbe = &v1alpha1.DestinationProbe{PeriodSeconds: 30}
			}
			obs := observed{target: "i-0123456789abcdef0", deployment: deployment(1, 1, 2, 2, 2), reports: tc.reports}
			st := computeStatus(pf, obs, testOpts, t0)
			c := condOf(t, st, v1alpha1.ConditionDestinationReachable)
			if c.Status != tc.want || c.Reason != tc.reason || !strings.Contains(c.Message, tc.message) {
				t.Errorf("DestinationReachable = %s/%s %q, want %s/%s containing %q", c.Status, c.Reason, c.Message, tc.want, tc.reason, tc.message)
			}
			if tc.probe && strings.Contains(c.Message, "destinationProbe") {
				t.Errorf("message %q suggests a probe that is already set", c.Message)
			}
			if r := condOf(t, st, v1alpha1.ConditionReady); r.Status != metav1.ConditionTrue {
				t.Errorf("Ready = %s: a destination that refuses must not change Ready", r.Status)
			}
			if st.State != tc.wantState {
				t.Errorf("state %q, want %q", st.State, tc.wantState)
			}
		})
	}
}

// Pods that exist but cannot be read just now keep the last known reachability.
func TestDestinationReachableKeptWhileUnreadable(t *testing.T) {
	pf := basePF()
	t0 := time.Now()
	obs := observed{target: "i-0123456789abcdef0", deployment: deployment(1, 1, 2, 2, 2),
		reports: []podReport{reachability("unreachable", t0, "refused")}}
	pf.Status = computeStatus(pf, obs, testOpts, t0)
	obs.reports = []podReport{{pod: "p", err: errors.New("timeout")}}
	st := computeStatus(pf, obs, testOpts, t0.Add(time.Minute))
	if c := condOf(t, st, v1alpha1.ConditionDestinationReachable); c.Status != metav1.ConditionFalse || !c.LastTransitionTime.Time.Equal(t0) {
		t.Errorf("DestinationReachable = %s since %s, want False since %s", c.Status, c.LastTransitionTime, t0)
	}
}

// The operator's view of /readyz is the tunnel's own JSON: encode a portforward.Status as the tunnel does
// and read it back over HTTP, with the 503 a pod that is not ready answers.
func TestHTTPPodReaderReadsTheTunnelsStatus(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	status := portforward.Status{Ports: []portforward.PortStatus{{
		Port: "10000:5432", Sessions: []string{"connecting"}, Reason: "TargetNotConnected", LastError: "StartSession: arn:aws:iam::111122223333:role/x ...",
		Destination: portforward.DestinationUnreachable, DestinationAt: &at, DestinationError: "could not connect",
	}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		json.NewEncoder(w).Encode(status)
	}))
	defer srv.Close()
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "db-1"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "tunnel", Ports: []corev1.ContainerPort{{Name: healthPortName, ContainerPort: int32(p)}}}}},
		Status:     corev1.PodStatus{PodIP: host},
	}
	got, err := HTTPPodReader{}.ReadPod(context.Background(), pod)
	if err != nil {
		t.Fatal(err)
	}
	want := PortReport{Port: "10000:5432", Reason: "TargetNotConnected", Destination: destinationUnreachable, DestinationAt: &at, DestinationError: "could not connect"}
	if got.Ready || len(got.Ports) != 1 || got.Ports[0].Port != want.Port || got.Ports[0].Reason != want.Reason ||
		got.Ports[0].Destination != want.Destination || !got.Ports[0].DestinationAt.Equal(at) || got.Ports[0].DestinationError != want.DestinationError {
		t.Errorf("ReadPod = %+v, want one port %+v", got, want)
	}

	pod.Status.PodIP = ""
	if _, err := (HTTPPodReader{}).ReadPod(context.Background(), pod); err == nil {
		t.Error("ReadPod of a pod without an IP = nil error")
	}
}

func TestProbeArgs(t *testing.T) {
	pf := basePF()
	if args := strings.Join(tunnelArgs(pf, "i-0123456789abcdef0", testOpts), " "); strings.Contains(args, "--probe-interval") {
		t.Errorf("without destinationProbe the tunnel probes: %s", args)
	}
	pf.Spec.DestinationProbe = &v1alpha1.DestinationProbe{PeriodSeconds: 30}
	if args := strings.Join(tunnelArgs(pf, "i-0123456789abcdef0", testOpts), " "); !strings.Contains(args, "--probe-interval 30s") {
		t.Errorf("destinationProbe.periodSeconds 30: args %s lack --probe-interval 30s", args)
	}
}

func TestRoleSessionName(t *testing.T) {
	pf := basePF()
	if got := roleSessionName(pf); got != "apps.db" {
		t.Errorf("roleSessionName = %q, want apps.db", got)
	}
	pf.Namespace, pf.Name = strings.Repeat("n", 63), strings.Repeat("p", 63)
	long := roleSessionName(pf)
	pf.Name = strings.Repeat("p", 62) + "q"
	if len(long) != 64 || !strings.HasPrefix(long, strings.Repeat("n", 55)) || long == roleSessionName(pf) {
		t.Errorf("long names: %q (%d) and %q must be 64 characters, keep the start, and differ", long, len(long), roleSessionName(pf))
	}
}
