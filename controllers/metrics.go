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
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/ssmtunnel/ssmtunnel/api/v1alpha1"
)

// Per-PortForward state, exported from the status the operator wrote, so dashboards and alerts see what
// `kubectl get pf` shows. Every series carries namespace and portforward; a deleted PortForward's series
// are removed.
var (
	pfLabels = []string{"namespace", "portforward"}

	metricReady = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ssmtunnel_portforward_ready",
		Help: "1 when the PortForward's Ready condition is True.",
	}, pfLabels)
	metricCondition = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ssmtunnel_portforward_condition",
		Help: "1 for each condition of the PortForward, with its current status (True, False, Unknown) and reason.",
	}, append(pfLabels, "type", "status", "reason"))
	metricReplicas = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ssmtunnel_portforward_replicas",
		Help: "Tunnel pods the PortForward asks for (spec.replicas).",
	}, pfLabels)
	metricReadyReplicas = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ssmtunnel_portforward_ready_replicas",
		Help: "Tunnel pods of the PortForward that are ready.",
	}, pfLabels)
)

func init() {
	metrics.Registry.MustRegister(metricReady, metricCondition, metricReplicas, metricReadyReplicas)
}

// recordMetrics exports pf's status as written.
func recordMetrics(pf *v1alpha1.PortForward) {
	l := prometheus.Labels{"namespace": pf.Namespace, "portforward": pf.Name}
	ready := 0.0
	metricCondition.DeletePartialMatch(l)
	for _, c := range pf.Status.Conditions {
		if c.Type == v1alpha1.ConditionReady && c.Status == metav1.ConditionTrue {
			ready = 1
		}
		metricCondition.WithLabelValues(pf.Namespace, pf.Name, c.Type, string(c.Status), c.Reason).Set(1)
	}
	metricReady.With(l).Set(ready)
	metricReplicas.With(l).Set(float64(replicas(pf)))
	metricReadyReplicas.With(l).Set(float64(pf.Status.ReadyReplicas))
}

// forgetMetrics removes the series of a PortForward that no longer exists.
func forgetMetrics(key types.NamespacedName) {
	l := prometheus.Labels{"namespace": key.Namespace, "portforward": key.Name}
	for _, v := range []*prometheus.GaugeVec{metricReady, metricCondition, metricReplicas, metricReadyReplicas} {
		v.DeletePartialMatch(l)
	}
}
