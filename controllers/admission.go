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
	"strconv"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	admissionv1ac "k8s.io/client-go/applyconfigurations/admissionregistration/v1"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
)

// The admission half of the policies: one ValidatingAdmissionPolicy that the operator writes from every
// PortForwardPolicy, so `kubectl apply` refuses a denied PortForward with the same message the reconcile
// would report. It is generated rather than shipped because policies add up as alternatives (one policy
// must allow all of a PortForward), which a parameterised policy cannot express: the API server requires
// every parameter to pass. The CEL below mirrors checkPolicies part for part; the envtest suite compares
// the two on every case.

// AdmissionPolicyName names the ValidatingAdmissionPolicy of PortForwards and its binding;
// DeploymentAdmissionPolicyName the one of the operator's Deployments.
const (
	AdmissionPolicyName           = "portforwardpolicies.ssmtunnel.io"
	DeploymentAdmissionPolicyName = "tunnel-deployments.ssmtunnel.io"
)

// celString quotes s as a CEL string literal (Go's quoting is valid CEL).
func celString(s string) string { return strconv.Quote(s) }

func celList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = celString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// nsLabel is the expression for the PortForward namespace's label key, guarded: the namespace may have no
// labels map at all.
const nsLabels = "namespaceObject.metadata.labels"

func hasNSLabel(key string) string {
	return fmt.Sprintf("(has(%s) && %s in %s)", nsLabels, celString(key), nsLabels)
}

// selectorCEL is sel as a CEL condition on the namespace's labels.
func selectorCEL(sel metav1.LabelSelector) string {
	var terms []string
	for k, v := range sel.MatchLabels {
		terms = append(terms, fmt.Sprintf("(%s && %s[%s] == %s)", hasNSLabel(k), nsLabels, celString(k), celString(v)))
	}
	for _, e := range sel.MatchExpressions {
		in := fmt.Sprintf("(%s && %s[%s] in %s)", hasNSLabel(e.Key), nsLabels, celString(e.Key), celList(e.Values))
		switch e.Operator {
		case metav1.LabelSelectorOpIn:
			terms = append(terms, in)
		case metav1.LabelSelectorOpNotIn:
			terms = append(terms, "!"+in)
		case metav1.LabelSelectorOpExists:
			terms = append(terms, hasNSLabel(e.Key))
		case metav1.LabelSelectorOpDoesNotExist:
			terms = append(terms, "!"+hasNSLabel(e.Key))
		default:
			terms = append(terms, "false") // an operator the API server would not have accepted
		}
	}
	if len(terms) == 0 {
		return "true"
	}
	return strings.Join(terms, " && ")
}

// policyParts are the CEL conditions of one policy, each true when that part of the PortForward is allowed,
// with the message of its refusal; in checkPolicies' order.
func policyParts(s *v1alpha1.PortForwardPolicySpec, defaultSA string) [][2]string {
	const spec = "object.spec"
	list := func(items []string) string {
		if len(items) == 0 {
			return "none"
		}
		return strings.Join(items, ", ")
	}
	anyInstance := "false"
	for _, id := range s.InstanceIDs {
		if id == "*" {
			anyInstance = "true"
		}
	}
	// tags: a selector that includes every required tag; tagWant: the message's list of them.
	tags, tagWant := "false", celString("none")
	if len(s.SelectorTags) > 0 {
		const tagMap = "object.spec.target.selector.tags"
		var req, want []string
		for _, rt := range s.SelectorTags {
			value, guard, shown := celString(rt.Value), "", celString(rt.Key+"="+rt.Value)
			if l := rt.ValueFromNamespaceLabel; l != "" {
				value = fmt.Sprintf("%s[%s]", nsLabels, celString(l))
				guard = hasNSLabel(l) + " && "
				shown = fmt.Sprintf("%s + (%s ? %s : \"\") + %s", celString(rt.Key+"="), hasNSLabel(l), value,
					celString(" (the namespace's label "+l+")"))
			}
			req = append(req, fmt.Sprintf("(%s%s in %s && %s[%s] == %s)", guard, celString(rt.Key), tagMap, tagMap, celString(rt.Key), value))
			want = append(want, shown)
		}
		tags = fmt.Sprintf("has(%s.target.selector) && %s", spec, strings.Join(req, " && "))
		tagWant = strings.Join(want, ` + ", " + `)
	}

	var cidrs, names, suffixes []string
	for _, h := range s.RemoteHosts {
		switch {
		case strings.Contains(h, "/"):
			cidrs = append(cidrs, h)
		case strings.HasPrefix(h, "*."):
			suffixes = append(suffixes, strings.ToLower(h[1:]))
		default:
			names = append(names, strings.ToLower(h))
		}
	}
	host := fmt.Sprintf("!has(%[1]s.remoteHost) || (isIP(%[1]s.remoteHost) ? %[2]s.exists(c, cidr(c).containsIP(%[1]s.remoteHost)) : "+
		"(%[1]s.remoteHost.lowerAscii() in %[3]s || %[4]s.exists(x, %[1]s.remoteHost.lowerAscii().endsWith(x))))",
		spec, celList(cidrs), celList(names), celList(suffixes))

	ports := "true"
	portWhy := `""`
	if len(s.RemotePorts) > 0 {
		var ranges []string
		for _, e := range s.RemotePorts {
			if lo, hi, ok := portRange(e); ok {
				ranges = append(ranges, fmt.Sprintf("[%d, %d]", lo, hi))
			}
		}
		inRange := fmt.Sprintf("[%s].exists(r, p.remotePort >= r[0] && p.remotePort <= r[1])", strings.Join(ranges, ", "))
		ports = fmt.Sprintf("%s.ports.all(p, %s)", spec, inRange)
		portWhy = fmt.Sprintf("string(%s.ports.filter(p, !(%s))[0].remotePort)", spec, inRange)
	}

	docs := append(append([]string{}, defaultDocuments[1:]...), s.Documents...)
	var exact, prefixes []string
	for _, r := range s.RoleARNs {
		if p, ok := strings.CutSuffix(r, "*"); ok {
			prefixes = append(prefixes, p)
		} else {
			exact = append(exact, r)
		}
	}
	sas := append([]string{defaultSA}, s.ServiceAccountNames...)
	// refusal is the message "<part> <value> (it allows <what>)", every literal quoted: policy values reach
	// CEL only as string literals.
	refusal := func(part, value, allows string) string {
		return fmt.Sprintf("%s + %s + %s", celString(part+" "), value, celString(" (it allows "+allows+")"))
	}
	return [][2]string{
		{fmt.Sprintf("!has(%[1]s.target.instanceID) || %[2]s || %[1]s.target.instanceID in %[3]s", spec, anyInstance, celList(s.InstanceIDs)),
			refusal("instance", spec+".target.instanceID", "instances "+list(s.InstanceIDs))},
		{fmt.Sprintf("!has(%s.target.selector) || %s || (%s)", spec, anyInstance, tags),
			fmt.Sprintf("%s + %s + %s", celString("target.selector (it allows selectors that include the tags "), tagWant, celString(")"))},
		{host, refusal("remoteHost", spec+".remoteHost", "remote hosts "+list(s.RemoteHosts))},
		{ports, refusal("remotePort", portWhy, "remote ports "+list(s.RemotePorts))},
		{fmt.Sprintf("!has(%[1]s.documentName) || %[1]s.documentName in %[2]s", spec, celList(docs)),
			refusal("documentName", spec+".documentName", "the AWS port-forwarding documents and "+list(s.Documents))},
		{fmt.Sprintf("!has(%[1]s.roleARN) || %[1]s.roleARN in %[2]s || %[3]s.exists(x, %[1]s.roleARN.startsWith(x))", spec, celList(exact), celList(prefixes)),
			refusal("roleARN", spec+".roleARN", "roles "+list(s.RoleARNs))},
		{fmt.Sprintf("!has(%[1]s.serviceAccountName) || %[1]s.serviceAccountName in %[2]s", spec, celList(sas)),
			refusal("serviceAccountName", spec+".serviceAccountName", "the default tunnel ServiceAccount and "+list(s.ServiceAccountNames))},
	}
}

// desiredAdmissionPolicy is the ValidatingAdmissionPolicy of policies under def.
func desiredAdmissionPolicy(policies []v1alpha1.PortForwardPolicy, def PolicyDefault, defaultSA string) *admissionv1ac.ValidatingAdmissionPolicyApplyConfiguration {
	var vars []*admissionv1ac.VariableApplyConfiguration
	var allowed, selects, reasons []string
	for i := range policies {
		p := &policies[i]
		sel, ok, why := fmt.Sprintf("s%d", i), fmt.Sprintf("a%d", i), fmt.Sprintf("w%d", i)
		parts := policyParts(&p.Spec, defaultSA)
		conds := make([]string, len(parts))
		msg := `""`
		for j := len(parts) - 1; j >= 0; j-- {
			conds[j] = "(" + parts[j][0] + ")"
			msg = fmt.Sprintf("!%s ? %s : %s", conds[j], parts[j][1], msg)
		}
		vars = append(vars,
			admissionv1ac.Variable().WithName(sel).WithExpression(selectorCEL(p.Spec.NamespaceSelector)),
			admissionv1ac.Variable().WithName(ok).WithExpression(fmt.Sprintf("variables.%s && %s", sel, strings.Join(conds, " && "))),
			admissionv1ac.Variable().WithName(why).WithExpression(msg))
		allowed = append(allowed, "variables."+ok)
		selects = append(selects, "variables."+sel)
		reasons = append(reasons, fmt.Sprintf(`(variables.%s ? %s + ": " + variables.%s + "; " : "")`, sel, celString(p.Name), why))
	}
	noneSelects := "true"
	if len(selects) > 0 {
		noneSelects = "!(" + strings.Join(selects, " || ") + ")"
	}
	expr := noneSelects
	if def == PolicyDefaultDeny {
		expr = "false"
	}
	if len(allowed) > 0 {
		expr = fmt.Sprintf("%s || (%s && %s)", strings.Join(allowed, " || "), noneSelects, strconv.FormatBool(def != PolicyDefaultDeny))
	}
	denied := `"no PortForwardPolicy grants namespace " + object.metadata.namespace + ", and the operator denies namespaces without one: ask a cluster administrator for a policy that selects it"`
	if len(reasons) > 0 {
		denied = fmt.Sprintf(`%s ? %s : "denied by every PortForwardPolicy that grants namespace " + object.metadata.namespace + " — " + %s + "change the PortForward, or ask a cluster administrator"`,
			noneSelects, denied, strings.Join(reasons, " + "))
	}
	return admissionPolicy(AdmissionPolicyName, v1alpha1.GroupVersion.Group, v1alpha1.GroupVersion.Version, "portforwards",
		// Only a new or changed spec is judged: metadata updates (finalizers, labels) of a PortForward a
		// tightened policy now denies must still go through.
		admissionv1ac.MatchCondition().WithName("spec-written").
			WithExpression("request.operation == 'CREATE' || object.spec != oldObject.spec"),
		vars,
		admissionv1ac.Validation().
			WithExpression(expr).
			WithMessageExpression(`"PortForwardPolicy: " + (`+denied+`)`).
			WithReason(metav1.StatusReasonForbidden))
}

// admissionPolicy is a ValidatingAdmissionPolicy of the operator's that judges CREATE and UPDATE of one
// resource, where match holds, with one validation; it fails closed.
func admissionPolicy(name, group, version, resource string, match *admissionv1ac.MatchConditionApplyConfiguration,
	vars []*admissionv1ac.VariableApplyConfiguration, validation *admissionv1ac.ValidationApplyConfiguration,
) *admissionv1ac.ValidatingAdmissionPolicyApplyConfiguration {
	return admissionv1ac.ValidatingAdmissionPolicy(name).
		WithLabels(map[string]string{LabelName: LabelNameValue, LabelManagedBy: ManagedByValue}).
		WithSpec(admissionv1ac.ValidatingAdmissionPolicySpec().
			WithFailurePolicy(admissionregistrationv1.Fail).
			WithMatchConstraints(admissionv1ac.MatchResources().WithResourceRules(
				admissionv1ac.NamedRuleWithOperations().
					WithOperations(admissionregistrationv1.Create, admissionregistrationv1.Update).
					WithAPIGroups(group).WithAPIVersions(version).WithResources(resource))).
			WithMatchConditions(match).
			WithVariables(vars...).
			WithValidations(validation))
}

// desiredDeploymentAdmissionPolicy is the ValidatingAdmissionPolicy that lets the operator's own identity
// (operatorUser, e.g. system:serviceaccount:ssmtunnel-system:ssmtunnel) write only Deployments whose pods
// run as a ServiceAccount that a PortForwardPolicy allows in their namespace, the way the PortForward
// check allows spec.serviceAccountName: the default tunnel ServiceAccount or one the policy names, under
// a policy that selects the namespace; in a namespace no policy selects, only under the allow default.
// With the chart's operator guard (image, command, non-root), it bounds what the operator's credentials
// can start even if they leak: the operator may patch only the admission policies it owns.
func desiredDeploymentAdmissionPolicy(policies []v1alpha1.PortForwardPolicy, def PolicyDefault, defaultSA, operatorUser string) *admissionv1ac.ValidatingAdmissionPolicyApplyConfiguration {
	const sa = "variables.sa"
	var allows, selects []string
	for i := range policies {
		p := &policies[i].Spec
		sel := "(" + selectorCEL(p.NamespaceSelector) + ")"
		selects = append(selects, sel)
		allows = append(allows, fmt.Sprintf("(%s && %s in %s)", sel, sa, celList(append([]string{defaultSA}, p.ServiceAccountNames...))))
	}
	expr := strconv.FormatBool(def != PolicyDefaultDeny)
	if len(selects) > 0 {
		expr = fmt.Sprintf("%s || (!(%s) && %s)", strings.Join(allows, " || "), strings.Join(selects, " || "), expr)
	}
	// A Deployment scaled to zero runs nothing, and scaling to zero is how the reconcile stops a PortForward
	// that a tightened policy now denies: it must always go through.
	expr = "(has(object.spec.replicas) && object.spec.replicas == 0) || " + expr
	return admissionPolicy(DeploymentAdmissionPolicyName, "apps", "v1", "deployments",
		admissionv1ac.MatchCondition().WithName("by-the-operator").
			WithExpression("request.userInfo.username == "+celString(operatorUser)),
		[]*admissionv1ac.VariableApplyConfiguration{admissionv1ac.Variable().WithName("sa").WithExpression(
			`has(object.spec.template.spec.serviceAccountName) && object.spec.template.spec.serviceAccountName != "" ? object.spec.template.spec.serviceAccountName : "default"`)},
		admissionv1ac.Validation().
			WithExpression(expr).
			WithMessageExpression(`"PortForwardPolicy: the operator may not run tunnel pods as ServiceAccount " + `+sa+
				` + " in namespace " + object.metadata.namespace + ": no PortForwardPolicy that grants the namespace allows it"`).
			WithReason(metav1.StatusReasonForbidden))
}

// desiredAdmissionPolicyBinding binds the admission policy name to every namespace, denying what it refuses.
func desiredAdmissionPolicyBinding(name string) *admissionv1ac.ValidatingAdmissionPolicyBindingApplyConfiguration {
	return admissionv1ac.ValidatingAdmissionPolicyBinding(name).
		WithLabels(map[string]string{LabelName: LabelNameValue, LabelManagedBy: ManagedByValue}).
		WithSpec(admissionv1ac.ValidatingAdmissionPolicyBindingSpec().
			WithPolicyName(name).
			WithValidationActions(admissionregistrationv1.Deny))
}
