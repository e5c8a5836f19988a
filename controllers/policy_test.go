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
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
)

func policy(name string, ns map[string]string, mutate func(*v1alpha1.PortForwardPolicySpec)) v1alpha1.PortForwardPolicy {
	p := v1alpha1.PortForwardPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.PortForwardPolicySpec{NamespaceSelector: metav1.LabelSelector{MatchLabels: ns}}}
	if mutate != nil {
		mutate(&p.Spec)
	}
	return p
}

// policyCase is one PortForward in a namespace with labels ns under policies and a default.
type policyCase struct {
	name     string
	ns       map[string]string
	policies []v1alpha1.PortForwardPolicy
	def      PolicyDefault
	mutate   func(*v1alpha1.PortForward)
	denied   string // substring of the message; empty: allowed
}

// policyCases are shared by TestCheckPolicies and the envtest comparison of the admission policy.
func policyCases() []policyCase {
	teamA := map[string]string{"team": "a", "kubernetes.io/metadata.name": "apps"}
	dbs := policy("team-a-dbs", map[string]string{"team": "a"}, func(s *v1alpha1.PortForwardPolicySpec) {
		s.InstanceIDs = []string{"i-0123456789abcdef0"}
		s.RemoteHosts = []string{"10.0.0.0/8", "*.db.internal", "cache.internal", "fd00:5::/64"}
		s.RemotePorts = []string{"5432", "6379", "8000-8999"}
		s.Documents = []string{"Team-A-Forward"}
		s.RoleARNs = []string{"arn:aws:iam::123456789012:role/team-a-*"}
		s.ServiceAccountNames = []string{"tunnel-a"}
	})
	tagged := policy("by-team-tag", map[string]string{}, func(s *v1alpha1.PortForwardPolicySpec) {
		s.SelectorTags = []v1alpha1.RequiredTag{{Key: "team", ValueFromNamespaceLabel: "team"}, {Key: "env", Value: "prod"}}
	})
	anyInstance := policy("any-instance-b", map[string]string{"team": "b"}, func(s *v1alpha1.PortForwardPolicySpec) { s.InstanceIDs = []string{"*"} })
	morePorts := policy("more-ports", map[string]string{"team": "a"}, func(s *v1alpha1.PortForwardPolicySpec) { s.RemotePorts = []string{"22"} })
	all := []v1alpha1.PortForwardPolicy{dbs, tagged, anyInstance, morePorts}

	return []policyCase{
		{"no policy, default allow", teamA, nil, PolicyDefaultAllow, nil, ""},
		{"no policy, default deny", teamA, nil, PolicyDefaultDeny, nil, "no PortForwardPolicy grants namespace apps"},
		{"no policy selects the namespace", map[string]string{"team": "c"}, []v1alpha1.PortForwardPolicy{dbs}, PolicyDefaultDeny, nil, "no PortForwardPolicy grants"},
		{"a policy for another namespace does not count under allow", map[string]string{"team": "c"}, []v1alpha1.PortForwardPolicy{dbs}, PolicyDefaultAllow, nil, ""},
		{"under allow, a policy that selects the namespace still decides", teamA, []v1alpha1.PortForwardPolicy{dbs}, PolicyDefaultAllow,
			func(pf *v1alpha1.PortForward) { pf.Spec.Ports[0].RemotePort = 3306 }, "team-a-dbs: remotePort 3306 (it allows remote ports 5432, 6379, 8000-8999)"},
		{"allowed instance and port", teamA, all, PolicyDefaultDeny, nil, ""},
		{"instance not listed", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.Target.InstanceID = "i-0fedcba9876543210" },
			"denied by every PortForwardPolicy that grants namespace apps — team-a-dbs: instance i-0fedcba9876543210 (it allows instances i-0123456789abcdef0); by-team-tag: instance i-0fedcba9876543210 (it allows instances none); more-ports: instance"},
		{"* allows any instance", map[string]string{"team": "b"}, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.Target.InstanceID = "i-0fedcba9876543210" }, ""},
		{"selector with the namespace's team tag", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) {
			pf.Spec.Target = v1alpha1.Target{Selector: &v1alpha1.InstanceSelector{Tags: map[string]string{"team": "a", "env": "prod", "role": "db"}}}
		}, ""},
		{"selector with another team's tag", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) {
			pf.Spec.Target = v1alpha1.Target{Selector: &v1alpha1.InstanceSelector{Tags: map[string]string{"team": "b", "env": "prod"}}}
		}, "it allows selectors that include the tags team=a (the namespace's label team), env=prod"},
		{"selector missing a required tag", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) {
			pf.Spec.Target = v1alpha1.Target{Selector: &v1alpha1.InstanceSelector{Tags: map[string]string{"team": "a"}}}
		}, "target.selector (it allows"},
		{"selector in a namespace without the label", map[string]string{"x": "y"}, []v1alpha1.PortForwardPolicy{tagged}, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) {
			pf.Spec.Target = v1alpha1.Target{Selector: &v1alpha1.InstanceSelector{Tags: map[string]string{"team": "", "env": "prod"}}}
		}, "target.selector (it allows"},
		{"remote host in a CIDR", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.RemoteHost = "10.1.2.3" }, ""},
		{"remote host outside the CIDRs", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.RemoteHost = "192.168.1.1" }, "remoteHost 192.168.1.1"},
		{"IPv6 remote host in a CIDR", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.RemoteHost = "fd00:5::12" }, ""},
		{"name below a wildcard", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.RemoteHost = "Primary.DB.internal" }, ""},
		{"the wildcard's own name is not below it", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.RemoteHost = "db.internal" }, "remoteHost db.internal"},
		{"a name that only ends like an allowed one", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.RemoteHost = "evildb.internal" }, "remoteHost evildb.internal"},
		{"exact name", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.RemoteHost = "cache.internal" }, ""},
		{"a numeric name never matches a CIDR", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.RemoteHost = "10.0.0.1.nip.example" }, "remoteHost"},
		{"remote host without any policy allowing hosts", map[string]string{"team": "b"}, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.RemoteHost = "10.1.2.3" }, "any-instance-b: remoteHost 10.1.2.3 (it allows remote hosts none)"},
		{"port in a range", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.Ports[0].RemotePort = 8443 }, ""},
		{"port 22 from a second policy", teamA, []v1alpha1.PortForwardPolicy{dbs, policy("ssh", map[string]string{"team": "a"}, func(s *v1alpha1.PortForwardPolicySpec) {
			s.InstanceIDs, s.RemotePorts = []string{"i-0123456789abcdef0"}, []string{"22"}
		})}, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.Ports[0].RemotePort = 22 }, ""},
		{"two policies never combine into a grant neither makes", teamA, []v1alpha1.PortForwardPolicy{dbs, morePorts}, PolicyDefaultDeny,
			func(pf *v1alpha1.PortForward) { pf.Spec.Ports[0].RemotePort = 22 }, "team-a-dbs: remotePort 22 (it allows remote ports 5432, 6379, 8000-8999); more-ports: instance"},
		{"port outside every policy", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.Ports[0].RemotePort = 3306 }, "remotePort 3306"},
		{"one of several ports denied", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) {
			pf.Spec.Ports = append(pf.Spec.Ports, v1alpha1.PortSpec{Name: "mysql", Port: 3306, RemotePort: 3306})
		}, "remotePort 3306"},
		{"an AWS port-forwarding document is always allowed", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.DocumentName = "AWS-StartPortForwardingSession" }, ""},
		{"a listed custom document", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.DocumentName = "Team-A-Forward" }, ""},
		{"policy values reach the message verbatim, quotes and backslashes too", teamA, []v1alpha1.PortForwardPolicy{policy("odd", map[string]string{"team": "a"}, func(s *v1alpha1.PortForwardPolicySpec) {
			s.InstanceIDs, s.Documents = []string{"*"}, []string{`Doc "A" \ ' + x`}
		})}, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.DocumentName = "Other-Doc" }, `documentName Other-Doc (it allows the AWS port-forwarding documents and Doc "A" \ ' + x)`},
		{"another account's document", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) {
			pf.Spec.DocumentName = "arn:aws:ssm:eu-west-1:999999999999:document/Forward"
		}, "documentName arn:aws:ssm:eu-west-1:999999999999:document/Forward"},
		{"role by prefix", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.RoleARN = "arn:aws:iam::123456789012:role/team-a-db" }, ""},
		{"role of another team", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.RoleARN = "arn:aws:iam::123456789012:role/team-b-db" }, "roleARN arn:aws:iam::123456789012:role/team-b-db"},
		{"role in another account", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.RoleARN = "arn:aws:iam::999999999999:role/team-a-db" }, "roleARN"},
		{"listed ServiceAccount", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.ServiceAccountName = "tunnel-a" }, ""},
		{"the default ServiceAccount by name", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.ServiceAccountName = "ssmtunnel-tunnel" }, ""},
		{"another ServiceAccount", teamA, all, PolicyDefaultDeny, func(pf *v1alpha1.PortForward) { pf.Spec.ServiceAccountName = "default" }, "serviceAccountName default"},
		{"matchExpressions selector", map[string]string{"tier": "gold"}, []v1alpha1.PortForwardPolicy{{
			ObjectMeta: metav1.ObjectMeta{Name: "gold"},
			Spec: v1alpha1.PortForwardPolicySpec{NamespaceSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"gold", "silver"}}}}, InstanceIDs: []string{"*"}},
		}}, PolicyDefaultDeny, nil, ""},
	}
}

func TestCheckPolicies(t *testing.T) {
	for _, tc := range policyCases() {
		t.Run(tc.name, func(t *testing.T) {
			pf := basePF()
			if tc.mutate != nil {
				tc.mutate(pf)
			}
			got := checkPolicies(pf, tc.ns, tc.policies, tc.def, "ssmtunnel-tunnel").denied
			switch {
			case tc.denied == "" && got != "":
				t.Errorf("denied: %s; want allowed", got)
			case tc.denied != "" && !strings.Contains(got, tc.denied):
				t.Errorf("verdict %q; want a denial containing %q", got, tc.denied)
			}
		})
	}
}

type rejectingLister struct{ err error }

func (l rejectingLister) OnlineInstances(context.Context, string, map[string]string) ([]string, error) {
	return nil, l.err
}

// The operator's own role and account never reach a tenant's status: only the error code does.
func TestRejectedLookupIsSanitised(t *testing.T) {
	pf := basePF()
	pf.Spec.Target = v1alpha1.Target{Selector: &v1alpha1.InstanceSelector{Tags: map[string]string{"team": "a"}}}
	r := &PortForwardReconciler{Instances: rejectingLister{&LookupRejectedError{Code: "AccessDeniedException",
		Message: "User: arn:aws:sts::111122223333:assumed-role/ssmtunnel-operator/x is not authorized to perform: ssm:DescribeInstanceInformation"}}}
	obs, err := r.resolveTarget(context.Background(), pf)
	if err != nil {
		t.Fatal(err)
	}
	if obs.problem.Reason != v1alpha1.ReasonInvalidTarget || strings.Contains(obs.problem.Message, "111122223333") ||
		strings.Contains(obs.problem.Message, "arn:") || !strings.Contains(obs.problem.Message, "AccessDeniedException") {
		t.Errorf("problem %+v: want InvalidTarget naming the code and no ARN or account", obs.problem)
	}
}
