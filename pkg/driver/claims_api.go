package driver

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
)

// ClaimReader is what the driver itself reads from the API server, besides
// the calls of the kubelet plugin helper: one claim by name, and the pods of
// this node. The stale-claim collector and the wait for a device that is
// being released use it; it is an interface so their tests can script the
// API server's answers and failures.
type ClaimReader interface {
	// GetClaim returns the ResourceClaim namespace/name. A claim that does
	// not exist is an error for which apierrors.IsNotFound is true.
	GetClaim(ctx context.Context, namespace, name string) (*resourceapi.ResourceClaim, error)
	// ListNodePods returns the pods bound to this node, in any phase.
	ListNodePods(ctx context.Context) ([]corev1.Pod, error)
}

// NewClaimReader reads through client: a GET per claim, and a LIST of pods
// with the field selector spec.nodeName=nodeName (served from the API
// server's watch cache, which indexes pods by node).
func NewClaimReader(client kubernetes.Interface, nodeName string) ClaimReader {
	return &kubeClaimReader{client: client, nodeName: nodeName}
}

type kubeClaimReader struct {
	client   kubernetes.Interface
	nodeName string
}

func (r *kubeClaimReader) GetClaim(ctx context.Context, namespace, name string) (*resourceapi.ResourceClaim, error) {
	return r.client.ResourceV1().ResourceClaims(namespace).Get(ctx, name, metav1.GetOptions{})
}

func (r *kubeClaimReader) ListNodePods(ctx context.Context) ([]corev1.Pod, error) {
	sel := fields.OneTermEqualSelector("spec.nodeName", r.nodeName).String()
	list, err := r.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return nil, err
	}
	// The API server applies the selector; filter again so that a reader
	// that ignores it (client-go's fake clientset) cannot widen the answer.
	pods := list.Items[:0]
	for _, p := range list.Items {
		if p.Spec.NodeName == r.nodeName {
			pods = append(pods, p)
		}
	}
	return pods, nil
}

// claimGoneReason says why the claim a checkpoint entry was prepared for no
// longer needs it: the ResourceClaim was deleted, was created again under
// another UID, or is no longer allocated on this node. It returns "" when
// the claim is still allocated here, and an error when the API server gave
// no answer (anything but NotFound), in which case nothing may be concluded.
func claimGoneReason(pc *PreparedClaim, claim *resourceapi.ResourceClaim, getErr error, nodeName string) (string, error) {
	switch {
	case apierrors.IsNotFound(getErr):
		return "the ResourceClaim no longer exists", nil
	case getErr != nil:
		return "", getErr
	case claim.UID != pc.UID:
		return fmt.Sprintf("the ResourceClaim was deleted and created again (its UID is now %s)", claim.UID), nil
	case claim.Status.Allocation == nil:
		return "the ResourceClaim is no longer allocated", nil
	}
	for _, r := range claim.Status.Allocation.Devices.Results {
		if r.Driver == DriverName && r.Pool == nodeName {
			return "", nil
		}
	}
	return "the ResourceClaim is no longer allocated on this node", nil
}

// podTerminal reports whether a pod's containers have all ended for good.
func podTerminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// podReferencingClaim returns a pod of pods that is not terminal and names
// the claim namespace/name anywhere a pod can: its spec (a claim by name),
// its status (a claim made from a template, or for an extended resource).
// Only the name is compared: a claim deleted and created again under the
// same name keeps the old entry while a pod names it, which errs on the
// side of keeping.
func podReferencingClaim(pods []corev1.Pod, namespace, name string) *corev1.Pod {
	is := func(s *string) bool { return s != nil && *s == name }
	for i := range pods {
		p := &pods[i]
		if p.Namespace != namespace || podTerminal(p) {
			continue
		}
		for _, c := range p.Spec.ResourceClaims {
			if is(c.ResourceClaimName) {
				return p
			}
		}
		for _, c := range p.Status.ResourceClaimStatuses {
			if is(c.ResourceClaimName) {
				return p
			}
		}
		if e := p.Status.ExtendedResourceClaimStatus; e != nil && e.ResourceClaimName == name {
			return p
		}
		for _, c := range p.Status.NodeAllocatableResourceClaimStatuses {
			if c.ResourceClaimName == name {
				return p
			}
		}
	}
	return nil
}
