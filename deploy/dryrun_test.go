//go:build linux

package deploy

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/vethroute/vethroute/test/k8s/kubeapi"
)

// TestManifestsServerSideDryRun applies every manifest to a real API server
// with server-side apply and dryRun=All: the server's own validation
// (required fields, DaemonSet selector vs labels, RBAC references, field
// formats) runs on them, and nothing is persisted.
func TestManifestsServerSideDryRun(t *testing.T) {
	srv := kubeapi.Start(t)
	ctx := context.Background()
	ms, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		t.Run(m.File+"/"+m.GVK.Kind, func(t *testing.T) {
			mapping, err := mapper.RESTMapping(m.GVK.GroupKind(), m.GVK.Version)
			if err != nil {
				t.Fatal(err)
			}
			acc, err := meta.Accessor(m.Object)
			if err != nil {
				t.Fatal(err)
			}
			var res dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
			if ns := acc.GetNamespace(); ns != "" {
				res = dyn.Resource(mapping.Resource).Namespace(ns)
			}
			force := true
			out, err := res.Patch(ctx, acc.GetName(), types.ApplyPatchType, m.JSON, metav1.PatchOptions{
				FieldManager: "vethroute-deploy-test",
				Force:        &force,
				DryRun:       []string{metav1.DryRunAll},
			})
			if err != nil {
				t.Fatalf("server-side apply (dry run) of %s %s: %v", m.GVK.Kind, acc.GetName(), err)
			}
			if out.GetName() != acc.GetName() || out.GetKind() != m.GVK.Kind {
				t.Errorf("server answered %s %s", out.GetKind(), out.GetName())
			}
			// Dry run: nothing was stored.
			if _, err := res.Get(ctx, acc.GetName(), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("%s %s exists after a dry run (err %v)", m.GVK.Kind, acc.GetName(), err)
			}
		})
	}
}
