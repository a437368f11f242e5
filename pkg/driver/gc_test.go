package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
)

// fakeClaims stands for the API server in the stale-claim and release-wait
// tests (no API server runs in unit tests; the cluster suite has one): the
// claims by namespace/name, this node's pods, and errors to inject into
// single calls, which client-go's fake clientset cannot do per object.
// TestClaimReaderOverClientset checks the real reader against the fake
// clientset.
type fakeClaims struct {
	mu      sync.Mutex
	claims  map[string]*resourceapi.ResourceClaim
	pods    []corev1.Pod
	getErr  map[string]error
	listErr error
	gets    []string
	lists   int
}

func newFakeClaims(claims ...*resourceapi.ResourceClaim) *fakeClaims {
	f := &fakeClaims{claims: map[string]*resourceapi.ResourceClaim{}, getErr: map[string]error{}}
	for _, c := range claims {
		f.set(c)
	}
	return f
}

func (f *fakeClaims) set(c *resourceapi.ResourceClaim) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.claims[c.Namespace+"/"+c.Name] = c.DeepCopy()
}

func (f *fakeClaims) del(namespace, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.claims, namespace+"/"+name)
}

func (f *fakeClaims) setPods(pods ...corev1.Pod) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pods = pods
}

func (f *fakeClaims) failGet(namespace, name string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.getErr[namespace+"/"+name] = err
}

func (f *fakeClaims) calls() (gets []string, lists int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.gets...), f.lists
}

func (f *fakeClaims) GetClaim(_ context.Context, namespace, name string) (*resourceapi.ResourceClaim, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := namespace + "/" + name
	f.gets = append(f.gets, key)
	if err := f.getErr[key]; err != nil {
		return nil, err
	}
	c := f.claims[key]
	if c == nil {
		return nil, apierrors.NewNotFound(schema.GroupResource{Group: "resource.k8s.io", Resource: "resourceclaims"}, name)
	}
	return c.DeepCopy(), nil
}

func (f *fakeClaims) ListNodePods(context.Context) ([]corev1.Pod, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	if f.listErr != nil {
		return nil, f.listErr
	}
	return append([]corev1.Pod(nil), f.pods...), nil
}

// errAPIDown is what a GET or LIST returns while the API server cannot be
// reached.
var errAPIDown = apierrors.NewServiceUnavailable("the API server is shutting down")

// ptPod is a pod on ptNode in the default namespace, running, that names
// claims in its spec.
func ptPod(name string, claimNames ...string) corev1.Pod {
	p := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("pod-uid-" + name)},
		Spec:       corev1.PodSpec{NodeName: ptNode},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for i, c := range claimNames {
		p.Spec.ResourceClaims = append(p.Spec.ResourceClaims, corev1.PodResourceClaim{Name: fmt.Sprintf("c%d", i), ResourceClaimName: ptr.To(c)})
	}
	return p
}

type gcEnv struct {
	*ptEnv
	ctx   context.Context
	s     *State
	api   *fakeClaims
	clock *clocktesting.FakeClock
	c     *staleCollector
	log   interface{ String() string }
}

// newGCEnv is a node with a State, the fake API server and a collector
// on a fake clock; its logs are kept for assertions.
func newGCEnv(t *testing.T) *gcEnv {
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.BufferLogs(true)))
	ctx := klog.NewContext(context.Background(), logger)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	api := newFakeClaims()
	clk := clocktesting.NewFakeClock(ptClockTime)
	return &gcEnv{ptEnv: env, ctx: ctx, s: s, api: api, clock: clk,
		c:   newStaleCollector(s, api, ptNode, clk, DefaultStaleClaimInterval),
		log: logger.GetSink().(ktesting.Underlier).GetBuffer()}
}

// prepared prepares claims and lets the API server know them as they are.
func (e *gcEnv) prepared(t *testing.T, claims ...*resourceapi.ResourceClaim) {
	t.Helper()
	mustPrepare(t, e.ctx, e.s, claims...)
	for _, c := range claims {
		e.api.set(c)
	}
}

func (e *gcEnv) isPrepared(t *testing.T, c *resourceapi.ResourceClaim) bool {
	t.Helper()
	_, inCheckpoint := e.checkpoint(t).Claims[c.UID]
	spec := ptExists(e.specPath(c.UID))
	if inCheckpoint != spec {
		t.Fatalf("claim %s: in checkpoint %v but spec file %v", c.Name, inCheckpoint, spec)
	}
	return inCheckpoint
}

// twoRounds runs a round, then another once the confirmation time passed.
func (e *gcEnv) twoRounds(t *testing.T) {
	t.Helper()
	e.c.collect(e.ctx)
	e.clock.Step(staleConfirmAfter)
	e.c.collect(e.ctx)
}

func TestStaleClaimsCollected(t *testing.T) {
	for name, tc := range map[string]struct {
		api    func(api *fakeClaims, old *resourceapi.ResourceClaim)
		reason string
	}{
		"deleted": {
			api:    func(api *fakeClaims, old *resourceapi.ResourceClaim) { api.del(old.Namespace, old.Name) },
			reason: "the ResourceClaim no longer exists",
		},
		"created again under another UID": {
			api: func(api *fakeClaims, old *resourceapi.ResourceClaim) {
				c := old.DeepCopy()
				c.UID = "uid-old-2"
				api.set(c)
			},
			reason: "the ResourceClaim was deleted and created again (its UID is now uid-old-2)",
		},
		"deallocated": {
			api: func(api *fakeClaims, old *resourceapi.ResourceClaim) {
				c := old.DeepCopy()
				c.Status.Allocation = nil
				api.set(c)
			},
			reason: "the ResourceClaim is no longer allocated",
		},
		"allocated to another node": {
			api: func(api *fakeClaims, old *resourceapi.ResourceClaim) {
				c := old.DeepCopy()
				c.Status.Allocation.Devices.Results[0].Pool = "node-b"
				api.set(c)
			},
			reason: "the ResourceClaim is no longer allocated on this node",
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := newGCEnv(t)
			old := ptClaim("old", ptResults(ptResult("disk", "loop0")))
			keep := ptClaim("keep", ptResults(ptResult("disk", "loop1")))
			e.prepared(t, old, keep)
			// Its device was found gone after a reboot: reported unhealthy until the claim goes.
			pc := e.s.Prepared()[old.UID]
			e.s.setProblem(&pc, errors.New("device gone"))
			tc.api(e.api, old)
			// A pod that ended, and one on the same claim name in
			// another namespace, do not keep it.
			ended := ptPod("ended", "old")
			ended.Status.Phase = corev1.PodSucceeded
			elsewhere := ptPod("elsewhere", "old")
			elsewhere.Namespace = "other"
			e.api.setPods(ended, elsewhere)

			if !e.c.collect(e.ctx) {
				t.Error("first round: no second look scheduled")
			}
			if !e.isPrepared(t, old) {
				t.Fatal("unprepared at the first look; it must be seen stale twice")
			}
			e.clock.Step(staleConfirmAfter - time.Second)
			e.c.collect(e.ctx)
			if !e.isPrepared(t, old) {
				t.Fatal("unprepared before the confirmation time")
			}
			e.clock.Step(time.Second)
			if e.c.collect(e.ctx) {
				t.Error("nothing should wait for a second look any more")
			}
			if e.isPrepared(t, old) {
				t.Fatal("stale claim still prepared")
			}
			if !e.isPrepared(t, keep) {
				t.Fatal("a claim still allocated here was unprepared")
			}
			if _, ok := e.s.Prepared()[old.UID]; ok {
				t.Error("Prepared() still lists the stale claim")
			}
			if msg, ok := e.s.DeviceProblems()["loop0"]; ok {
				t.Errorf("the collected claim's device is still reported unhealthy: %s", msg)
			}
			log := e.log.String()
			if !strings.Contains(log, "Unprepared a stale claim") || !strings.Contains(log, tc.reason) || !strings.Contains(log, "default/old") {
				t.Errorf("log does not say which claim was unprepared and why (%q):\n%s", tc.reason, log)
			}
			// Its exclusive device is free for the next claim.
			mustPrepare(t, e.ctx, e.s, ptClaim("next", ptResults(ptResult("disk", "loop0"))))
		})
	}
}

func TestStaleClaimsOneGetPerEntryAndNoListWhenNothingIsStale(t *testing.T) {
	e := newGCEnv(t)
	a := ptClaim("a", ptResults(ptResult("disk", "loop0")))
	b := ptClaim("b", ptResults(ptResult("fs", "fuse")))
	e.prepared(t, a, b)
	if e.c.collect(e.ctx) {
		t.Error("nothing is stale, but a second look was scheduled")
	}
	gets, lists := e.api.calls()
	if strings.Join(gets, ",") != "default/a,default/b" || lists != 0 {
		t.Errorf("API calls: GET %v, %d LIST; want one GET per entry and no LIST", gets, lists)
	}
	if !e.isPrepared(t, a) || !e.isPrepared(t, b) {
		t.Error("a claim in use was unprepared")
	}
}

func TestStaleClaimKeptWhilePodOnNodeReferencesIt(t *testing.T) {
	for name, pod := range map[string]corev1.Pod{
		"claim named in the spec": ptPod("p", "old"),
		"claim from a template": func() corev1.Pod {
			p := ptPod("p")
			p.Status.ResourceClaimStatuses = []corev1.PodResourceClaimStatus{{Name: "disk", ResourceClaimName: ptr.To("old")}}
			return p
		}(),
		"claim for an extended resource": func() corev1.Pod {
			p := ptPod("p")
			p.Status.ExtendedResourceClaimStatus = &corev1.PodExtendedResourceClaimStatus{ResourceClaimName: "old"}
			return p
		}(),
		"pod being deleted": func() corev1.Pod {
			p := ptPod("p", "old")
			p.DeletionTimestamp = &metav1.Time{Time: ptClockTime}
			return p
		}(),
		"pod not started yet": func() corev1.Pod {
			p := ptPod("p", "old")
			p.Status.Phase = corev1.PodPending
			return p
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			e := newGCEnv(t)
			old := ptClaim("old", ptResults(ptResult("disk", "loop0")))
			e.prepared(t, old)
			// Force-deleted under its running pod.
			e.api.del("default", "old")
			e.api.setPods(pod)
			for range 3 {
				e.twoRounds(t)
			}
			if !e.isPrepared(t, old) {
				t.Fatal("a claim a live pod on this node references was unprepared")
			}
			if log := e.log.String(); strings.Count(log, "Keeping a stale claim prepared while a pod on this node still references it") != 1 || !strings.Contains(log, "default/p") {
				t.Errorf("log must say once which pod keeps the claim:\n%s", log)
			}
			// The pod ends: the claim goes after two more looks.
			pod.Status.Phase = corev1.PodFailed
			e.api.setPods(pod)
			e.c.collect(e.ctx)
			if !e.isPrepared(t, old) {
				t.Fatal("unprepared at the first look after the pod ended")
			}
			e.clock.Step(staleConfirmAfter)
			e.c.collect(e.ctx)
			if e.isPrepared(t, old) {
				t.Fatal("still prepared after its pod ended")
			}
		})
	}
}

func TestStaleClaimsNothingRemovedWhileAPIFails(t *testing.T) {
	t.Run("GET", func(t *testing.T) {
		e := newGCEnv(t)
		a := ptClaim("a", ptResults(ptResult("disk", "loop0")))
		b := ptClaim("b", ptResults(ptResult("disk", "loop1")))
		e.prepared(t, a, b)
		e.api.del("default", "a")
		e.c.collect(e.ctx) // a is seen stale once
		// The API server fails for b: a, though stale, must stay too.
		e.api.failGet("default", "b", errAPIDown)
		e.clock.Step(staleConfirmAfter)
		if !e.c.collect(e.ctx) {
			t.Error("the round that failed dropped the second look")
		}
		if !e.isPrepared(t, a) || !e.isPrepared(t, b) {
			t.Fatal("a claim was unprepared in a round the API server did not answer")
		}
		if log := e.log.String(); !strings.Contains(log, "removing nothing in this round") {
			t.Errorf("log does not say why nothing was removed:\n%s", log)
		}
		// Once it answers again, a goes and b stays.
		e.api.failGet("default", "b", nil)
		e.c.collect(e.ctx)
		if e.isPrepared(t, a) || !e.isPrepared(t, b) {
			t.Errorf("after the API server is back: a prepared %v, b prepared %v", e.isPrepared(t, a), e.isPrepared(t, b))
		}
	})
	t.Run("LIST", func(t *testing.T) {
		e := newGCEnv(t)
		a := ptClaim("a", ptResults(ptResult("disk", "loop0")))
		e.prepared(t, a)
		e.api.del("default", "a")
		e.api.listErr = errAPIDown
		for range 3 {
			e.twoRounds(t)
		}
		if !e.isPrepared(t, a) {
			t.Fatal("unprepared without knowing the node's pods")
		}
		e.api.listErr = nil
		e.twoRounds(t)
		if e.isPrepared(t, a) {
			t.Fatal("still prepared once the pods could be listed")
		}
	})
}

func TestStaleClaimRecoveredEntryKept(t *testing.T) {
	e := newGCEnv(t)
	old := ptClaim("old", ptResults(ptResult("disk", "loop0")))
	e.prepared(t, old)
	// The checkpoint is lost: the entry is rebuilt from the spec file,
	// without the claim's name.
	if err := os.Remove(e.s.CheckpointPath()); err != nil {
		t.Fatal(err)
	}
	e.s = e.state(t, e.ctx)
	e.c = newStaleCollector(e.s, e.api, ptNode, e.clock, DefaultStaleClaimInterval)
	if pc := e.checkpoint(t).Claims[old.UID]; pc == nil || !pc.Recovered {
		t.Fatalf("entry not recovered: %+v", pc)
	}
	for range 3 {
		e.twoRounds(t)
	}
	if !e.isPrepared(t, old) {
		t.Fatal("a recovered entry was unprepared")
	}
	if gets, lists := e.api.calls(); len(gets) != 0 || lists != 0 {
		t.Errorf("API calls for a recovered entry: GET %v, %d LIST", gets, lists)
	}
	if log := e.log.String(); strings.Count(log, "Not checking a prepared claim recovered from its CDI spec file") != 1 {
		t.Errorf("log must say once why the entry is kept:\n%s", log)
	}
}

// The entry changed between the look and the removal (the lock is not held
// while the API server is asked): it is left alone.
func TestStaleClaimChangedMeanwhileKept(t *testing.T) {
	e := newGCEnv(t)
	old := ptClaim("old", ptResults(ptResult("disk", "loop0")))
	e.prepared(t, old)
	seen := e.s.Prepared()[old.UID]
	seen.Allocation = "something else"
	if removed, err := e.s.unprepareStale(e.ctx, &seen); removed || err != nil {
		t.Fatalf("unprepareStale of an entry that changed: removed %v, err %v", removed, err)
	}
	if !e.isPrepared(t, old) {
		t.Fatal("entry removed")
	}
}

func TestStaleClaimCollectorSchedule(t *testing.T) {
	e := newGCEnv(t)
	e.c.interval = 5 * time.Minute
	old := ptClaim("old", ptResults(ptResult("disk", "loop0")))
	e.prepared(t, old)
	e.api.del("default", "old")
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.c.run(ctx) }()
	defer func() { cancel(); <-done }()

	waitTimer := func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !e.clock.HasWaiters() {
			if time.Now().After(deadline) {
				t.Fatal("the collector set no timer")
			}
			time.Sleep(time.Millisecond)
		}
	}
	gets := func() int { g, _ := e.api.calls(); return len(g) }
	waitGets := func(n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for gets() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d GETs, want %d", gets(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	// Nothing during the start grace.
	waitTimer()
	e.clock.Step(staleStartDelay - time.Second)
	time.Sleep(20 * time.Millisecond)
	if gets() != 0 {
		t.Fatal("checked before the start grace ended")
	}
	// The first round, within the jitter.
	e.clock.Step(time.Second + time.Duration(staleJitter*float64(staleStartDelay)))
	waitGets(1)
	// A stale entry gets its second look after the confirmation time,
	// not the full interval.
	waitTimer()
	e.clock.Step(staleConfirmAfter + time.Duration(staleJitter*float64(staleConfirmAfter)))
	waitGets(2)
	waitTimer()
	if e.isPrepared(t, old) {
		t.Fatal("stale claim not unprepared at the second look")
	}
	// Then every interval.
	e.clock.Step(e.c.interval - time.Second)
	time.Sleep(20 * time.Millisecond)
	if gets() != 2 {
		t.Fatal("checked before the interval ended")
	}
}

// The real reader against client-go's fake clientset, which stands for the
// API server here: NotFound is NotFound, and only this node's pods count.
func TestClaimReaderOverClientset(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	claim := ptClaim("c", ptResults(ptResult("disk", "loop0")))
	here := ptPod("here", "c")
	there := ptPod("there", "c")
	there.Spec.NodeName = "node-b"
	r := NewClaimReader(fake.NewClientset(claim, &here, &there), ptNode)
	got, err := r.GetClaim(ctx, "default", "c")
	if err != nil || got.UID != claim.UID {
		t.Fatalf("GetClaim: %v, %v", got, err)
	}
	if _, err := r.GetClaim(ctx, "default", "gone"); !apierrors.IsNotFound(err) {
		t.Errorf("GetClaim of a missing claim: %v, want NotFound", err)
	}
	pods, err := r.ListNodePods(ctx)
	if err != nil || len(pods) != 1 || pods[0].Name != "here" {
		t.Errorf("ListNodePods: %v, %v; want only the pod on %s", pods, err, ptNode)
	}
	if reason, err := claimGoneReason(&PreparedClaim{UID: claim.UID}, nil, errors.New("connection refused"), ptNode); reason != "" || err == nil {
		t.Errorf("an API error must give no verdict: %q, %v", reason, err)
	}
}
