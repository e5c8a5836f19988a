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
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TunnelReport is what a tunnel pod says about itself on its health port's /readyz: the part of the
// tunnel's JSON the operator uses (the contract is in cmd/ssmtunnel; a test decodes the tunnel's own
// output into this type).
type TunnelReport struct {
	Ready bool         `json:"ready"`
	Ports []PortReport `json:"ports"`
}

// PortReport is one forwarded port of a TunnelReport.
type PortReport struct {
	// Port is "LOCAL:REMOTE" of the tunnel's listener.
	Port  string `json:"port"`
	Ready bool   `json:"ready"`
	// Reason classifies the port's last session error (TargetNotConnected, AccessDenied, ...). The raw
	// error text the tunnel also serves is never copied into the status: it can name roles and accounts.
	Reason string `json:"reason,omitempty"`
	// Destination is reachable, unreachable or unknown, last seen at DestinationAt.
	Destination      string     `json:"destination"`
	DestinationAt    *time.Time `json:"destinationAt,omitempty"`
	DestinationError string     `json:"destinationError,omitempty"`
}

// Destination states of PortReport.Destination.
const (
	destinationReachable   = "reachable"
	destinationUnreachable = "unreachable"
)

// PodReader reads a tunnel pod's report.
type PodReader interface {
	ReadPod(ctx context.Context, pod *corev1.Pod) (TunnelReport, error)
}

// HTTPPodReader reads /readyz over the pod network, from the pod IP and its container port named "health".
type HTTPPodReader struct {
	// Client is the HTTP client; http.DefaultClient when nil. Each read is bounded by Timeout.
	Client *http.Client
	// Timeout bounds one read; 2 s when 0.
	Timeout time.Duration
}

// maxReportBytes bounds what is read from a pod: a report is a few hundred bytes per port.
const maxReportBytes = 64 << 10

// ReadPod implements PodReader. /readyz answers 503 with the same JSON when the pod is not ready.
func (h HTTPPodReader) ReadPod(ctx context.Context, pod *corev1.Pod) (TunnelReport, error) {
	port := healthContainerPort(pod)
	if pod.Status.PodIP == "" || port == 0 {
		return TunnelReport{}, fmt.Errorf("pod %s has no IP or no %q port yet", pod.Name, healthPortName)
	}
	timeout := h.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	url := "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(port))) + "/readyz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return TunnelReport{}, err
	}
	c := h.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return TunnelReport{}, fmt.Errorf("failed to read the state of pod %s: %w", pod.Name, err)
	}
	defer resp.Body.Close()
	var rep TunnelReport
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxReportBytes)).Decode(&rep); err != nil {
		return TunnelReport{}, fmt.Errorf("pod %s answered /readyz with HTTP %d and no report: %w", pod.Name, resp.StatusCode, err)
	}
	return rep, nil
}

// healthContainerPort is the tunnel container's port named "health", 0 if none.
func healthContainerPort(pod *corev1.Pod) int32 {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == healthPortName {
				return p.ContainerPort
			}
		}
	}
	return 0
}

// podReport is one pod's report, or why it could not be read.
type podReport struct {
	pod    string
	ready  bool // the pod's Ready condition
	report TunnelReport
	err    error
}

// readReports reads the report of every running tunnel pod at once. Pods that are terminating or have
// not started are skipped: their state is their phase.
func readReports(ctx context.Context, reader PodReader, pods []corev1.Pod) []podReport {
	var (
		wg  sync.WaitGroup
		out = make([]podReport, len(pods))
		n   int
	)
	for i := range pods {
		p := &pods[i]
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
			continue
		}
		slot := &out[n]
		n++
		slot.pod, slot.ready = p.Name, isPodReady(p)
		wg.Go(func() { slot.report, slot.err = reader.ReadPod(ctx, p) })
	}
	wg.Wait()
	return out[:n]
}

// isPodReady reports the pod's Ready condition.
func isPodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
