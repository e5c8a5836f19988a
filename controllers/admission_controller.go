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
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/types"
	admissionv1ac "k8s.io/client-go/applyconfigurations/admissionregistration/v1"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
)

// AdmissionPolicyReconciler keeps the ValidatingAdmissionPolicies in step with the PortForwardPolicies:
// desiredAdmissionPolicy, so kubectl apply refuses what the PortForward reconciler would deny, and, when
// the operator knows its own username, desiredDeploymentAdmissionPolicy.
type AdmissionPolicyReconciler struct {
	client.Client
	// Options give the policy default and the default tunnel ServiceAccount.
	Options Options
}

// Creating any admission policy is harmless (a policy can only refuse more), but the operator may change
// only its own: not the chart's guard of its Deployments.
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingadmissionpolicies;validatingadmissionpolicybindings,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingadmissionpolicies;validatingadmissionpolicybindings,verbs=patch,resourceNames=portforwardpolicies.ssmtunnel.io;tunnel-deployments.ssmtunnel.io

// Reconcile writes the admission policies and their bindings from every PortForwardPolicy.
func (r *AdmissionPolicyReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	policies := &v1alpha1.PortForwardPolicyList{}
	if err := r.List(ctx, policies); err != nil {
		return ctrl.Result{}, fmt.Errorf("failed to list PortForwardPolicies: %w", err)
	}
	o := r.Options
	vaps := []*admissionv1ac.ValidatingAdmissionPolicyApplyConfiguration{
		desiredAdmissionPolicy(policies.Items, o.PolicyDefault, o.DefaultServiceAccountName),
	}
	if o.OperatorUsername != "" {
		vaps = append(vaps, desiredDeploymentAdmissionPolicy(policies.Items, o.PolicyDefault, o.DefaultServiceAccountName, o.OperatorUsername))
	}
	for _, vap := range vaps {
		if err := r.Apply(ctx, vap, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			return ctrl.Result{}, fmt.Errorf("failed to apply ValidatingAdmissionPolicy %s: %w", *vap.Name, err)
		}
		if err := r.Apply(ctx, desiredAdmissionPolicyBinding(*vap.Name), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			return ctrl.Result{}, fmt.Errorf("failed to apply ValidatingAdmissionPolicyBinding %s: %w", *vap.Name, err)
		}
	}
	return ctrl.Result{}, nil
}

// SetupWithManager reconciles one key: at start, on every policy change, and when someone changes or
// deletes one of the admission policies or their bindings.
func (r *AdmissionPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	key := reconcile.Request{NamespacedName: types.NamespacedName{Name: AdmissionPolicyName}}
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request { return []reconcile.Request{key} })
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetName() == AdmissionPolicyName || o.GetName() == DeploymentAdmissionPolicyName
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("admissionpolicy").
		WatchesRawSource(source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
			q.Add(key)
			return nil
		})).
		Watches(&v1alpha1.PortForwardPolicy{}, one).
		Watches(&admissionregistrationv1.ValidatingAdmissionPolicy{}, one, builder.WithPredicates(ours)).
		Watches(&admissionregistrationv1.ValidatingAdmissionPolicyBinding{}, one, builder.WithPredicates(ours)).
		Complete(r)
}
