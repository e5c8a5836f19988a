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
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
)

func deployment(gen, observedGen int64, replicas, updated, ready int32) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Generation: gen},
		Status: appsv1.DeploymentStatus{ObservedGeneration: observedGen, Replicas: replicas,
			UpdatedReplicas: updated, ReadyReplicas: ready},
	}
}

type condWant struct {
	status metav1.ConditionStatus
	reason string
}

func TestComputeStatus(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name                         string
		replicas                     int32
		obs                          observed
		ready, progressing, degraded condWant
		readyText                    string
	}{
		{
			name:     "no deployment yet",
			replicas: 2, obs: observed{target: "i-0123456789abcdef0"},
			ready:       condWant{metav1.ConditionFalse, v1alpha1.ReasonUnavailable},
			progressing: condWant{metav1.ConditionTrue, v1alpha1.ReasonRollingOut},
			degraded:    condWant{metav1.ConditionFalse, v1alpha1.ReasonAsExpected},
			readyText:   "0/2",
		},
		{
			name:     "rolling out, nothing ready yet",
			replicas: 2, obs: observed{target: "i-0123456789abcdef0", deployment: deployment(1, 1, 2, 2, 0)},
			ready:       condWant{metav1.ConditionFalse, v1alpha1.ReasonUnavailable},
			progressing: condWant{metav1.ConditionFalse, v1alpha1.ReasonRolledOut},
			degraded:    condWant{metav1.ConditionTrue, v1alpha1.ReasonUnavailable},
			readyText:   "0/2",
		},
		{
			name:     "deployment controller has not seen the new generation",
			replicas: 2, obs: observed{target: "i-0123456789abcdef0", deployment: deployment(2, 1, 2, 2, 2)},
			ready:       condWant{metav1.ConditionTrue, v1alpha1.ReasonAvailable},
			progressing: condWant{metav1.ConditionTrue, v1alpha1.ReasonRollingOut},
			degraded:    condWant{metav1.ConditionFalse, v1alpha1.ReasonAsExpected},
			readyText:   "2/2",
		},
		{
			name:     "partially available while rolling: not degraded",
			replicas: 2, obs: observed{target: "i-0123456789abcdef0", deployment: deployment(1, 1, 3, 1, 1)},
			ready:       condWant{metav1.ConditionTrue, v1alpha1.ReasonPartiallyAvailable},
			progressing: condWant{metav1.ConditionTrue, v1alpha1.ReasonRollingOut},
			degraded:    condWant{metav1.ConditionFalse, v1alpha1.ReasonAsExpected},
			readyText:   "1/2",
		},
		{
			name:     "partially available after rollout: degraded",
			replicas: 2, obs: observed{target: "i-0123456789abcdef0", deployment: deployment(1, 1, 2, 2, 1)},
			ready:       condWant{metav1.ConditionTrue, v1alpha1.ReasonPartiallyAvailable},
			progressing: condWant{metav1.ConditionFalse, v1alpha1.ReasonRolledOut},
			degraded:    condWant{metav1.ConditionTrue, v1alpha1.ReasonPartiallyAvailable},
			readyText:   "1/2",
		},
		{
			name:     "available",
			replicas: 2, obs: observed{target: "i-0123456789abcdef0", deployment: deployment(1, 1, 2, 2, 2)},
			ready:       condWant{metav1.ConditionTrue, v1alpha1.ReasonAvailable},
			progressing: condWant{metav1.ConditionFalse, v1alpha1.ReasonRolledOut},
			degraded:    condWant{metav1.ConditionFalse, v1alpha1.ReasonAsExpected},
			readyText:   "2/2",
		},
		{
			name:     "crash looping wins over everything in Degraded",
			replicas: 2, obs: observed{target: "i-0123456789abcdef0", deployment: deployment(1, 1, 2, 2, 1), crashLooping: 1},
			ready:       condWant{metav1.ConditionTrue, v1alpha1.ReasonPartiallyAvailable},
			progressing: condWant{metav1.ConditionFalse, v1alpha1.ReasonRolledOut},
			degraded:    condWant{metav1.ConditionTrue, v1alpha1.ReasonCrashLooping},
			readyText:   "1/2",
		},
		{
			name:     "scaled to zero",
			replicas: 0, obs: observed{target: "i-0123456789abcdef0", deployment: deployment(1, 1, 0, 0, 0)},
			ready:       condWant{metav1.ConditionFalse, v1alpha1.ReasonScaledToZero},
			progressing: condWant{metav1.ConditionFalse, v1alpha1.ReasonRolledOut},
			degraded:    condWant{metav1.ConditionFalse, v1alpha1.ReasonAsExpected},
			readyText:   "0/0",
		},
		{
			name:     "no online instance and no deployment",
			replicas: 2, obs: observed{problem: targetProblem{v1alpha1.ReasonNoOnlineInstance, "none"}},
			ready:       condWant{metav1.ConditionFalse, v1alpha1.ReasonNoOnlineInstance},
			progressing: condWant{metav1.ConditionFalse, v1alpha1.ReasonNoOnlineInstance},
			degraded:    condWant{metav1.ConditionTrue, v1alpha1.ReasonNoOnlineInstance},
			readyText:   "0/2",
		},
		{
			name:     "instance went offline under a running deployment",
			replicas: 2, obs: observed{target: "i-0123456789abcdef0", problem: targetProblem{v1alpha1.ReasonNoOnlineInstance, "none"}, deployment: deployment(1, 1, 2, 2, 0)},
			ready:       condWant{metav1.ConditionFalse, v1alpha1.ReasonUnavailable},
			progressing: condWant{metav1.ConditionFalse, v1alpha1.ReasonRolledOut},
			degraded:    condWant{metav1.ConditionTrue, v1alpha1.ReasonNoOnlineInstance},
			readyText:   "0/2",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pf := basePF()
			pf.Generation = 4
			pf.Spec.Replicas = ptr.To(tc.replicas)
			st := computeStatus(pf, tc.obs, testOpts, now)
			for typ, want := range map[string]condWant{
				v1alpha1.ConditionReady: tc.ready, v1alpha1.ConditionProgressing: tc.progressing, v1alpha1.ConditionDegraded: tc.degraded,
			} {
				c := meta.FindStatusCondition(st.Conditions, typ)
				if c == nil {
					t.Fatalf("condition %s missing", typ)
				}
				if got := (condWant{c.Status, c.Reason}); got != want {
					t.Errorf("%s = %+v, want %+v (message %q)", typ, got, want, c.Message)
				}
				if c.ObservedGeneration != 4 || !c.LastTransitionTime.Time.Equal(now) {
					t.Errorf("%s: observedGeneration %d, lastTransitionTime %s", typ, c.ObservedGeneration, c.LastTransitionTime)
				}
			}
			if st.Ready != tc.readyText || st.ObservedGeneration != 4 || st.ResolvedTarget != tc.obs.target {
				t.Errorf("ready %q, observedGeneration %d, resolvedTarget %q", st.Ready, st.ObservedGeneration, st.ResolvedTarget)
			}
		})
	}
}

// TestComputeStatusStable checks that recomputing from unchanged observations gives an equal status, so
// writeStatus skips the write, and that a change keeps the transition time of unchanged conditions.
func TestComputeStatusStable(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	pf := basePF()
	obs := observed{target: "i-0123456789abcdef0", deployment: deployment(1, 1, 2, 2, 1)}
	pf.Status = computeStatus(pf, obs, testOpts, t0)
	again := computeStatus(pf, obs, testOpts, t0.Add(time.Hour))
	if diff := cmp.Diff(pf.Status, again); diff != "" {
		t.Fatalf("status changed without a new observation (-first +second):\n%s", diff)
	}
	obs.deployment = deployment(1, 1, 2, 2, 2)
	next := computeStatus(pf, obs, testOpts, t0.Add(time.Hour))
	want := v1alpha1.PortForwardStatus{
		ObservedGeneration: 1, Replicas: 2, ReadyReplicas: 2, Ready: "2/2",
		Selector:    "app.kubernetes.io/component=tunnel,app.kubernetes.io/instance=db,app.kubernetes.io/name=ssmtunnel",
		ServiceName: "db", Addresses: []string{"db.apps.svc:5432"}, Address: "db.apps.svc:5432", Ports: "5432:5432", ResolvedTarget: "i-0123456789abcdef0",
		State: "Available", Message: "2 of 2 tunnel pods are ready",
		Conditions: []metav1.Condition{
			{Type: "Ready", Status: "True", Reason: "Available", Message: "2 of 2 tunnel pods are ready", ObservedGeneration: 1, LastTransitionTime: metav1.NewTime(t0)},
			{Type: "Progressing", Status: "False", Reason: "RolledOut", Message: "Every tunnel pod runs the current template", ObservedGeneration: 1, LastTransitionTime: metav1.NewTime(t0)},
			{Type: "Degraded", Status: "False", Reason: "AsExpected", ObservedGeneration: 1, LastTransitionTime: metav1.NewTime(t0.Add(time.Hour))},
			{Type: "DestinationReachable", Status: "Unknown", Reason: "NotObserved",
				Message:            "No connection through port 5432 (remote 5432) has been answered yet: set spec.destinationProbe to check without traffic",
				ObservedGeneration: 1, LastTransitionTime: metav1.NewTime(t0)},
		},
	}
	if diff := cmp.Diff(want, next, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("status after pods became ready (-want +got):\n%s", diff)
	}
}

func TestCrashLoopingPods(t *testing.T) {
	waiting := func(reason string) corev1.Pod {
		return corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{
			{State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}},
			{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}},
		}}}
	}
	pods := []corev1.Pod{waiting("CrashLoopBackOff"), waiting("ContainerCreating"), waiting("CrashLoopBackOff"), {}}
	if got := crashLoopingPods(pods); got != 2 {
		t.Errorf("crashLoopingPods = %d, want 2", got)
	}
}
