package emulator

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// Names of the AWS-owned Session Manager documents the emulator runs (§2). Shell sessions are out of scope.
const (
	DocPortForwarding             = "AWS-StartPortForwardingSession"
	DocPortForwardingToRemoteHost = "AWS-StartPortForwardingSessionToRemoteHost"
	DocSSH                        = "AWS-StartSSHSession"
)

// docParam is one document parameter: its default (empty and not optional means required) and the pattern
// the value must match, as the published documents declare them.
type docParam struct {
	def      string
	required bool
	pattern  *regexp.Regexp
}

// document is a port-forwarding document: its parameters and how they resolve into the properties the agent
// sends to the client in the handshake (§2, §8.2).
type document struct {
	params  map[string]docParam
	resolve func(p map[string]string) message.PortParameters
}

var portPattern = regexp.MustCompile(`^([1-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$`)
var localPortPattern = regexp.MustCompile(`^([0-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$`)
var hostPattern = regexp.MustCompile(`^[a-zA-Z0-9_.:\-\[\]]{1,253}$`)

var documents = map[string]document{
	DocPortForwarding: {
		params: map[string]docParam{
			"portNumber":      {def: "80", pattern: portPattern},
			"localPortNumber": {def: "0", pattern: localPortPattern},
		},
		resolve: func(p map[string]string) message.PortParameters {
			return message.PortParameters{PortNumber: p["portNumber"], LocalPortNumber: p["localPortNumber"], Type: message.LocalPortForwarding}
		},
	},
	DocPortForwardingToRemoteHost: {
		params: map[string]docParam{
			"host":            {required: true, pattern: hostPattern},
			"portNumber":      {def: "80", pattern: portPattern},
			"localPortNumber": {def: "0", pattern: localPortPattern},
		},
		resolve: func(p map[string]string) message.PortParameters {
			return message.PortParameters{Host: p["host"], PortNumber: p["portNumber"], LocalPortNumber: p["localPortNumber"], Type: message.LocalPortForwarding}
		},
	},
	DocSSH: {
		// No "type": the plugin pipes stdin/stdout and the agent ends the session on destination EOF (§2).
		params: map[string]docParam{"portNumber": {def: "22", pattern: portPattern}},
		resolve: func(p map[string]string) message.PortParameters {
			return message.PortParameters{PortNumber: p["portNumber"]}
		},
	},
}

// resolveDocument validates StartSession's DocumentName and Parameters and returns the resolved properties.
// The error is an *apiError (InvalidDocument or InvalidParameters) as the service would return it.
func resolveDocument(name string, params map[string][]string) (message.PortParameters, error) {
	if name == "" {
		return message.PortParameters{}, errInvalidDocument("DocumentName is required by the emulator: it runs only the port-forwarding documents " + supportedDocs() + "; shell sessions are not emulated")
	}
	doc, ok := documents[name]
	if !ok {
		return message.PortParameters{}, errInvalidDocument(fmt.Sprintf("Document %s is not supported by the emulator; use one of %s", name, supportedDocs()))
	}
	resolved := make(map[string]string, len(doc.params))
	for k, v := range params {
		p, ok := doc.params[k]
		if !ok {
			return message.PortParameters{}, errInvalidParameters(fmt.Sprintf("Parameter %q is not defined by document %s (it takes %s)", k, name, paramNames(doc)))
		}
		if len(v) != 1 {
			return message.PortParameters{}, errInvalidParameters(fmt.Sprintf("Parameter %q of document %s takes exactly one value, got %d", k, name, len(v)))
		}
		if !p.pattern.MatchString(v[0]) {
			return message.PortParameters{}, errInvalidParameters(fmt.Sprintf("Parameter %q value %q does not match the allowed pattern %s", k, v[0], p.pattern))
		}
		resolved[k] = v[0]
	}
	for k, p := range doc.params {
		if _, ok := resolved[k]; ok {
			continue
		}
		if p.required {
			return message.PortParameters{}, errInvalidParameters(fmt.Sprintf("Parameter %q is required by document %s", k, name))
		}
		resolved[k] = p.def
	}
	return doc.resolve(resolved), nil
}

func supportedDocs() string {
	names := make([]string, 0, len(documents))
	for n := range documents {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func paramNames(d document) string {
	names := make([]string, 0, len(d.params))
	for n := range d.params {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
