package v1alpha1_test

import (
	"os"
	"regexp"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

// crdRule returns the regular expression of the CRD's single self.matches rule on a field, as generated.
func crdRule(t *testing.T, path ...string) string {
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
	if len(prop.XValidations) != 1 {
		t.Fatalf("%v has %d CEL rules, want 1", path, len(prop.XValidations))
	}
	m := regexp.MustCompile(`^self\.matches\('(.*)'\)$`).FindStringSubmatch(prop.XValidations[0].Rule)
	if m == nil {
		t.Fatalf("%v rule %q is not a single self.matches", path, prop.XValidations[0].Rule)
	}
	return m[1] // CEL's matches is RE2, as Go's regexp
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
