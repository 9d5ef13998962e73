package main

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/lms/lmstest"
)

// sent is one fulfill request of a stream.
type sent struct {
	user    int64
	status  int // 0: no answer
	at      time.Time
	latency time.Duration
}

// stream posts orders for learners first, first+1, ... from four clients
// while during runs, and returns every request in the order they finished.
func stream(t *testing.T, base, prefix string, first int64, during func()) []sent {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	token := adminToken(t)
	var (
		mu      sync.Mutex
		results []sent
		next    = first
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				user := next
				next++
				mu.Unlock()
				req, _ := http.NewRequest(http.MethodPost, base+"/orders/fulfill",
					strings.NewReader(orderBody(fmt.Sprintf("%s-%d", prefix, user), user, "")))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "JWT "+token)
				start := time.Now()
				status := 0
				if resp, err := client.Do(req); err == nil {
					status = resp.StatusCode
					resp.Body.Close()
				}
				mu.Lock()
				results = append(results, sent{user, status, time.Now(), time.Since(start)})
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	during()
	close(stop)
	wg.Wait()
	sort.Slice(results, func(i, j int) bool { return results[i].at.Before(results[j].at) })
	return results
}

// learners lists the learner ids from, from+1, ... (n of them).
func learners(from int64, n int) []int64 {
	users := make([]int64, n)
	for i := range users {
		users[i] = from + int64(i)
	}
	return users
}

// waitAllEnrolled waits up to timeout for the learners' demo-course
// enrollments at the fake LMS and returns those still missing.
func waitAllEnrolled(fake *lmstest.Server, users []int64, timeout time.Duration) []int64 {
	deadline := time.Now().Add(timeout)
	for {
		var missing []int64
		for _, u := range users {
			if _, ok := fake.Enrollment(fmt.Sprintf("learner%d", u), demoCourse); !ok {
				missing = append(missing, u)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			return missing
		}
		time.Sleep(100 * time.Millisecond)
	}
}
