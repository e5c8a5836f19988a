// Package session is the control plane of a port-forwarding tunnel: the SSM API calls that start, resume and
// terminate a Session Manager session (§2), and the lifecycle of one session's data channel, including the
// resume policy of §10.3 without the official client's flaws (a bounded retry budget, the stale StreamUrl and
// stale credentials).
//
// The SSM API is reached through the narrow API interface, which *ssm.Client satisfies, configured from the
// SDK's standard chain (AWS_ENDPOINT_URL_SSM, region, credentials: env, shared files, web identity/IRSA,
// container credentials/Pod Identity) so the same code talks to AWS, a VPC endpoint or the local emulator.
package session
