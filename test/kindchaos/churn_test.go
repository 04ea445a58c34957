package kindchaos_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	churnLabel = "vr-chaos-churn"
	// The churn keeps between churnMin and churnMax of its pods.
	churnMin, churnMax = 6, 20
)

// churn creates and deletes pods on the workers, one API call at a time,
// at random instants, while it runs. Its choices come from its own random
// source, so a seed replays them whatever the faults' timing.
type churn struct {
	e   *env
	rng *rand.Rand

	mu      sync.Mutex
	live    []string // churn pods created and not yet deleted
	next    int
	creates int
	deletes int
	refused int // calls the API server did not accept (it may be down)

	stop chan struct{}
	done chan struct{}
}

func newChurn(e *env, rng *rand.Rand) *churn {
	return &churn{e: e, rng: rng}
}

// counts returns creates, deletes and refused calls so far.
func (ch *churn) counts() (int, int, int) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.creates, ch.deletes, ch.refused
}

// start runs the churn until halt.
func (ch *churn) start() {
	ch.stop, ch.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ch.done)
		for {
			wait := time.Duration(400+ch.rng.IntN(1600)) * time.Millisecond
			select {
			case <-ch.stop:
				return
			case <-time.After(wait):
			}
			ch.step()
		}
	}()
}

// halt stops the churn, if it runs, and waits for its last call.
func (ch *churn) halt() {
	if ch.stop == nil {
		return
	}
	close(ch.stop)
	<-ch.done
	ch.stop = nil
}

// step makes one create or delete: a create below churnMin pods, a delete
// above churnMax, else either.
func (ch *churn) step() {
	ch.mu.Lock()
	n := len(ch.live)
	create := n < churnMin || (n <= churnMax && ch.rng.IntN(2) == 0)
	var name, node string
	var victim int
	if create {
		name = fmt.Sprintf("churn-%04d", ch.next)
		node = ch.e.workers[ch.rng.IntN(len(ch.e.workers))]
	} else {
		victim = ch.rng.IntN(n)
		name = ch.live[victim]
	}
	ch.mu.Unlock()

	c, cancel := ctx(10 * time.Second)
	defer cancel()
	var err error
	if create {
		_, err = ch.e.cs.CoreV1().Pods("default").Create(c, churnPod(name, node, ch.e.ProbeImage()), metav1.CreateOptions{})
	} else {
		err = ch.e.cs.CoreV1().Pods("default").Delete(c, name, metav1.DeleteOptions{})
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	switch {
	case err != nil:
		// The same choice is not retried: the next step chooses again,
		// so a refused call costs the replay nothing but this one op.
		ch.refused++
		if create {
			ch.next++
		}
	case create:
		ch.next++
		ch.creates++
		ch.live = append(ch.live, name)
	default:
		ch.deletes++
		ch.live = append(ch.live[:victim], ch.live[victim+1:]...)
	}
}

// topUp churns, with no fault, until creates and deletes reach min or
// limit passes.
func (ch *churn) topUp(min int, limit time.Duration) {
	c, d, _ := ch.counts()
	if c+d >= min {
		return
	}
	ch.e.t.Logf("churn: %d creates and deletes so far, churning on to %d", c+d, min)
	ch.start()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if c, d, _ := ch.counts(); c+d >= min {
			break
		}
		time.Sleep(time.Second)
	}
	ch.halt()
}

// deleteAll deletes every churn pod (counted as deletes).
func (ch *churn) deleteAll() {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for _, name := range ch.live {
		c, cancel := ctx(10 * time.Second)
		err := ch.e.cs.CoreV1().Pods("default").Delete(c, name, metav1.DeleteOptions{})
		cancel()
		if err != nil {
			ch.e.t.Errorf("delete churn pod %s: %v", name, err)
			continue
		}
		ch.deletes++
	}
	ch.live = nil
}

// churnPod is a pod pinned to node that only sleeps.
func churnPod(name, node, image string) *corev1.Pod {
	grace := int64(1)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": churnLabel}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: &grace,
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{
				Name: "sleep", Image: image, ImagePullPolicy: corev1.PullNever,
				Command: []string{"/bin/busybox", "sleep", "3600"},
			}},
		},
	}
}
