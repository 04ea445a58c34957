package main

import (
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/vethroute/vethroute/deploy"
)

// deployedAgentEnv returns the environment variables the DaemonSet gives
// the agent as literal values (GOMEMLIMIT, ...), as NAME=VALUE: the agent
// is measured as deployed. Values taken from the Pod (valueFrom) are not
// the runtime's settings and are left out.
func deployedAgentEnv() ([]string, error) {
	ms, err := deploy.Load()
	if err != nil {
		return nil, fmt.Errorf("load deploy manifests: %w", err)
	}
	for _, m := range ms {
		ds, ok := m.Object.(*appsv1.DaemonSet)
		if !ok {
			continue
		}
		for _, c := range ds.Spec.Template.Spec.Containers {
			if c.Name != "agent" {
				continue
			}
			var env []string
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					env = append(env, e.Name+"="+e.Value)
				}
			}
			return env, nil
		}
	}
	return nil, errors.New("deploy manifests: no DaemonSet with a container named agent")
}
