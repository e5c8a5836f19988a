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
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"
)

// ErrInstanceLookupRejected wraps errors where Systems Manager refused the lookup itself (bad filter,
// missing permission): retrying soon will not help, the user has to act.
var ErrInstanceLookupRejected = errors.New("instance lookup rejected by Systems Manager")

// LookupRejectedError is a lookup Systems Manager refused. Its Message can name the operator's own role
// and account, so only Code reaches a PortForward's status; the whole error goes to the operator's log.
type LookupRejectedError struct {
	Code, Message string
}

func (e *LookupRejectedError) Error() string {
	return fmt.Sprintf("%v: %s: %s", ErrInstanceLookupRejected, e.Code, e.Message)
}

func (e *LookupRejectedError) Unwrap() error { return ErrInstanceLookupRejected }

// StatusMessage is what a tenant may read: the error code and what to fix.
func (e *LookupRejectedError) StatusMessage() string {
	if e.Code == "AccessDeniedException" {
		return "Systems Manager refused the operator's lookup of target.selector (AccessDeniedException): a cluster administrator must allow the operator ssm:DescribeInstanceInformation"
	}
	return fmt.Sprintf("Systems Manager refused the lookup of target.selector (%s): check the tags", e.Code)
}

// InstanceLister finds the managed instances that carry all of the given tags and are Online. It is the only
// AWS call the operator makes; tests substitute the emulator behind the real SDK client.
type InstanceLister interface {
	OnlineInstances(ctx context.Context, region string, tags map[string]string) ([]string, error)
}

// DescribeInstanceInformationAPI is the single SSM operation SSMInstanceLister needs; *ssm.Client has it.
type DescribeInstanceInformationAPI = ssm.DescribeInstanceInformationAPIClient

// SSMInstanceLister implements InstanceLister with ssm DescribeInstanceInformation.
type SSMInstanceLister struct {
	// Client is usually an *ssm.Client built from the SDK's standard configuration.
	Client DescribeInstanceInformationAPI
}

// OnlineInstances returns the sorted IDs of Online instances carrying every tag, in region (the client's
// region when empty). Client-side errors of the API (4xx) wrap ErrInstanceLookupRejected.
func (l SSMInstanceLister) OnlineInstances(ctx context.Context, region string, tags map[string]string) ([]string, error) {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	filters := []ssmtypes.InstanceInformationStringFilter{{Key: aws.String("PingStatus"), Values: []string{string(ssmtypes.PingStatusOnline)}}}
	for _, k := range keys {
		filters = append(filters, ssmtypes.InstanceInformationStringFilter{Key: aws.String("tag:" + k), Values: []string{tags[k]}})
	}
	var optFns []func(*ssm.Options)
	if region != "" {
		optFns = append(optFns, func(o *ssm.Options) { o.Region = region })
	}
	p := ssm.NewDescribeInstanceInformationPaginator(l.Client, &ssm.DescribeInstanceInformationInput{Filters: filters})
	var ids []string
	for p.HasMorePages() {
		page, err := p.NextPage(ctx, optFns...)
		if err != nil {
			var apiErr smithy.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorFault() == smithy.FaultClient {
				return nil, &LookupRejectedError{Code: apiErr.ErrorCode(), Message: apiErr.ErrorMessage()}
			}
			return nil, fmt.Errorf("failed to describe instance information: %w", err)
		}
		for _, ii := range page.InstanceInformationList {
			// Filter again: the filter is the contract, but a stale or partial server answer must not send
			// traffic to an offline instance.
			if ii.InstanceId != nil && ii.PingStatus == ssmtypes.PingStatusOnline {
				ids = append(ids, *ii.InstanceId)
			}
		}
	}
	sort.Strings(ids)
	return slices.Compact(ids), nil
}

// pickInstance keeps current while it is still online (so tunnels do not move for no reason) and otherwise
// fails over to the first online instance in ID order. It returns "" when none is online.
func pickInstance(current string, online []string) string {
	if current != "" && slices.Contains(online, current) {
		return current
	}
	if len(online) == 0 {
		return ""
	}
	return online[0]
}
