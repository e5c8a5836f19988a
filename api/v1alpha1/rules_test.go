package v1alpha1_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

// crdRule returns the regular expression of the CRD's single self.matches rule on a field, as generated.
func crdRule(t *testing.T, path ...string) string {
	t.Helper()
	return crdRules(t, path...)[0]
}

// crdRules returns the regular expressions of every self.matches rule on a field, in order; a rule
// "!self.matches('a') || self.matches('b')" gives a and b.
func crdRules(t *testing.T, path ...string) []string {
	t.Helper()
	b, err := os.ReadFile("../../config/crd/bases/ssmtunnel.io_portforwards.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(b, &crd); err != nil {
		t.Fatal(err)
	}
	prop := *crd.Spec.Versions[0].Schema.OpenAPIV3Schema
	for _, p := range path {
		prop = prop.Properties[p]
	}
	var out []string
	for _, v := range prop.XValidations {
		for _, m := range regexp.MustCompile(`self\.matches\('([^']*)'\)`).FindAllStringSubmatch(v.Rule, -1) {
			out = append(out, m[1]) // CEL's matches is RE2, as Go's regexp
		}
	}
	if len(out) == 0 {
		t.Fatalf("%v has no self.matches rule", path)
	}
	return out
}

// The fields whose rule is the tunnel's own pattern, character for character.
func TestCRDRulesAreTheTunnels(t *testing.T) {
	for _, tc := range []struct {
		field, tunnel string
	}{
		{"documentName", session.DocumentPattern},
		{"region", session.RegionPattern},
		{"roleARN", session.RoleARNPattern},
	} {
		if got := crdRule(t, "spec", tc.field); got != tc.tunnel {
			t.Errorf("spec.%s rule %q, the tunnel's pattern is %q: write the marker from the tunnel's pattern", tc.field, got, tc.tunnel)
		}
	}
	want := []string{session.DocumentPattern, session.AWSDocumentPattern, session.AWSPortDocumentPattern}
	if got := crdRules(t, "spec", "documentName"); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("spec.documentName rules %q, the tunnel's patterns are %q", got, want)
	}
}

// The API server and the tunnel binary agree on every instance ID: one the CRD accepts never makes the
// tunnel pods crash-loop on their arguments, and one the tunnel refuses is refused by kubectl apply.
func TestInstanceIDRuleMatchesTunnel(t *testing.T) {
	rule := regexp.MustCompile(crdRule(t, "spec", "target", "instanceID"))
	ids := []string{
		"i-01234567", "i-0123456789abcdef0", "mi-0123456789abcdef0", // valid forms
		"i-0123456", "i-012345678", "i-0123456789", "i-0123456789abcdef", "i-0123456789abcdef01",
		"mi-01234567", "mi-0123456789abcdef", "i-0123456789ABCDEF0", "x-0123456789abcdef0", "i-", "",
	}
	const hex = "0123456789abcdef"
	for n := 0; n <= 20; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = hex[(i*7+n)%16]
		}
		ids = append(ids, "i-"+string(b), "mi-"+string(b))
	}
	for _, id := range ids {
		crd := rule.MatchString(id)
		tunnel := session.Spec{Target: id, RemotePort: 1}.Validate() == nil
		if crd != tunnel {
			t.Errorf("instance ID %q: CRD accepts %t, tunnel accepts %t", id, crd, tunnel)
		}
	}
}
