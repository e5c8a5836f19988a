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

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
)

// What the tunnel pods' reports mean for the status: why sessions do not start, and whether the
// destination answers. Messages are written here, one line each, saying what to fix; the tunnel's raw
// error text never reaches the status, since AWS errors can name roles and accounts.

// sessionReasons maps the tunnel's classification (session.Reason) to a condition reason, in the order
// that decides between pods that disagree: the first is what most likely needs fixing first.
var sessionReasons = []struct{ tunnel, reason string }{
	{"NoCredentials", v1alpha1.ReasonNoCredentials},
	{"AccessDenied", v1alpha1.ReasonAccessDenied},
	{"InvalidDocument", v1alpha1.ReasonInvalidDocument},
	{"TargetNotConnected", v1alpha1.ReasonTargetNotConnected},
	{"Throttled", v1alpha1.ReasonThrottled},
	{"SessionEnded", v1alpha1.ReasonSessionEnded},
	{"Unknown", v1alpha1.ReasonSessionFailed},
}

// sessionMessage says what to fix for a session reason.
func sessionMessage(pf *v1alpha1.PortForward, target, reason string, opts Options) string {
	sa := pf.Spec.ServiceAccountName
	if sa == "" {
		sa = opts.DefaultServiceAccountName
	}
	switch reason {
	case v1alpha1.ReasonTargetNotConnected:
		return fmt.Sprintf("Instance %s is not connected to Systems Manager: start it, or check that its SSM Agent runs and reaches the ssm and ssmmessages endpoints", target)
	case v1alpha1.ReasonAccessDenied:
		return fmt.Sprintf("The AWS identity of ServiceAccount %s may not start a session on %s: allow ssm:StartSession on the instance and the document (and sts:AssumeRole for spec.roleARN)", sa, target)
	case v1alpha1.ReasonNoCredentials:
		return fmt.Sprintf("The tunnel pods have no AWS credentials: give ServiceAccount %s a role (IRSA or EKS Pod Identity), or create the Secret %s in the namespace", sa, opts.CredentialsSecretName)
	case v1alpha1.ReasonThrottled:
		return "Systems Manager throttles the tunnel pods' calls; they retry with backoff: lower sessionsPerReplica or replicas, or ask for a higher API quota"
	case v1alpha1.ReasonInvalidDocument:
		return "The session document does not exist or does not forward ports: use AWS-StartPortForwardingSession, or AWS-StartPortForwardingSessionToRemoteHost with spec.remoteHost"
	case v1alpha1.ReasonSessionEnded:
		return fmt.Sprintf("Sessions to %s end before they can carry traffic: check the SSM Agent's logs on the instance and the Session Manager preferences", target)
	}
	return fmt.Sprintf("Sessions to %s fail: see the tunnel pods' logs", target)
}

// sessionProblem is why the tunnel pods that are not ready cannot start sessions, from their reports; an
// empty Reason when none says.
func sessionProblem(pf *v1alpha1.PortForward, obs observed, opts Options) targetProblem {
	count := map[string]int{}
	notReady := 0
	for _, r := range obs.reports {
		if r.err != nil || r.ready && r.report.Ready {
			continue
		}
		notReady++
		seen := map[string]bool{}
		for _, p := range r.report.Ports {
			if !p.Ready && p.Reason != "" && !seen[p.Reason] {
				seen[p.Reason] = true
				count[p.Reason]++
			}
		}
	}
	for _, sr := range sessionReasons {
		if n := count[sr.tunnel]; n > 0 {
			return targetProblem{sr.reason, fmt.Sprintf("%s (%d of %d tunnel pods report it)",
				sessionMessage(pf, obs.target, sr.reason, opts), n, notReady)}
		}
	}
	return targetProblem{}
}

// destCond is the DestinationReachable condition.
type destCond struct {
	status          metav1.ConditionStatus
	reason, message string
}

// destinationCondition is what the pods saw last of each port's destination: False when the latest
// answer for any port was ConnectToPortError, True when every port's latest answer reached it, Unknown
// otherwise. Pods disagree only in time, so the latest observation of a port wins.
func destinationCondition(pf *v1alpha1.PortForward, obs observed) destCond {
	type seen struct {
		state, problem string
		at             time.Time
	}
	latest := make([]seen, len(pf.Spec.Ports))
	for _, r := range obs.reports {
		if r.err != nil || len(r.report.Ports) != len(pf.Spec.Ports) {
			continue // unreadable, or a pod of another generation with other ports
		}
		for i, p := range r.report.Ports {
			if p.DestinationAt != nil && p.DestinationAt.After(latest[i].at) {
				latest[i] = seen{p.Destination, p.DestinationError, *p.DestinationAt}
			}
		}
	}
	var unreachable, unknown []string
	for i, s := range latest {
		p := pf.Spec.Ports[i]
		name := fmt.Sprintf("port %d (remote %d)", p.Port, p.RemotePort)
		switch s.state {
		case destinationUnreachable:
			unreachable = append(unreachable, fmt.Sprintf("%s: %s", name, s.problem))
		case destinationReachable:
		default:
			unknown = append(unknown, name)
		}
	}
	switch {
	case len(unreachable) > 0:
		return destCond{metav1.ConditionFalse, v1alpha1.ReasonDestinationUnreachable,
			strings.Join(unreachable, "; ") + ": start the service on the instance, or check remotePort and spec.remoteHost"}
	case len(unknown) == 0:
		return destCond{metav1.ConditionTrue, v1alpha1.ReasonDestinationReachable, "Connections through every port reached the destination"}
	}
	msg := "No connection through " + strings.Join(unknown, ", ") + " has been answered yet"
	if pf.Spec.DestinationProbe == nil {
		msg += ": set spec.destinationProbe to check without traffic"
	}
	return destCond{metav1.ConditionUnknown, v1alpha1.ReasonNotObserved, msg}
}

// anyReadable reports whether at least one pod's report was read.
func anyReadable(reports []podReport) bool {
	for _, r := range reports {
		if r.err == nil {
			return true
		}
	}
	return false
}
