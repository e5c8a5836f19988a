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

// Command manager is the ssmtunnel operator: it reconciles PortForwards into tunnel pods behind Services.
// It only wires flags, the manager, and the controller together.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
	"github.com/ssmtunnel/ssmtunnel/controllers"
	"github.com/ssmtunnel/ssmtunnel/tunnel"
)

// leaderElectionID is fixed so every replica of the operator competes for the same Lease.
const leaderElectionID = "ssmtunnel-operator.ssmtunnel.io"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		metricsAddr, probeAddr, watchNamespaces, saAnnotations, metricsFrom string
		operatorSA                                                          string
		leaderElect, secureMetrics, enableHTTP2                             bool
		concurrency                                                         int
		opts                                                                controllers.Options
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8443", "Address of the metrics endpoint (HTTPS, authenticated and authorized through the API server); 0 disables it.")
	flag.BoolVar(&secureMetrics, "metrics-secure", true, "Serve metrics over HTTPS with authentication and authorization; false serves plain HTTP.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader so only one operator replica reconciles at a time.")
	flag.BoolVar(&enableHTTP2, "enable-http2", false, "Serve metrics over HTTP/2 (off by default: HTTP/2 rapid reset and stream cancellation CVEs).")
	flag.StringVar(&watchNamespaces, "watch-namespaces", os.Getenv("WATCH_NAMESPACES"), "Comma-separated namespaces to watch; empty watches all (env WATCH_NAMESPACES).")
	flag.StringVar(&opts.TunnelImage, "tunnel-image", os.Getenv("TUNNEL_IMAGE"), "Image of the tunnel pods, normally the operator's own image (env TUNNEL_IMAGE).")
	flag.StringVar(&opts.DefaultRegion, "default-region", os.Getenv("AWS_REGION"), "AWS region for PortForwards without spec.region (env AWS_REGION).")
	flag.StringVar(&opts.AWSEndpointURL, "aws-endpoint-url", "", "Systems Manager endpoint URL for the operator and the tunnel pods (a VPC endpoint or the emulator); empty uses the SDK default.")
	flag.StringVar(&opts.CredentialsSecretName, "tunnel-credentials-secret", controllers.DefaultCredentialsSecretName, "Optional Secret in each PortForward's namespace loaded into the tunnel pods' environment (AWS_ACCESS_KEY_ID, ...), for clusters without IRSA or Pod Identity.")
	flag.StringVar(&opts.DefaultServiceAccountName, "default-tunnel-service-account", controllers.DefaultTunnelServiceAccountName, "ServiceAccount the operator creates in a PortForward's namespace for tunnel pods when spec.serviceAccountName is empty.")
	flag.StringVar(&saAnnotations, "tunnel-service-account-annotations", "", "Comma-separated key=value annotations of the default tunnel ServiceAccount, e.g. eks.amazonaws.com/role-arn=arn:aws:iam::123456789012:role/tunnel; {namespace} in a value becomes the namespace (a role per team).")
	flag.DurationVar(&opts.DrainTimeout, "drain-timeout", controllers.DefaultDrainTimeout, "How long terminating tunnel pods let open connections finish.")
	flag.DurationVar(&opts.ResolveInterval, "resolve-interval", controllers.DefaultResolveInterval, "How often selector targets are looked up again in Systems Manager.")
	flag.DurationVar(&opts.StatusInterval, "status-interval", controllers.DefaultStatusInterval, "How often the tunnel pods' /readyz is read again for the PortForward's status.")
	flag.StringVar(&opts.DefaultClients, "default-clients", controllers.DefaultClientsAll, "Who may connect to PortForwards without spec.allowedClients: all, or namespace (only pods of the PortForward's namespace, through a NetworkPolicy).")
	flag.StringVar(&metricsFrom, "metrics-from-namespaces", "", "Comma-separated namespaces that alone may scrape the tunnel pods' metrics port (empty: any).")
	flag.BoolVar(&opts.AdmissionPolicy, "admission-policy", true, "Keep a ValidatingAdmissionPolicy from the PortForwardPolicies, so kubectl apply refuses what they deny.")
	flag.StringVar((*string)(&opts.PolicyDefault), "policy-default", string(controllers.PolicyDefaultAllow), "What applies to namespaces no PortForwardPolicy selects: allow, or deny (recommended when teams share the cluster).")
	flag.StringVar(&opts.OperatorNamespace, "operator-namespace", os.Getenv("POD_NAMESPACE"), "The operator's namespace, which the tunnel pods' NetworkPolicies admit to their health port (env POD_NAMESPACE).")
	flag.StringVar(&operatorSA, "operator-service-account", os.Getenv("POD_SERVICE_ACCOUNT"), "The operator's own ServiceAccount in --operator-namespace (env POD_SERVICE_ACCOUNT): an admission policy then lets it write only Deployments whose ServiceAccount a PortForwardPolicy allows.")
	flag.IntVar(&concurrency, "max-concurrent-reconciles", 4, "How many PortForwards are reconciled at once.")
	var logLevel slog.Level
	flag.TextVar(&logLevel, "log-level", slog.LevelInfo, "Log level: DEBUG, INFO, WARN or ERROR.")
	showVersion := flag.Bool("version", false, "Print the version and exit.")
	flag.Parse()
	if *showVersion {
		fmt.Println(tunnel.BuildInfo().Line("manager"))
		return nil
	}
	ctrl.SetLogger(logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel})))
	log := ctrl.Log.WithName("setup")

	annotations, err := parseKeyValues(saAnnotations)
	if err != nil {
		return fmt.Errorf("--tunnel-service-account-annotations: %w", err)
	}
	opts.ServiceAccountAnnotations = annotations
	if operatorSA != "" {
		if opts.OperatorNamespace == "" {
			return errors.New("--operator-service-account needs --operator-namespace (env POD_NAMESPACE)")
		}
		opts.OperatorUsername = "system:serviceaccount:" + opts.OperatorNamespace + ":" + operatorSA // how the API server names a ServiceAccount
	}
	for ns := range strings.SplitSeq(metricsFrom, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			opts.MetricsFromNamespaces = append(opts.MetricsFromNamespaces, ns)
		}
	}
	opts = opts.WithDefaults()
	if err := opts.Validate(); err != nil {
		return err
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))

	var tlsOpts []func(*tls.Config)
	if !enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOpts := metricsserver.Options{BindAddress: metricsAddr, SecureServing: secureMetrics, TLSOpts: tlsOpts}
	if secureMetrics {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	var namespaces []string
	for ns := range strings.SplitSeq(watchNamespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			namespaces = append(namespaces, ns)
		}
	}

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        probeAddr,
		LeaderElection:                leaderElect,
		LeaderElectionID:              leaderElectionID,
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(namespaces),
	})
	if err != nil {
		return fmt.Errorf("failed to create the manager: %w", err)
	}

	ctx := ctrl.SetupSignalHandler()
	ssmClient, err := newSSMClient(ctx, opts)
	if err != nil {
		return err
	}
	if err := (&controllers.PortForwardReconciler{
		Client:                  mgr.GetClient(),
		Recorder:                mgr.GetEventRecorder("ssmtunnel-operator"),
		Instances:               controllers.SSMInstanceLister{Client: ssmClient},
		Options:                 opts,
		MaxConcurrentReconciles: concurrency,
		Namespaces:              namespaces,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("failed to set up the PortForward controller: %w", err)
	}
	if opts.AdmissionPolicy {
		if err := (&controllers.AdmissionPolicyReconciler{Client: mgr.GetClient(), Options: opts}).SetupWithManager(mgr); err != nil {
			return fmt.Errorf("failed to set up the admission policy controller: %w", err)
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("failed to add the health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("failed to add the ready check: %w", err)
	}

	log.Info("Starting manager", "version", tunnel.BuildInfo().String(), "tunnelImage", opts.TunnelImage,
		"defaultRegion", opts.DefaultRegion, "namespaces", namespaces)
	return mgr.Start(ctx)
}

// newSSMClient builds the Systems Manager client from the SDK's standard configuration (IRSA, Pod Identity,
// environment), with the default region and endpoint override.
func newSSMClient(ctx context.Context, opts controllers.Options) (*ssm.Client, error) {
	var loadOpts []func(*awsconfig.LoadOptions) error
	if opts.DefaultRegion != "" {
		loadOpts = append(loadOpts, awsconfig.WithRegion(opts.DefaultRegion))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("failed to load the AWS configuration: %w", err)
	}
	return ssm.NewFromConfig(cfg, func(o *ssm.Options) {
		if opts.AWSEndpointURL != "" {
			o.BaseEndpoint = aws.String(opts.AWSEndpointURL)
		}
	}), nil
}

// parseKeyValues parses "k=v,k2=v2".
func parseKeyValues(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	out := map[string]string{}
	for kv := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}
