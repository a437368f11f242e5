//go:build faults

package faults

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/driver"
)

// newClaims creates a ResourceClaim per device (in that order) and allocates it to the device as the scheduler
// would: status.allocation with the driver, the node's pool and the published device name (a share ID for a
// shared device), a node selector for the node, and status.reservedFor naming a consumer. The consumer is not a
// pod (no kubelet runs the suite's node): the resource claim controller keeps such entries, and the plugin
// counts such a claim as in use (it never waits for its release).
func (s *suite) newClaims(prefix string, devs []*loopDev) []*claim {
	out := make([]*claim, len(devs))
	errs := make([]error, len(devs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, d := range devs {
		s.mu.Lock()
		s.seq++
		name := fmt.Sprintf("%s-%d", prefix, s.seq)
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i], errs[i] = s.createClaim(name, d)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		s.abortf("create claims: %v", err)
	}
	s.mu.Lock()
	for _, c := range out {
		s.claims[c.uid] = c
	}
	s.mu.Unlock()
	return out
}

func (s *suite) createClaim(name string, d *loopDev) (*claim, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc := &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: nsName},
		Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{{
			Name: "dev", Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: driverName},
		}}}},
	}
	rc, err := s.kube.ResourceV1().ResourceClaims(nsName).Create(ctx, rc, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	c := &claim{name: name, uid: rc.UID, dev: d}
	if !d.exclusive {
		id := uuid.NewUUID()
		c.share = &id
	}
	return c, s.allocate(ctx, rc, c)
}

func (s *suite) allocate(ctx context.Context, rc *resourceapi.ResourceClaim, c *claim) error {
	rc.Status = resourceapi.ResourceClaimStatus{
		Allocation: &resourceapi.AllocationResult{
			Devices: resourceapi.DeviceAllocationResult{Results: []resourceapi.DeviceRequestAllocationResult{{
				Request: "dev", Driver: driverName, Pool: nodeName, Device: c.dev.name, ShareID: c.share,
			}}},
			NodeSelector: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{nodeName}}},
			}}},
		},
		ReservedFor: []resourceapi.ResourceClaimConsumerReference{{
			APIGroup: "faults.power-dev-plugin.io", Resource: "holders", Name: "fault-suite", UID: s.holder,
		}},
	}
	_, err := s.kube.ResourceV1().ResourceClaims(nsName).UpdateStatus(ctx, rc, metav1.UpdateOptions{})
	return err
}

// deleteClaims deletes claims from the API server (they are not prepared any more).
func (s *suite) deleteClaims(claims []*claim) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range claims {
		_ = s.kube.ResourceV1().ResourceClaims(nsName).Delete(ctx, c.name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &c.uid}})
	}
}

// dra makes one call of the kubelet's DRA client on the plugin's socket, on a new connection (as the kubelet
// does after a plugin registered again), with the kubelet's timeout. It returns the answer per claim UID: ""
// or the claim's error; a call that failed as a whole returns err.
func (s *suite) dra(prepare bool, claims []*claim) (map[types.UID]answer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), kubeletTimeout)
	defer cancel()
	conn, err := grpc.NewClient("unix:"+filepath.Join(s.data, "dra.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	cl := drapb.NewDRAPluginClient(conn)
	var req []*drapb.Claim
	for _, c := range claims {
		req = append(req, &drapb.Claim{Namespace: nsName, Name: c.name, Uid: string(c.uid)})
	}
	out := map[types.UID]answer{}
	if prepare {
		resp, err := cl.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: req})
		if err != nil {
			return nil, err
		}
		for uid, r := range resp.Claims {
			out[types.UID(uid)] = answer{err: r.Error, devices: canonical(r.Devices)}
		}
		return out, nil
	}
	resp, err := cl.NodeUnprepareResources(ctx, &drapb.NodeUnprepareResourcesRequest{Claims: req})
	if err != nil {
		return nil, err
	}
	for uid, r := range resp.Claims {
		out[types.UID(uid)] = answer{err: r.Error}
	}
	return out, nil
}

type answer struct {
	err     string
	devices string
}

func canonical(devs []*drapb.Device) string {
	var parts []string
	for _, d := range devs {
		share := ""
		if d.ShareId != nil {
			share = " share=" + *d.ShareId
		}
		parts = append(parts, fmt.Sprintf("%s/%s requests=%v cdi=%v%s", d.PoolName, d.DeviceName, d.RequestNames, d.CdiDeviceIds, share))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// cutShort says whether a call's error means it may have done part of its work (the plugin went away), as
// opposed to an answer of the plugin that it did nothing.
func cutShort(err error) bool {
	st, ok := status.FromError(err)
	return !ok || st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded || st.Code() == codes.Canceled
}

// result is what one kubelet call gave.
type result struct {
	ok     []*claim
	failed map[*claim]string // claim -> its error
	err    error             // the call as a whole
}

func (r result) firstErr() string {
	if r.err != nil {
		return r.err.Error()
	}
	for _, e := range r.failed {
		return e
	}
	return ""
}

// prepare is the kubelet's NodePrepareResources; it updates what the kubelet knows and checks every answer.
func (s *suite) prepare(claims []*claim) result {
	res, err := s.dra(true, claims)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := result{failed: map[*claim]string{}, err: err}
	if err != nil {
		for _, c := range claims {
			if c.state != stPrepared && cutShort(err) {
				c.state = stUnknown
			}
		}
		return r
	}
	for _, c := range claims {
		a, ok := res[c.uid]
		if !ok {
			a.err = "no answer for this claim"
		}
		if a.err != "" {
			// A claim the kubelet did not hold as prepared must be left with nothing (verify checks it); one
			// in doubt stays in doubt.
			r.failed[c] = a.err
			continue
		}
		r.ok = append(r.ok, c)
		want := fmt.Sprintf("%s/%s requests=[dev] cdi=[%s]", nodeName, c.dev.name,
			driver.CDIDeviceID(driver.CDIDeviceName(c.uid, c.dev.name, c.share)))
		if c.share != nil {
			want += " share=" + string(*c.share)
		}
		// The helper adds the CDI device of the claim's metadata file (--device-metadata) when it wrote it;
		// when it could not, the answer goes without it. The containers then need (or do not need) that file.
		c.metadata = strings.Contains(a.devices, " "+metadataCDIID(c)+"]")
		s.answers++
		if c.metadata {
			s.metaAnswers++
		}
		a.devices = strings.Replace(a.devices, " "+metadataCDIID(c)+"]", "]", 1)
		if a.devices != want {
			s.countLocked(kChanged, "answer "+string(c.uid), "claim %s: Prepare answered %q, the allocation says %q", c.name, a.devices, want)
		} else if c.answer != "" && c.answer != a.devices {
			s.countLocked(kChanged, "answer2 "+string(c.uid), "claim %s: Prepare answered %q, earlier %q", c.name, a.devices, c.answer)
		}
		if c.answer == "" {
			c.answer = a.devices
		}
		c.state = stPrepared
	}
	return r
}

// unprepare is the kubelet's NodeUnprepareResources.
func (s *suite) unprepare(claims []*claim) result {
	res, err := s.dra(false, claims)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := result{failed: map[*claim]string{}, err: err}
	if err != nil {
		for _, c := range claims {
			if c.state == stPrepared && cutShort(err) {
				c.state = stUnknown
			}
		}
		return r
	}
	for _, c := range claims {
		a, ok := res[c.uid]
		if !ok {
			a.err = "no answer for this claim"
		}
		if a.err != "" {
			r.failed[c] = a.err
			if c.state == stPrepared {
				c.state = stUnknown
			}
			continue
		}
		r.ok = append(r.ok, c)
		c.state = stNone
	}
	return r
}

// metadataCDIID is the CDI device of c's metadata file (the kubeletplugin helper's name for it).
func metadataCDIID(c *claim) string { return driverName + "/metadata=" + string(c.uid) + "_dev" }

// countLocked is count with s.mu held.
func (s *suite) countLocked(kind, key, format string, args ...any) {
	s.mu.Unlock()
	defer s.mu.Lock()
	s.count(kind, key, format, args...)
}

// mustPrepare is the kubelet retrying NodePrepareResources until every claim is prepared (its back-off is
// shortened): a prepare that keeps failing after the fault is over counts as an error.
func (s *suite) mustPrepare(claims []*claim, why string) {
	var last result
	for i := 0; i < 20; i++ {
		last = s.prepare(claims)
		if last.err == nil && len(last.failed) == 0 {
			return
		}
		time.Sleep(time.Duration(100*(i+1)) * time.Millisecond)
	}
	s.count(kError, "", "%s: Prepare of %d claims still fails: %s", why, len(claims), last.firstErr())
}

// mustUnprepare retries NodeUnprepareResources as the kubelet does.
func (s *suite) mustUnprepare(claims []*claim, why string) {
	var last result
	for i := 0; i < 20; i++ {
		last = s.unprepare(claims)
		if last.err == nil && len(last.failed) == 0 {
			return
		}
		time.Sleep(time.Duration(100*(i+1)) * time.Millisecond)
	}
	s.count(kError, "", "%s: Unprepare of %d claims still fails: %s", why, len(claims), last.firstErr())
}

// pick returns n devices for claims: exclusive devices first (one claim each), then the shared ones in turn.
func (s *suite) pick(n int, exclusive int) []*loopDev {
	var out []*loopDev
	for i := 0; i < exclusive && i < 4 && len(out) < n; i++ {
		out = append(out, s.devs[i])
	}
	for i := 0; len(out) < n; i++ {
		out = append(out, s.devs[4+i%4])
	}
	return out
}
