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
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
)

// targetProblem is why no instance could be used for pf; empty Reason means none.
type targetProblem struct {
	// Reason is v1alpha1.ReasonNoOnlineInstance or v1alpha1.ReasonInvalidTarget.
	Reason  string
	Message string
}

// observed is everything computeStatus looks at, gathered once per reconcile.
type observed struct {
	// target is the instance the tunnel pods use (empty when none could be resolved yet).
	target string
	// problem explains an unresolvable target.
	problem targetProblem
	// deployment is the tunnel Deployment, nil when it does not exist.
	deployment *appsv1.Deployment
	// crashLooping counts tunnel pods with a container in CrashLoopBackOff.
	crashLooping int
	// reports are the running tunnel pods' own reports (/readyz).
	reports []podReport
	// policyDenied says why the PortForwardPolicies deny the PortForward; empty when they allow it.
	policyDenied string
}

// crashLoopingPods counts pods with a container waiting in CrashLoopBackOff.
func crashLoopingPods(pods []corev1.Pod) int {
	n := 0
	for i := range pods {
		for _, cs := range pods[i].Status.ContainerStatuses {
			if cs.State.Waiting != nil && cs.State.Waiting.Reason == "CrashLoopBackOff" {
				n++
				break
			}
		}
	}
	return n
}

// rollingOut reports whether the Deployment has not yet brought every pod to its current template.
func rollingOut(d *appsv1.Deployment, want int32) bool {
	s := d.Status
	return s.ObservedGeneration < d.Generation || s.UpdatedReplicas < want || s.Replicas > s.UpdatedReplicas
}

// computeStatus derives the whole status of pf from what was observed. It starts from pf's current
// conditions so unchanged conditions keep their lastTransitionTime; now stamps the changed ones.
func computeStatus(pf *v1alpha1.PortForward, obs observed, opts Options, now time.Time) v1alpha1.PortForwardStatus {
	want := replicas(pf)
	st := v1alpha1.PortForwardStatus{
		Conditions:         append([]metav1.Condition(nil), pf.Status.Conditions...),
		ObservedGeneration: pf.Generation,
		Selector:           labels.SelectorFromSet(selectorLabels(pf)).String(),
		ServiceName:        pf.Name,
		Addresses:          addresses(pf),
		Address:            strings.Join(addresses(pf), ","),
		Ports:              portSummary(pf),
		ResolvedTarget:     obs.target,
	}
	var ready int32
	if d := obs.deployment; d != nil {
		st.Replicas = d.Status.Replicas
		ready = d.Status.ReadyReplicas
	}
	st.ReadyReplicas = ready
	st.Ready = fmt.Sprintf("%d/%d", ready, want)

	type cond struct {
		status          bool
		reason, message string
	}
	var readyC, progressing, degraded cond
	switch {
	case obs.policyDenied != "":
		readyC = cond{false, v1alpha1.ReasonPolicyDenied, obs.policyDenied}
		progressing = cond{false, v1alpha1.ReasonPolicyDenied, "The tunnel pods are scaled to zero while a policy denies the PortForward"}
		degraded = cond{true, v1alpha1.ReasonPolicyDenied, obs.policyDenied}
	case obs.problem.Reason != "" && obs.deployment == nil:
		readyC = cond{false, obs.problem.Reason, obs.problem.Message}
		progressing = cond{false, obs.problem.Reason, "Waiting for a usable target"}
		degraded = cond{true, obs.problem.Reason, obs.problem.Message}
	case obs.deployment == nil:
		readyC = cond{false, v1alpha1.ReasonUnavailable, "The tunnel Deployment does not exist yet"}
		progressing = cond{true, v1alpha1.ReasonRollingOut, "Creating the tunnel Deployment"}
		degraded = cond{false, v1alpha1.ReasonAsExpected, ""}
	default:
		d := obs.deployment
		rolling := rollingOut(d, want)
		if rolling {
			progressing = cond{true, v1alpha1.ReasonRollingOut,
				fmt.Sprintf("%d of %d tunnel pods run the current template", d.Status.UpdatedReplicas, want)}
		} else {
			progressing = cond{false, v1alpha1.ReasonRolledOut, "Every tunnel pod runs the current template"}
		}
		sessions := sessionProblem(pf, obs, opts)
		switch {
		case want == 0:
			readyC = cond{false, v1alpha1.ReasonScaledToZero, "spec.replicas is 0: the Service has no tunnel pods"}
		case ready >= want:
			readyC = cond{true, v1alpha1.ReasonAvailable, fmt.Sprintf("%d of %d tunnel pods are ready", ready, want)}
		case ready > 0:
			readyC = cond{true, v1alpha1.ReasonPartiallyAvailable, fmt.Sprintf("%d of %d tunnel pods are ready", ready, want)}
		case sessions.Reason != "":
			readyC = cond{false, sessions.Reason, sessions.Message}
		default:
			readyC = cond{false, v1alpha1.ReasonUnavailable, fmt.Sprintf("0 of %d tunnel pods are ready", want)}
		}
		switch {
		case obs.crashLooping > 0:
			degraded = cond{true, v1alpha1.ReasonCrashLooping,
				fmt.Sprintf("%d tunnel pods are in CrashLoopBackOff: see their logs", obs.crashLooping)}
		case obs.problem.Reason != "":
			degraded = cond{true, obs.problem.Reason, obs.problem.Message}
		case sessions.Reason != "":
			degraded = cond{true, sessions.Reason, sessions.Message}
		case !rolling && want > 0 && ready < want:
			degraded = cond{true, readyC.reason, readyC.message}
		default:
			degraded = cond{false, v1alpha1.ReasonAsExpected, ""}
		}
	}
	dest := destinationCondition(pf, obs)
	if dest.status == metav1.ConditionUnknown && len(obs.reports) > 0 && !anyReadable(obs.reports) {
		// Pods exist but none could be read just now: keep what was last known rather than flap.
		if prev := meta.FindStatusCondition(pf.Status.Conditions, v1alpha1.ConditionDestinationReachable); prev != nil {
			dest = destCond{prev.Status, prev.Reason, prev.Message}
		}
	}

	setStatus := func(t string, status metav1.ConditionStatus, reason, message string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: t, Status: status, Reason: reason, Message: message,
			ObservedGeneration: pf.Generation, LastTransitionTime: metav1.NewTime(now),
		})
	}
	set := func(t string, c cond) {
		s := metav1.ConditionFalse
		if c.status {
			s = metav1.ConditionTrue
		}
		setStatus(t, s, c.reason, c.message)
	}
	set(v1alpha1.ConditionReady, readyC)
	set(v1alpha1.ConditionProgressing, progressing)
	set(v1alpha1.ConditionDegraded, degraded)
	setStatus(v1alpha1.ConditionDestinationReachable, dest.status, dest.reason, dest.message)

	st.State, st.Message = readyC.reason, readyC.message
	if readyC.status && dest.status == metav1.ConditionFalse {
		st.State, st.Message = dest.reason, dest.message
	}
	return st
}
