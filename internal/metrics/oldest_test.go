package metrics

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The gauge is the age of the oldest open line, 0 without one, and absent
// when the look-up fails (a wrong age would mislead the alert).
func TestOldestOpenLine(t *testing.T) {
	now := time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		at   time.Time
		ok   bool
		err  error
		want string
	}{
		{"open line", now.Add(-90 * time.Minute), true, nil, `coordinator_oldest_open_line_age_seconds{queue="q"} 5400`},
		{"none", time.Time{}, false, nil, `coordinator_oldest_open_line_age_seconds{queue="q"} 0`},
		{"unreadable", time.Time{}, false, errors.New("down"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New()
			m.reg.MustRegister(newOldestCollector("q", func(context.Context) (time.Time, bool, error) { return tc.at, tc.ok, tc.err },
				func() time.Time { return now }, oldestRefresh))
			got := exposition(t, m)
			if tc.want == "" {
				if strings.Contains(got, "coordinator_oldest_open_line_age_seconds{") {
					t.Errorf("gauge exported although the look-up failed:\n%s", got)
				}
				return
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("want %s in:\n%s", tc.want, got)
			}
		})
	}
}

// /metrics is unauthenticated and a look-up without a ledger reads up to
// 50,000 tasks from Redis: however many scrapes arrive, the oldest open line
// is looked up at most once per interval, in the background, and a scrape
// never waits for a look-up once one has ended. The gauge stays right: the
// age grows with the clock between look-ups and follows a new look-up.
func TestOldestOpenLineLookedUpOffTheScrapePath(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	oldestAt := now.Add(-90 * time.Minute)

	var calls atomic.Int32
	gate := make(chan struct{}, 1) // each look-up takes one token: the test says when it ends
	gate <- struct{}{}
	c := newOldestCollector("q", func(context.Context) (time.Time, bool, error) {
		calls.Add(1)
		<-gate
		return oldestAt, true, nil
	}, clock, oldestRefresh)
	m := New()
	m.reg.MustRegister(c)
	gauge := func(want string) {
		t.Helper()
		if got := exposition(t, m); !strings.Contains(got, `coordinator_oldest_open_line_age_seconds{queue="q"} `+want+"\n") {
			t.Fatalf("want the gauge at %s in:\n%s", want, got)
		}
	}

	// 200 scrapes at once, the first ever: one look-up, which they share.
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() { gauge("5400") })
	}
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Fatalf("200 concurrent scrapes made %d look-ups, want 1", n)
	}
	// Within the interval: no look-up, the age follows the clock.
	advance(oldestRefresh - time.Second)
	for range 100 {
		gauge("5409")
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("scrapes within the interval made %d look-ups, want still 1", n)
	}
	// After it: the next scrape starts one look-up in the background and
	// answers at once with the last result, although the look-up hangs.
	advance(time.Second)
	scraped := make(chan struct{})
	go func() {
		defer close(scraped)
		for range 100 {
			gauge("5410")
		}
	}()
	select {
	case <-scraped:
	case <-time.After(time.Minute): // a deadlock guard, not a latency bound
		t.Fatal("scrapes waited for the look-up in flight")
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("after the interval: %d look-ups, want 2 (one at a time)", n)
	}
	// The line was finished meanwhile: the new look-up's result is exported.
	c.mu.Lock()
	running := c.running
	c.mu.Unlock()
	oldestAt = clock().Add(-time.Minute) // read by the look-up only after the gate opens
	gate <- struct{}{}
	<-running
	gauge("60")
}
