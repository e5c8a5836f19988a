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

package integration

import (
	"fmt"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
	"github.com/ssmtunnel/ssmtunnel/controllers"
)

// benchPortForwards is how many PortForwards BenchmarkPortForwards500 creates.
const benchPortForwards = 500

// BenchmarkPortForwards500 creates 500 PortForwards with the operator running and reports the time until
// every Deployment, Service and PodDisruptionBudget exists and every status is written, and the reconciles
// per second over that time. It asserts nothing about time; run it once:
//
//	KUBEBUILDER_ASSETS=$PWD/bin/k8s/v1.37.2 go test -tags integration -run '^$' -bench PortForwards500 -benchtime 1x ./test/integration/
func BenchmarkPortForwards500(b *testing.B) {
	for range b.N {
		ns := newNamespace(b)
		r := reconcileTotal(b)
		stop := startManagerConcurrency(b, ns, 4)
		start := time.Now()

		sem := make(chan struct{}, 16)
		var wg sync.WaitGroup
		errs := make(chan error, benchPortForwards)
		for i := range benchPortForwards {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				if err := k8sClient.Create(ctx, newPF(ns, fmt.Sprintf("pf-%03d", i), nil)); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatalf("create: %v", err)
		}
		created := time.Since(start)

		count := func(list client.ObjectList) (int, error) {
			if err := k8sClient.List(ctx, list, client.InNamespace(ns)); err != nil {
				return 0, err
			}
			switch l := list.(type) {
			case *appsv1.DeploymentList:
				return len(l.Items), nil
			case *corev1.ServiceList:
				return len(l.Items), nil
			case *policyv1.PodDisruptionBudgetList:
				return len(l.Items), nil
			case *v1alpha1.PortForwardList:
				n := 0
				for _, pf := range l.Items {
					if pf.Status.ObservedGeneration == pf.Generation {
						n++
					}
				}
				return n, nil
			}
			return 0, fmt.Errorf("unexpected %T", list)
		}
		eventually(b, 10*time.Minute, "all children and statuses", func() error {
			for _, list := range []client.ObjectList{&v1alpha1.PortForwardList{}, &appsv1.DeploymentList{}, &corev1.ServiceList{}, &policyv1.PodDisruptionBudgetList{}} {
				n, err := count(list)
				if err != nil {
					return err
				}
				if n < benchPortForwards {
					return fmt.Errorf("%T: %d of %d", list, n, benchPortForwards)
				}
			}
			return nil
		})
		elapsed := time.Since(start)
		reconciles := reconcileTotal(b) - r
		stop()
		b.ReportMetric(elapsed.Seconds(), "s-to-all-children")
		b.ReportMetric(reconciles/elapsed.Seconds(), "reconciles/s")
		b.ReportMetric(reconciles, "reconciles")
		b.Logf("%d PortForwards: created in %s; all Deployments, Services, PDBs and statuses after %s; %.0f reconciles, %.1f reconciles/s",
			benchPortForwards, created.Round(time.Millisecond), elapsed.Round(time.Millisecond), reconciles, reconciles/elapsed.Seconds())
	}
}

// startManagerConcurrency is startManager with several concurrent reconciles, like the operator's default.
func startManagerConcurrency(b *testing.B, ns string, n int) func() {
	opts := testOptions()
	opts.ResolveInterval = controllers.DefaultResolveInterval
	return startManagerWith(b, ns, opts, nil, n)
}
