// Package tunnel is the root of the Session Manager client library. It imports nothing from Kubernetes:
// the operator only ever starts the ssmtunnel binary built on it.
package tunnel

// Version is the ssmtunnel release, stamped at build time with
// -ldflags "-X github.com/ssmtunnel/ssmtunnel/tunnel.Version=v0.1.0".
var Version = "dev"
