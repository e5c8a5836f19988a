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

// Package v1alpha1 contains the PortForward API of the ssmtunnel.io group: a request to expose ports of an
// EC2 or on-premises managed instance inside the cluster, carried over Session Manager port forwarding.
// +kubebuilder:object:generate=true
// +groupName=ssmtunnel.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion identifies this API so clients and the scheme agree on the group and version.
	GroupVersion = schema.GroupVersion{Group: "ssmtunnel.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a scheme; the manager and tests call it once at start.
	AddToScheme = SchemeBuilder.AddToScheme
)
