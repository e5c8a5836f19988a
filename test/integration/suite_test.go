//go:build integration

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

// Package integration runs the PortForward controller against a real kube-apiserver and etcd (envtest,
// binaries from KUBEBUILDER_ASSETS, built from source by hack/build-kube.sh). envtest runs no Kubernetes
// controllers, so tests set Deployment and pod status themselves.
package integration

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
	"github.com/ssmtunnel/ssmtunnel/controllers"
)

var (
	testEnv   *envtest.Environment
	cfg       *rest.Config
	k8sClient client.Client
	scheme    = runtime.NewScheme()
	nsCounter atomic.Int64
)

func TestMain(m *testing.M) {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	logf.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()})))

	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run `make test-integration` (it builds kube-apiserver and etcd from source)")
		os.Exit(2)
	}
	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		// The default 20 s is too short for a first start on a loaded host.
		ControlPlaneStartTimeout: 3 * time.Minute,
	}
	apiServer := testEnv.ControlPlane.GetAPIServer()
	// envtest's default /24 holds 254 Services; BenchmarkPortForwards500 needs 500.
	apiServer.Configure().Set("service-cluster-ip-range", "10.0.0.0/16")
	if os.Getenv("SSMTUNNEL_TEST_VERBOSE") != "" {
		apiServer.Out, apiServer.Err = os.Stderr, os.Stderr
	}
	var err error
	cfg, err = testEnv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start envtest:", err)
		os.Exit(1)
	}
	cfg.QPS, cfg.Burst = 500, 1000
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		_ = testEnv.Stop()
		os.Exit(1)
	}
	code := m.Run()
	if err := testEnv.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop envtest:", err)
	}
	os.Exit(code)
}

// logLevel keeps the controller quiet (errors only) unless SSMTUNNEL_TEST_VERBOSE is set.
func logLevel() slog.Level {
	if os.Getenv("SSMTUNNEL_TEST_VERBOSE") != "" {
		return slog.LevelDebug
	}
	return slog.LevelError
}

// newNamespace creates a fresh namespace (with the "default" ServiceAccount envtest has no controller to
// create) and deletes nothing: envtest has no namespace controller, each test just uses its own.
func newNamespace(t testing.TB) string {
	t.Helper()
	ns := fmt.Sprintf("t%d-%d", time.Now().UnixNano()%1_000_000, nsCounter.Add(1))
	ctx := context.Background()
	if err := k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	if err := k8sClient.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns}}); err != nil {
		t.Fatalf("create default ServiceAccount: %v", err)
	}
	return ns
}

// testOptions are the operator options of the suite.
func testOptions() controllers.Options {
	return controllers.Options{
		TunnelImage:     "localhost/ssmtunnel:test",
		DefaultRegion:   "eu-west-1",
		AWSEndpointURL:  "http://ssm.test.invalid:4566",
		ResolveInterval: time.Second,
	}.WithDefaults()
}

// startManager runs the operator for namespace ns (its cache limited to ns, like --watch-namespaces) until
// the test ends or stop is called; stop waits for the manager to return.
func startManager(t testing.TB, ns string, opts controllers.Options, instances controllers.InstanceLister) (stop func()) {
	t.Helper()
	return startManagerWith(t, ns, opts, instances, 1)
}

// startManagerWith is startManager with concurrency concurrent reconciles.
func startManagerWith(t testing.TB, ns string, opts controllers.Options, instances controllers.InstanceLister, concurrency int) (stop func()) {
	t.Helper()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  controllers.CacheOptions([]string{ns}),
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatalf("new manager: %v", err)
	}
	r := &controllers.PortForwardReconciler{
		Client:                  mgr.GetClient(),
		Recorder:                mgr.GetEventRecorder("ssmtunnel-operator"),
		Instances:               instances,
		Options:                 opts,
		MaxConcurrentReconciles: concurrency,
		Namespaces:              []string{ns},
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatalf("setup: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var stopped atomic.Bool
	stop = func() {
		if stopped.Swap(true) {
			return
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// ssmClientFor is the real SDK client pointed at an emulator endpoint, with static test keys.
func ssmClientFor(endpoint string) *ssm.Client {
	return ssm.New(ssm.Options{
		Region:       "eu-west-1",
		BaseEndpoint: aws.String(endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", ""),
	})
}

// eventually polls cond until it returns nil or the deadline passes, then fails with the last error.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		<-tick.C
	}
}

// newPF is a valid PortForward in ns; mutate adjusts it.
func newPF(ns, name string, mutate func(pf *v1alpha1.PortForward)) *v1alpha1.PortForward {
	pf := &v1alpha1.PortForward{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.PortForwardSpec{
			Target: v1alpha1.Target{InstanceID: "i-0123456789abcdef0"},
			Ports:  []v1alpha1.PortSpec{{Name: "postgres", Port: 5432, RemotePort: 5432}},
		},
	}
	if mutate != nil {
		mutate(pf)
	}
	return pf
}
