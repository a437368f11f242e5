package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
)

const ptHeldMsg = `claim default/new: device "loop0": device node /dev/loop0 (b 7:0) is already prepared for claim default/old (UID uid-old, device "loop0") and group "disks" is exclusive; it is freed when that claim is unprepared`

type waitEnv struct {
	*gcEnv
	w        *releaseWaiter
	old, new *resourceapi.ResourceClaim
}

// newWaitEnv has claim old prepared on loop0 and known to the API server,
// and claim new allocated loop0 too, as after old's pod ended.
func newWaitEnv(t *testing.T) *waitEnv {
	e := &waitEnv{gcEnv: newGCEnv(t),
		old: ptClaim("old", ptResults(ptResult("disk", "loop0"))),
		new: ptClaim("new", ptResults(ptResult("disk", "loop0")))}
	e.old.Status.ReservedFor = []resourceapi.ResourceClaimConsumerReference{{Resource: "pods", Name: "p-old", UID: "pod-uid-p-old"}}
	e.prepared(t, e.old)
	e.api.set(e.new)
	e.w = &releaseWaiter{state: e.s, api: e.api, nodeName: ptNode, clock: e.clock, bound: DefaultReleaseWait}
	return e
}

// start runs the waiter's prepare of claims in the background.
func (e *waitEnv) start(ctx context.Context, claims ...*resourceapi.ResourceClaim) <-chan map[types.UID]kubeletplugin.PrepareResult {
	out := make(chan map[types.UID]kubeletplugin.PrepareResult, 1)
	go func() { out <- e.w.prepare(ctx, claims) }()
	return out
}

// waiting returns once the waiter sleeps on its deadline timer.
func (e *waitEnv) waiting(t *testing.T, done <-chan map[types.UID]kubeletplugin.PrepareResult) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !e.clock.HasWaiters() {
		select {
		case r := <-done:
			t.Fatalf("Prepare returned instead of waiting: %v", r[e.new.UID].Err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("Prepare does not wait")
		}
		time.Sleep(time.Millisecond)
	}
}

func result(t *testing.T, done <-chan map[types.UID]kubeletplugin.PrepareResult) map[types.UID]kubeletplugin.PrepareResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("Prepare did not return")
		return nil
	}
}

func TestReleaseWaitSucceedsWhenHolderIsUnprepared(t *testing.T) {
	for name, release := range map[string]func(e *waitEnv){
		"holder deleted": func(e *waitEnv) { e.api.del("default", "old") },
		"holder deallocated": func(e *waitEnv) {
			c := e.old.DeepCopy()
			c.Status.Allocation, c.Status.ReservedFor = nil, nil
			e.api.set(c)
		},
		"holder created again": func(e *waitEnv) {
			c := e.old.DeepCopy()
			c.UID = "uid-old-2"
			e.api.set(c)
		},
		"holder not reserved any more": func(e *waitEnv) {
			c := e.old.DeepCopy()
			c.Status.ReservedFor = nil
			e.api.set(c)
		},
		"holder's pod ended": func(e *waitEnv) {
			p := ptPod("p-old", "old")
			p.Status.Phase = corev1.PodSucceeded
			e.api.setPods(p)
		},
		"holder's pod being deleted": func(e *waitEnv) {
			p := ptPod("p-old", "old")
			p.DeletionTimestamp = &metav1.Time{Time: ptClockTime}
			e.api.setPods(p)
		},
		"holder's pod gone": func(e *waitEnv) { e.api.setPods() },
	} {
		t.Run(name, func(t *testing.T) {
			e := newWaitEnv(t)
			e.api.setPods(ptPod("p-old", "old"))
			release(e)
			done := e.start(e.ctx, e.new)
			e.waiting(t, done)
			// The kubelet's Unprepare of the old claim wakes it.
			mustUnprepare(t, e.ctx, e.s, ptRef(e.old))
			r := result(t, done)[e.new.UID]
			if r.Err != nil {
				t.Fatalf("Prepare after the holder was unprepared: %v", r.Err)
			}
			if !e.isPrepared(t, e.new) {
				t.Error("new claim not recorded")
			}
			if log := e.log.String(); !strings.Contains(log, "Waiting for a claim that is being released") || !strings.Contains(log, "Prepared a claim after its device was released") {
				t.Errorf("log does not tell the wait:\n%s", log)
			}
		})
	}
}

func TestReleaseWaitFailsFastWhenHolderIsInUse(t *testing.T) {
	for name, setup := range map[string]func(e *waitEnv){
		"its pod runs":              func(e *waitEnv) { e.api.setPods(ptPod("p-old", "old")) },
		"the API server is down":    func(e *waitEnv) { e.api.failGet("default", "old", errAPIDown) },
		"pods cannot be listed":     func(e *waitEnv) { e.api.listErr = errAPIDown },
		"a consumer that is no pod": func(e *waitEnv) { e.old.Status.ReservedFor[0].Resource = "jobs"; e.api.set(e.old) },
	} {
		t.Run(name, func(t *testing.T) {
			e := newWaitEnv(t)
			setup(e)
			start := time.Now()
			r := result(t, e.start(e.ctx, e.new))[e.new.UID]
			if r.Err == nil || r.Err.Error() != ptHeldMsg {
				t.Errorf("err:\n got %v\nwant %s", r.Err, ptHeldMsg)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %s", d)
			}
			if e.isPrepared(t, e.new) || !e.isPrepared(t, e.old) {
				t.Error("refused claim recorded, or holder removed")
			}
		})
	}
	t.Run("recovered holder", func(t *testing.T) {
		e := newWaitEnv(t)
		e.api.del("default", "old")
		if err := removeCheckpoint(e); err != nil {
			t.Fatal(err)
		}
		r := result(t, e.start(e.ctx, e.new))[e.new.UID]
		if r.Err == nil || !strings.Contains(r.Err.Error(), "is already prepared for claim (name unknown, recovered from its CDI spec)") {
			t.Errorf("err = %v", r.Err)
		}
		if gets, _ := e.api.calls(); len(gets) != 0 {
			t.Errorf("GETs for a holder without a name: %v", gets)
		}
	})
}

// Waiting helps only when every reason for the refusal is a holder.
func TestHoldersOf(t *testing.T) {
	h1, h2 := &heldError{holder: "h1", msg: "x"}, &heldError{holder: "h2", msg: "y"}
	if got, ok := holdersOf(errors.Join(h1, h2)); !ok || len(got) != 2 || got[0] != "h1" || got[1] != "h2" {
		t.Errorf("two holders: %v %v", got, ok)
	}
	if _, ok := holdersOf(errors.Join(h1, errors.New("block device in use"))); ok {
		t.Error("a refusal for another reason too counts as held")
	}
	if _, ok := holdersOf(nil); ok {
		t.Error("no error counts as held")
	}
	if got, ok := holdersOf(fmt.Errorf("prepare claim x: %w", h1)); !ok || len(got) != 1 || got[0] != "h1" {
		t.Errorf("wrapped: %v %v", got, ok)
	}
}

// removeCheckpoint loses the checkpoint: the next call rebuilds it from the
// spec files, with entries that have no claim name.
func removeCheckpoint(e *waitEnv) error { return os.Remove(e.s.CheckpointPath()) }

func TestReleaseWaitBounded(t *testing.T) {
	e := newWaitEnv(t)
	e.api.del("default", "old")
	done := e.start(e.ctx, e.new)
	e.waiting(t, done)
	e.clock.Step(DefaultReleaseWait - time.Second)
	select {
	case r := <-done:
		t.Fatalf("gave up before the bound: %v", r[e.new.UID].Err)
	case <-time.After(20 * time.Millisecond):
	}
	e.clock.Step(time.Second)
	r := result(t, done)[e.new.UID]
	if r.Err == nil {
		t.Fatal("prepared while the holder is still prepared")
	}
	msg := r.Err.Error()
	if !strings.HasPrefix(msg, ptHeldMsg) || !strings.Contains(msg, "waited 25s for the kubelet to unprepare the claim holding it, which is being released (claim default/old (UID uid-old): the ResourceClaim no longer exists)") {
		t.Errorf("err = %s", msg)
	}
	if e.isPrepared(t, e.new) || !e.isPrepared(t, e.old) {
		t.Error("the wait changed what is prepared")
	}
}

// The kubelet's deadline bounds the wait too, with room to answer.
func TestReleaseWaitWithinCallDeadline(t *testing.T) {
	e := newWaitEnv(t)
	e.api.del("default", "old")
	ctx, cancel := context.WithTimeout(e.ctx, releaseWaitMargin+10*time.Second)
	defer cancel()
	done := e.start(ctx, e.new)
	e.waiting(t, done)
	e.clock.Step(10 * time.Second)
	if r := result(t, done)[e.new.UID]; r.Err == nil || !strings.Contains(r.Err.Error(), "waited 10s") {
		t.Errorf("err = %v", r.Err)
	}
}

// While one claim waits, the state is not locked: other claims are
// prepared and unprepared at once.
func TestReleaseWaitDoesNotBlockOtherClaims(t *testing.T) {
	e := newWaitEnv(t)
	e.api.del("default", "old")
	done := e.start(e.ctx, e.new)
	e.waiting(t, done)
	other := ptClaim("other", ptResults(ptResult("disk", "loop1")))
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Second)
	defer cancel()
	if r := e.w.prepare(ctx, []*resourceapi.ResourceClaim{other})[other.UID]; r.Err != nil {
		t.Fatalf("another claim while one waits: %v", r.Err)
	}
	if res := e.s.Unprepare(ctx, []kubeletplugin.NamespacedObject{ptRef(other)}); res[other.UID] != nil {
		t.Fatalf("unprepare another claim while one waits: %v", res[other.UID])
	}
	select {
	case r := <-done:
		t.Fatalf("the waiting claim returned before its holder was unprepared: %v", r[e.new.UID].Err)
	default:
	}
	mustUnprepare(t, e.ctx, e.s, ptRef(e.old))
	if r := result(t, done)[e.new.UID]; r.Err != nil {
		t.Fatal(r.Err)
	}
}

// Claims in one batch with a holder in the same batch: the holder is in
// use (its pod is starting), so the second fails at once.
func TestReleaseWaitHolderInSameBatch(t *testing.T) {
	e := newWaitEnv(t)
	a, b := ptClaim("a", ptResults(ptResult("d", "loop1"))), ptClaim("b", ptResults(ptResult("d", "loop1")))
	a.Status.ReservedFor = []resourceapi.ResourceClaimConsumerReference{{Resource: "pods", Name: "p", UID: "pod-uid-p"}}
	e.api.set(a)
	e.api.setPods(ptPod("p", "a", "b"))
	res := result(t, e.start(e.ctx, a, b))
	if res[a.UID].Err != nil || res[b.UID].Err == nil || !strings.Contains(res[b.UID].Err.Error(), "already prepared for claim default/a") {
		t.Errorf("a: %v, b: %v", res[a.UID].Err, res[b.UID].Err)
	}
}
