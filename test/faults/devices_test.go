//go:build faults

package faults

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// waitPublished waits until d is (or is not) in the node's slices.
func (s *suite) waitPublished(d *loopDev, want bool, timeout time.Duration) error {
	return poll(timeout, func() (bool, error) {
		byPath, err := s.slices()
		return err == nil && (byPath[d.path] != "") == want, nil
	})
}

// deviceRemoved unplugs an exclusive and a shared device (loop devices detached, their udev entries gone)
// while claims hold them, then plugs them back (same backing files, same numbers). While they are gone the
// claims stay prepared (the kubelet still runs their containers), the devices leave the slices, and a claim
// newly allocated to the gone device is refused and leaves nothing. Once back, the devices are published again,
// the kubelet's repeated Prepare of the holders gives the same answers, and a claim for the exclusive device is
// refused until its holder is unprepared.
func (s *suite) deviceRemoved() {
	s.runs(1)
	ex, sh := s.devs[1], s.devs[5]
	held := s.newClaims("gone", []*loopDev{ex, sh})
	s.mustPrepare(held, "before the removal")
	for _, d := range []*loopDev{ex, sh} {
		if err := s.detach(d); err != nil {
			s.abortf("%v", err)
		}
	}
	defer func() {
		for _, d := range []*loopDev{ex, sh} {
			if !attached(d) {
				_ = s.attach(d)
			}
		}
	}()
	for _, d := range []*loopDev{ex, sh} {
		if err := s.waitPublished(d, false, 20*time.Second); err != nil {
			s.count(kError, "", "%s was detached but is still published after 20 s", d.path)
		}
	}
	s.verify("devices removed")
	late := s.newClaims("gone-new", []*loopDev{ex})
	r := s.prepare(late)
	if len(r.ok) > 0 {
		s.count(kError, "", "a claim for the removed %s was prepared", ex.path)
	}
	fmt.Printf("faults:   Prepare for the removed %s: %.300s\n", ex.path, r.firstErr())
	s.verify("devices removed, after a Prepare for one of them failed")

	for _, d := range []*loopDev{ex, sh} {
		if err := s.attach(d); err != nil {
			s.abortf("%v", err)
		}
		if err := s.waitPublished(d, true, 20*time.Second); err != nil {
			s.count(kError, "", "%s was attached again but is not published after 20 s", d.path)
		}
	}
	s.waitRestored(held, "devices back")
	s.verify("devices back")
	s.mustPrepare(held, "the kubelet prepares the holders again")
	r = s.prepare(late)
	if len(r.ok) > 0 {
		s.count(kDoubled, "", "a second claim for %s was prepared while %s holds it", ex.path, held[0].name)
	} else if !strings.Contains(r.firstErr(), "already prepared") {
		s.count(kError, "", "the refusal of a second claim for %s does not say it is held: %q", ex.path, r.firstErr())
	}
	s.mustUnprepare(held[:1], "the holder ends")
	s.mustPrepare(late, "the new claim after the holder ended")
	s.verify("devices back, holder replaced")
}

// racingCallers has 24 callers prepare 24 claims allocated to one exclusive device at once (the scheduler
// never does that; a stale allocation or a bug might): exactly one may get it, the others must be refused saying
// which claim holds it. Three rounds, the third with a kill -9 at a seeded moment and the callers retrying.
func (s *suite) racingCallers() {
	for round := 0; round < 3; round++ {
		s.runs(1)
		d := s.devs[round]
		set := s.newClaims("race", []*loopDev{d, d, d, d, d, d, d, d, d, d, d, d, d, d, d, d, d, d, d, d, d, d, d, d})
		race := func() (won int) {
			var wg sync.WaitGroup
			start := make(chan struct{})
			var mu sync.Mutex
			for _, c := range set {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					r := s.prepare([]*claim{c})
					mu.Lock()
					defer mu.Unlock()
					if len(r.ok) == 1 {
						won++
					} else if msg := r.firstErr(); r.err == nil && !strings.Contains(msg, "already prepared") {
						s.count(kError, "racemsg", "a refused racing caller got %q, which does not say the device is held", msg)
					}
				}()
			}
			close(start)
			wg.Wait()
			return won
		}
		if round == 2 {
			done := make(chan int, 1)
			go func() { done <- race() }()
			time.Sleep(time.Duration(s.rng.Intn(30)) * time.Millisecond)
			s.plugin.kill()
			<-done
			s.restart("after kill -9 among racing callers")
			s.verify("after kill -9 among racing callers")
		}
		won := race()
		switch n := countPrepared(set); {
		case n > 1 || won > 1:
			s.count(kDoubled, "", "round %d: %d of %d claims for exclusive %s were prepared", round+1, max(n, won), len(set), d.path)
		case n == 0:
			s.count(kError, "", "round %d: none of %d claims for %s was prepared", round+1, len(set), d.path)
		}
		s.verify(fmt.Sprintf("racing callers, round %d", round+1))
		s.mustUnprepare(set, "after the race")
	}
}

func countPrepared(set []*claim) int {
	n := 0
	for _, c := range set {
		if c.state == stPrepared {
			n++
		}
	}
	return n
}

// claimReplaced deletes a prepared claim and creates one under the same name allocated to the same exclusive
// device:
//   - in the kubelet's usual order (unprepare, delete, create, prepare);
//   - created before the kubelet unprepared the old one: the new one's Prepare waits (the old claim was replaced,
//     so it is being released) and succeeds once the kubelet's Unprepare of the old one comes, 2 s later;
//   - the same on shared devices, where nothing waits: the new claim is prepared first, then the old one is
//     unprepared, and the new one must keep its files (its device metadata file among them);
//   - a Prepare that still names the old UID is refused (the helper sees the claim was replaced) and leaves
//     nothing.
func (s *suite) claimReplaced() {
	d := s.devs[3]
	name := fmt.Sprintf("reuse-%d", time.Now().UnixNano()%100000)

	s.runs(1)
	old := s.newClaimNamed(name, d)
	s.mustPrepare([]*claim{old}, "the first claim")
	s.mustUnprepare([]*claim{old}, "the first claim ends")
	s.deleteClaims([]*claim{old})
	s.waitGone(name)
	c2 := s.newClaimNamed(name, d)
	s.mustPrepare([]*claim{c2}, "the claim created again")
	s.verify("claim recreated in the kubelet's order")

	s.runs(1)
	s.deleteClaims([]*claim{c2})
	s.waitGone(name)
	c3 := s.newClaimNamed(name, d)
	done := make(chan result, 1)
	t0 := time.Now()
	go func() { done <- s.prepare([]*claim{c3}) }()
	time.Sleep(2 * time.Second)
	s.mustUnprepare([]*claim{c2}, "the kubelet unprepares the replaced claim")
	r := <-done
	if len(r.ok) != 1 {
		s.count(kError, "", "the claim created again before the old one was unprepared was not prepared once it was: %s", r.firstErr())
	} else {
		fmt.Printf("faults:   the new claim was prepared %s after its Prepare began (the old one was unprepared after 2 s)\n", time.Since(t0).Round(time.Millisecond))
	}
	s.verify("claim recreated before the old one was unprepared")

	s.runs(1)
	s.mustUnprepare([]*claim{c3}, "before the next case")
	s.deleteClaims([]*claim{c3})
	s.waitGone(name)
	// The name again, on a shared device each: nothing to wait for, so the new claim is prepared while the old one
	// still is, and the old one's Unprepare comes after. The device metadata files are kept per claim name.
	d4 := s.newClaimNamed(name, s.devs[6])
	s.mustPrepare([]*claim{d4}, "a claim on a shared device")
	s.deleteClaims([]*claim{d4})
	s.waitGone(name)
	d5 := s.newClaimNamed(name, s.devs[7])
	s.mustPrepare([]*claim{d5}, "the claim created again, the old one still prepared")
	s.mustUnprepare([]*claim{d4}, "the kubelet unprepares the replaced claim")
	s.verify("claim recreated and prepared before the old one was unprepared")
	s.mustUnprepare([]*claim{d5}, "the new claim ends")

	s.runs(1)
	r = s.prepare([]*claim{c2})
	if len(r.ok) > 0 {
		s.count(kChanged, "", "a Prepare naming the replaced claim's UID %s succeeded", c2.uid)
	} else if !strings.Contains(r.firstErr(), "replaced") {
		s.count(kError, "", "a Prepare naming the replaced claim's UID failed with %q, which does not say it was replaced", r.firstErr())
	}
	s.verify("Prepare of a replaced claim's old UID")
}

func (s *suite) newClaimNamed(name string, d *loopDev) *claim {
	c, err := s.createClaim(name, d)
	if err != nil {
		s.abortf("create claim %s: %v", name, err)
	}
	s.mu.Lock()
	s.claims[c.uid] = c
	s.mu.Unlock()
	return c
}

func (s *suite) waitGone(name string) {
	if err := poll(30*time.Second, func() (bool, error) {
		_, err := s.kube.ResourceV1().ResourceClaims(nsName).Get(context.Background(), name, metav1.GetOptions{})
		return err != nil, nil
	}); err != nil {
		s.abortf("claim %s was not deleted", name)
	}
}
