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
	"net/netip"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
)

// PolicyDefault is what applies to a namespace no PortForwardPolicy selects.
type PolicyDefault string

const (
	// PolicyDefaultAllow lets such namespaces forward to anything the tunnel identity reaches (the
	// built-in denials still apply): clusters that do not use policies.
	PolicyDefaultAllow PolicyDefault = "allow"
	// PolicyDefaultDeny refuses every PortForward of such namespaces: the recommended setting once
	// several teams share a cluster.
	PolicyDefaultDeny PolicyDefault = "deny"
)

// defaultDocuments are always allowed: the two AWS port-forwarding documents (and no documentName).
var defaultDocuments = []string{"", "AWS-StartPortForwardingSession", "AWS-StartPortForwardingSessionToRemoteHost"}

// policyVerdict is why a PortForward is not allowed; empty when it is.
type policyVerdict struct{ denied string }

// checkPolicies decides whether pf, in a namespace with nsLabels, is allowed: when one policy that selects
// the namespace allows every part of it (policies add up as alternatives, so two policies never combine
// into a grant neither makes). The message names, for each such policy, the first part it does not allow
// and what it allows instead.
func checkPolicies(pf *v1alpha1.PortForward, nsLabels map[string]string, policies []v1alpha1.PortForwardPolicy, def PolicyDefault, defaultSA string) policyVerdict {
	var reasons []string
	for i := range policies {
		p := &policies[i]
		sel, err := metav1.LabelSelectorAsSelector(&p.Spec.NamespaceSelector)
		if err != nil || !sel.Matches(labels.Set(nsLabels)) {
			continue
		}
		why := policyDenies(pf, &p.Spec, nsLabels, defaultSA)
		if why == "" {
			return policyVerdict{}
		}
		reasons = append(reasons, fmt.Sprintf("%s: %s", p.Name, why))
	}
	switch {
	case len(reasons) > 0:
		return policyVerdict{fmt.Sprintf("denied by every PortForwardPolicy that grants namespace %s — %s; change the PortForward, or ask a cluster administrator",
			pf.Namespace, strings.Join(reasons, "; "))}
	case def == PolicyDefaultDeny:
		return policyVerdict{fmt.Sprintf("no PortForwardPolicy grants namespace %s, and the operator denies namespaces without one: ask a cluster administrator for a policy that selects it", pf.Namespace)}
	}
	return policyVerdict{}
}

// policyDenies returns the first part of pf that s does not allow, with what s allows instead; empty when
// s allows all of pf.
func policyDenies(pf *v1alpha1.PortForward, s *v1alpha1.PortForwardPolicySpec, nsLabels map[string]string, defaultSA string) string {
	list := func(items []string) string {
		if len(items) == 0 {
			return "none"
		}
		return strings.Join(items, ", ")
	}
	t := pf.Spec.Target
	anyInstance := slices.Contains(s.InstanceIDs, "*")
	switch {
	case t.InstanceID != "" && !anyInstance && !slices.Contains(s.InstanceIDs, t.InstanceID):
		return fmt.Sprintf("instance %s (it allows instances %s)", t.InstanceID, list(s.InstanceIDs))
	case t.Selector != nil && !anyInstance && !selectorTagsAllowed(t.Selector.Tags, s.SelectorTags, nsLabels):
		var want []string
		for _, rt := range s.SelectorTags {
			want = append(want, requiredTagString(rt, nsLabels))
		}
		return fmt.Sprintf("target.selector (it allows selectors that include the tags %s)", list(want))
	}
	if h := pf.Spec.RemoteHost; h != "" && !hostAllowed(h, s.RemoteHosts) {
		return fmt.Sprintf("remoteHost %s (it allows remote hosts %s)", h, list(s.RemoteHosts))
	}
	for _, p := range pf.Spec.Ports {
		if !portAllowed(p.RemotePort, s.RemotePorts) {
			return fmt.Sprintf("remotePort %d (it allows remote ports %s)", p.RemotePort, list(s.RemotePorts))
		}
	}
	if d := pf.Spec.DocumentName; !slices.Contains(defaultDocuments, d) && !slices.Contains(s.Documents, d) {
		return fmt.Sprintf("documentName %s (it allows the AWS port-forwarding documents and %s)", d, list(s.Documents))
	}
	if r := pf.Spec.RoleARN; r != "" && !slices.ContainsFunc(s.RoleARNs, func(p string) bool { return globMatch(p, r) }) {
		return fmt.Sprintf("roleARN %s (it allows roles %s)", r, list(s.RoleARNs))
	}
	if sa := pf.Spec.ServiceAccountName; sa != "" && sa != defaultSA && !slices.Contains(s.ServiceAccountNames, sa) {
		return fmt.Sprintf("serviceAccountName %s (it allows the default tunnel ServiceAccount and %s)", sa, list(s.ServiceAccountNames))
	}
	return ""
}

// selectorTagsAllowed reports whether a selector's tags include every required tag (none required: no).
func selectorTagsAllowed(tags map[string]string, required []v1alpha1.RequiredTag, nsLabels map[string]string) bool {
	if len(required) == 0 {
		return false
	}
	for _, rt := range required {
		want := rt.Value
		if rt.ValueFromNamespaceLabel != "" {
			v, ok := nsLabels[rt.ValueFromNamespaceLabel]
			if !ok {
				return false
			}
			want = v
		}
		if got, ok := tags[rt.Key]; !ok || got != want {
			return false
		}
	}
	return true
}

func requiredTagString(rt v1alpha1.RequiredTag, nsLabels map[string]string) string {
	if rt.ValueFromNamespaceLabel != "" {
		return fmt.Sprintf("%s=%s (the namespace's label %s)", rt.Key, nsLabels[rt.ValueFromNamespaceLabel], rt.ValueFromNamespaceLabel)
	}
	return rt.Key + "=" + rt.Value
}

// hostAllowed reports whether host is an IP address inside one of the CIDRs, or a name equal to one of the
// names or below a "*." one. Names compare without case; a name never matches a CIDR, nor an IP a name.
func hostAllowed(host string, allowed []string) bool {
	if a, err := netip.ParseAddr(host); err == nil {
		return slices.ContainsFunc(allowed, func(e string) bool {
			p, err := netip.ParsePrefix(e)
			return err == nil && p.Contains(a)
		})
	}
	h := strings.ToLower(host)
	return slices.ContainsFunc(allowed, func(e string) bool {
		e = strings.ToLower(e)
		if suffix, ok := strings.CutPrefix(e, "*."); ok {
			return strings.HasSuffix(h, "."+suffix)
		}
		return h == e
	})
}

// portAllowed reports whether port is one of the entries ("5432", "8000-8999"); an empty list allows any.
func portAllowed(port int32, allowed []string) bool {
	if len(allowed) == 0 {
		return true
	}
	return slices.ContainsFunc(allowed, func(e string) bool {
		lo, hi, ok := portRange(e)
		return ok && int(port) >= lo && int(port) <= hi
	})
}

// portRange parses a remotePorts entry, "5432" or "8000-8999", into its bounds. The API server's schema
// admits only such entries; ok is false for anything else, which then allows nothing.
func portRange(e string) (lo, hi int, ok bool) {
	a, b, isRange := strings.Cut(e, "-")
	if !isRange {
		b = a
	}
	lo, err1 := strconv.Atoi(a)
	hi, err2 := strconv.Atoi(b)
	return lo, hi, err1 == nil && err2 == nil
}

// globMatch matches s against pattern, exact or, with a trailing "*", by prefix.
func globMatch(pattern, s string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(s, prefix)
	}
	return pattern == s
}
