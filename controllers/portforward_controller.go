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

// Package controllers reconciles PortForwards into tunnel Deployments, Services, PodDisruptionBudgets and
// NetworkPolicies. It knows nothing of the Session Manager wire protocol: the tunnel pods speak it.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
)

// EventTargetChanged is the reason of the Normal event emitted when a selector target moves to another
// instance. Warning events take the reason of the condition the user has to act on (writeStatus).
const EventTargetChanged = "TargetChanged"

// PortForwardReconciler turns a PortForward into its children and reports their state in its status.
type PortForwardReconciler struct {
	client.Client
	// Recorder emits Events on PortForwards.
	Recorder events.EventRecorder
	// Instances resolves selector targets; nil makes every selector target an InvalidTarget.
	Instances InstanceLister
	// Options configure the children (image, region, ServiceAccount, ...).
	Options Options
	// Now stamps condition transitions; time.Now when nil.
	Now func() time.Time
	// MaxConcurrentReconciles is how many PortForwards are reconciled at once; 1 when 0.
	MaxConcurrentReconciles int
	// Pods reads the tunnel pods' reports; HTTPPodReader (over the pod network) when nil.
	Pods PodReader
	// Namespaces are the namespaces the manager's cache holds (--watch-namespaces); empty: all.
	Namespaces []string
}

// +kubebuilder:rbac:groups=ssmtunnel.io,resources=portforwards,verbs=get;list;watch
// +kubebuilder:rbac:groups=ssmtunnel.io,resources=portforwards/status,verbs=get;patch
// Children carry a controller reference with blockOwnerDeletion, which clusters running the
// OwnerReferencesPermissionEnforcement admission plugin (OpenShift, for one) allow only with update on the
// owner's finalizers.
// +kubebuilder:rbac:groups=ssmtunnel.io,resources=portforwards/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=ssmtunnel.io,resources=portforwardpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile resolves the target, applies every child, and writes the status once.
func (r *PortForwardReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pf := &v1alpha1.PortForward{}
	if err := r.Get(ctx, req.NamespacedName, pf); err != nil {
		if apierrors.IsNotFound(err) {
			forgetMetrics(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !pf.DeletionTimestamp.IsZero() {
		forgetMetrics(req.NamespacedName)
		return ctrl.Result{}, nil // children go with it through their owner references
	}
	denied, err := r.checkPolicy(ctx, pf)
	if err != nil {
		return ctrl.Result{}, err
	}
	var obs observed
	if denied != "" {
		// Checked before any lookup: a denied selector is never resolved with the operator's identity.
		obs = observed{target: pf.Status.ResolvedTarget, policyDenied: denied}
		if pf.Spec.Target.InstanceID != "" {
			obs.target = pf.Spec.Target.InstanceID
		}
	} else if obs, err = r.resolveTarget(ctx, pf); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.ensureServiceAccount(ctx, pf); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.ensureDeployment(ctx, pf, obs.target, denied != ""); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.ensureService(ctx, pf); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.ensurePDB(ctx, pf); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.ensureNetworkPolicy(ctx, pf); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.observeChildren(ctx, pf, &obs); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.writeStatus(ctx, pf, obs); err != nil {
		return ctrl.Result{}, err
	}
	recordMetrics(pf)
	// Nothing watches AWS or the tunnel pods' reports: look again while there is something to see.
	var after time.Duration
	if len(obs.reports) > 0 {
		after = r.Options.StatusInterval
	}
	if pf.Spec.Target.Selector != nil && (after == 0 || r.Options.ResolveInterval < after) {
		after = r.Options.ResolveInterval
	}
	return ctrl.Result{RequeueAfter: after}, nil
}

// resolveTarget returns the instance to use. A selector that matches no Online instance, or a lookup AWS
// rejects, is a problem reported in the status, not an error: retrying at once would not help.
func (r *PortForwardReconciler) resolveTarget(ctx context.Context, pf *v1alpha1.PortForward) (observed, error) {
	if id := pf.Spec.Target.InstanceID; id != "" {
		return observed{target: id}, nil
	}
	current := pf.Status.ResolvedTarget
	if pf.Spec.Target.Selector == nil || r.Instances == nil {
		return observed{target: current, problem: targetProblem{v1alpha1.ReasonInvalidTarget,
			"The operator has no Systems Manager client to resolve target.selector"}}, nil
	}
	online, err := r.Instances.OnlineInstances(ctx, region(pf, r.Options), pf.Spec.Target.Selector.Tags)
	switch {
	case errors.Is(err, ErrInstanceLookupRejected):
		log.FromContext(ctx).Error(err, "Instance lookup rejected")
		msg := "Systems Manager refused the lookup of target.selector: see the operator's log"
		var rejected *LookupRejectedError
		if errors.As(err, &rejected) {
			msg = rejected.StatusMessage()
		}
		return observed{target: current, problem: targetProblem{v1alpha1.ReasonInvalidTarget, msg}}, nil
	case err != nil:
		return observed{}, fmt.Errorf("failed to resolve the selector of PortForward %q: %w", pf.Name, err)
	}
	picked := pickInstance(current, online)
	if picked == "" {
		return observed{target: current, problem: targetProblem{v1alpha1.ReasonNoOnlineInstance,
			fmt.Sprintf("No Online managed instance has the tags %v: check the tags and the SSM Agent", pf.Spec.Target.Selector.Tags)}}, nil
	}
	if picked != current {
		log.FromContext(ctx).Info("Resolved selector target", "instance", picked, "previous", current)
		r.Recorder.Eventf(pf, nil, corev1.EventTypeNormal, EventTargetChanged, "ResolveTarget",
			"Using instance %s (previous: %q)", picked, current)
	}
	return observed{target: picked}, nil
}

// apply writes a child with server-side apply under the operator's field owner.
func (r *PortForwardReconciler) apply(ctx context.Context, obj runtime.ApplyConfiguration, kind, name string) error {
	if err := r.Apply(ctx, obj, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("failed to apply %s %q: %w", kind, name, err)
	}
	return nil
}

// ensureServiceAccount creates the namespace's default tunnel ServiceAccount when pf uses it.
func (r *PortForwardReconciler) ensureServiceAccount(ctx context.Context, pf *v1alpha1.PortForward) error {
	if pf.Spec.ServiceAccountName != "" {
		return nil
	}
	return r.apply(ctx, desiredServiceAccount(pf.Namespace, r.Options), "ServiceAccount", r.Options.DefaultServiceAccountName)
}

// ensureDeployment applies the tunnel Deployment, with no replicas while a policy denies pf. Without a
// target yet (a selector that never matched) it leaves the Deployment alone: there is nothing to connect
// to, and a running tunnel keeps its last target.
func (r *PortForwardReconciler) ensureDeployment(ctx context.Context, pf *v1alpha1.PortForward, target string, denied bool) error {
	if target == "" {
		return nil
	}
	d := desiredDeployment(pf, target, r.Options)
	if denied {
		d.Spec.WithReplicas(0)
	}
	return r.apply(ctx, d, "Deployment", pf.Name)
}

// checkPolicy returns why the PortForwardPolicies deny pf, empty when they allow it.
func (r *PortForwardReconciler) checkPolicy(ctx context.Context, pf *v1alpha1.PortForward) (string, error) {
	ns := &corev1.Namespace{}
	if err := r.Get(ctx, client.ObjectKey{Name: pf.Namespace}, ns); err != nil {
		return "", fmt.Errorf("failed to get namespace %q: %w", pf.Namespace, err)
	}
	policies := &v1alpha1.PortForwardPolicyList{}
	if err := r.List(ctx, policies); err != nil {
		return "", fmt.Errorf("failed to list PortForwardPolicies: %w", err)
	}
	return checkPolicies(pf, ns.Labels, policies.Items, r.Options.PolicyDefault, r.Options.DefaultServiceAccountName).denied, nil
}

// ensureService applies the Service. A Service's clusterIP is immutable, so a switch between ClusterIP and
// Headless replaces it.
func (r *PortForwardReconciler) ensureService(ctx context.Context, pf *v1alpha1.PortForward) error {
	existing := &corev1.Service{}
	err := r.Get(ctx, client.ObjectKeyFromObject(pf), existing)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("failed to get Service %q: %w", pf.Name, err)
	case metav1.IsControlledBy(existing, pf) && (existing.Spec.ClusterIP == corev1.ClusterIPNone) != headless(pf):
		if err := r.deleteChild(ctx, existing); err != nil {
			return err
		}
	}
	return r.apply(ctx, desiredService(pf), "Service", pf.Name)
}

// ensurePDB applies the PodDisruptionBudget when there is more than one replica, and removes it otherwise.
func (r *PortForwardReconciler) ensurePDB(ctx context.Context, pf *v1alpha1.PortForward) error {
	if wantPDB(pf) {
		return r.apply(ctx, desiredPDB(pf), "PodDisruptionBudget", pf.Name)
	}
	return r.deleteIfOwned(ctx, pf, &policyv1.PodDisruptionBudget{})
}

// ensureNetworkPolicy applies the NetworkPolicy when one is wanted (wantNetworkPolicy), and removes it
// otherwise.
func (r *PortForwardReconciler) ensureNetworkPolicy(ctx context.Context, pf *v1alpha1.PortForward) error {
	if wantNetworkPolicy(pf, r.Options) {
		return r.apply(ctx, desiredNetworkPolicy(pf, r.Options), "NetworkPolicy", pf.Name)
	}
	return r.deleteIfOwned(ctx, pf, &networkingv1.NetworkPolicy{})
}

// deleteIfOwned deletes pf's child of obj's kind (named like pf) if the cache has one that pf controls;
// reading the cache first keeps a steady state free of writes.
func (r *PortForwardReconciler) deleteIfOwned(ctx context.Context, pf *v1alpha1.PortForward, obj client.Object) error {
	if err := r.Get(ctx, client.ObjectKeyFromObject(pf), obj); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("failed to get %T %q: %w", obj, pf.Name, err)
	}
	if !metav1.IsControlledBy(obj, pf) {
		return nil
	}
	return r.deleteChild(ctx, obj)
}

// deleteChild deletes obj, only if it is still the object that was read (UID precondition).
func (r *PortForwardReconciler) deleteChild(ctx context.Context, obj client.Object) error {
	uid := obj.GetUID()
	err := r.Delete(ctx, obj, client.Preconditions{UID: &uid}, client.PropagationPolicy(metav1.DeletePropagationBackground))
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("failed to delete %T %q: %w", obj, obj.GetName(), err)
	}
	log.FromContext(ctx).Info("Deleted unwanted child", "kind", fmt.Sprintf("%T", obj), "object", klog.KObj(obj))
	return nil
}

// observeChildren reads the Deployment and the tunnel pods from the cache into obs.
func (r *PortForwardReconciler) observeChildren(ctx context.Context, pf *v1alpha1.PortForward, obs *observed) error {
	d := &appsv1.Deployment{}
	switch err := r.Get(ctx, client.ObjectKeyFromObject(pf), d); {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("failed to get Deployment %q: %w", pf.Name, err)
	case metav1.IsControlledBy(d, pf):
		obs.deployment = d
	}
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.InNamespace(pf.Namespace), client.MatchingLabels(selectorLabels(pf))); err != nil {
		return fmt.Errorf("failed to list the pods of PortForward %q: %w", pf.Name, err)
	}
	obs.crashLooping = crashLoopingPods(pods.Items)
	reader := r.Pods
	if reader == nil {
		reader = HTTPPodReader{}
	}
	obs.reports = readReports(ctx, reader, pods.Items)
	for _, rep := range obs.reports {
		if rep.err != nil {
			log.FromContext(ctx).V(1).Info("Could not read a tunnel pod's report", "pod", rep.pod, "err", rep.err)
		}
	}
	return nil
}

// writeStatus computes the status from obs and patches it only when it changed, emitting a Warning event
// when the PortForward newly enters a state the user has to fix.
func (r *PortForwardReconciler) writeStatus(ctx context.Context, pf *v1alpha1.PortForward, obs observed) error {
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	st := computeStatus(pf, obs, r.Options, now())
	if equality.Semantic.DeepEqual(st, pf.Status) {
		return nil
	}
	before := meta.FindStatusCondition(pf.Status.Conditions, v1alpha1.ConditionDegraded)
	after := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionDegraded)
	if after != nil && after.Status == metav1.ConditionTrue && (before == nil || before.Reason != after.Reason) {
		switch after.Reason {
		case v1alpha1.ReasonPolicyDenied, v1alpha1.ReasonInvalidTarget, v1alpha1.ReasonNoOnlineInstance, v1alpha1.ReasonCrashLooping,
			v1alpha1.ReasonTargetNotConnected, v1alpha1.ReasonAccessDenied, v1alpha1.ReasonNoCredentials,
			v1alpha1.ReasonThrottled, v1alpha1.ReasonInvalidDocument, v1alpha1.ReasonSessionEnded, v1alpha1.ReasonSessionFailed:
			r.Recorder.Eventf(pf, nil, corev1.EventTypeWarning, after.Reason, "Reconcile", "%s", after.Message)
		}
	}
	destBefore := meta.FindStatusCondition(pf.Status.Conditions, v1alpha1.ConditionDestinationReachable)
	destAfter := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionDestinationReachable)
	if destAfter != nil && destAfter.Status == metav1.ConditionFalse && (destBefore == nil || destBefore.Status != metav1.ConditionFalse) {
		r.Recorder.Eventf(pf, nil, corev1.EventTypeWarning, destAfter.Reason, "Reconcile", "%s", destAfter.Message)
	}
	orig := pf.DeepCopy()
	pf.Status = st
	if err := r.Status().Patch(ctx, pf, client.MergeFrom(orig)); err != nil {
		return fmt.Errorf("failed to write the status of PortForward %q: %w", pf.Name, err)
	}
	return nil
}

// SetupWithManager watches PortForwards, every child kind they own, and their pods (owned by ReplicaSets,
// so mapped back through the instance label).
func (r *PortForwardReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.PortForward{}).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podToPortForward)).
		// A policy or a namespace's labels can allow or deny PortForwards that did not change.
		Watches(&v1alpha1.PortForwardPolicy{}, handler.EnqueueRequestsFromMapFunc(r.allPortForwards)).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.portForwardsIn)).
		Named("portforward").
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.MaxConcurrentReconciles, 1)}).
		Complete(r)
}

// allPortForwards maps a policy change to every PortForward.
func (r *PortForwardReconciler) allPortForwards(ctx context.Context, _ client.Object) []reconcile.Request {
	return r.requests(ctx)
}

// portForwardsIn maps a namespace change to its PortForwards.
func (r *PortForwardReconciler) portForwardsIn(ctx context.Context, ns client.Object) []reconcile.Request {
	if len(r.Namespaces) > 0 && !slices.Contains(r.Namespaces, ns.GetName()) {
		return nil // not watched: it holds no PortForward of ours
	}
	return r.requests(ctx, client.InNamespace(ns.GetName()))
}

func (r *PortForwardReconciler) requests(ctx context.Context, opts ...client.ListOption) []reconcile.Request {
	list := &v1alpha1.PortForwardList{}
	if err := r.List(ctx, list, opts...); err != nil {
		log.FromContext(ctx).Error(err, "Failed to list PortForwards for a policy or namespace change")
		return nil
	}
	out := make([]reconcile.Request, len(list.Items))
	for i := range list.Items {
		out[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])}
	}
	return out
}

// podToPortForward maps a tunnel pod to its PortForward through the instance label.
func podToPortForward(_ context.Context, obj client.Object) []reconcile.Request {
	name := obj.GetLabels()[LabelInstance]
	if name == "" || obj.GetLabels()[LabelManagedBy] != ManagedByValue {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: name}}}
}

// CacheOptions limits the manager's cache to what the operator needs: children and pods carrying our
// managed-by label, so it never caches every Deployment or pod of the cluster; and, when namespaces is not
// empty, to those namespaces.
func CacheOptions(namespaces []string) cache.Options {
	ours := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue})}
	opts := cache.Options{ByObject: map[client.Object]cache.ByObject{
		&appsv1.Deployment{}:            ours,
		&corev1.Service{}:               ours,
		&policyv1.PodDisruptionBudget{}: ours,
		&networkingv1.NetworkPolicy{}:   ours,
		&corev1.Pod{}:                   ours,
	}}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = make(map[string]cache.Config, len(namespaces))
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}
