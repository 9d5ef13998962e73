package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/queue/queuetest"
	"github.com/openedx/coordinator/internal/store/postgres/pgtest"
)

// A Redis primary, a replica and three sentinels; the primary is killed
// during a stream of fulfill requests and Coordinator carries on with the
// promoted replica by itself. Run without and with the ledger.
func TestSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a Redis primary, replica and three sentinels")
	}
	t.Parallel()
	for _, ledger := range []bool{false, true} {
		name := "redis only"
		if ledger {
			name = "with ledger"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sentinelRun(t, ledger)
		})
	}
}

func sentinelRun(t *testing.T, withLedger bool) {
	primary := queuetest.StartServer(t)
	replica := queuetest.StartServer(t, "--replicaof", "127.0.0.1", strconv.Itoa(primary.Port()))
	ctx := context.Background()
	rep := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(replica.Port())})
	defer rep.Close()
	waitFor(t, "the replica to sync", 20*time.Second, func() bool {
		info, _ := rep.Info(ctx, "replication").Result()
		return strings.Contains(info, "master_link_status:up")
	})
	var addrs []string
	for range 3 {
		addrs = append(addrs, queuetest.StartSentinel(t, primary.Port()))
	}
	waitFor(t, "the sentinels to know the replica and each other", 30*time.Second, func() bool {
		for _, a := range addrs {
			s := redis.NewSentinelClient(&redis.Options{Addr: a})
			reps, err1 := s.Replicas(ctx, "mymaster").Result()
			sens, err2 := s.Sentinels(ctx, "mymaster").Result()
			s.Close()
			if err1 != nil || err2 != nil || len(reps) != 1 || len(sens) != 2 {
				return false
			}
		}
		return true
	})

	fake := lmstest.NewDemo(testSecret)
	fake.SetRecording(false)
	addLearners(fake, 50000, 20000)
	extra := ""
	if withLedger {
		extra = databaseYAML(pgtest.Schema(t))
	}
	quoted := make([]string, len(addrs))
	for i, a := range addrs {
		quoted[i] = strconv.Quote(a)
	}
	cfg := testConfig(t, fmt.Sprintf("{sentinel: {master_name: mymaster, addrs: [%s]}}", strings.Join(quoted, ", ")),
		lmstest.Start(t, fake).URL, queuetest.Name(), extra)
	if withLedger {
		mustRunCmd(t, cfg, nil, "migrate")
	}
	base := startRun(t, "all", cfg)

	var killedAt time.Time
	results := stream(t, base, "SENT", 50000, func() {
		time.Sleep(2 * time.Second)
		killedAt = time.Now()
		primary.Kill()
		time.Sleep(10 * time.Second)
	})

	var accepted []int64
	refused, okAfter := 0, 0
	var gap time.Duration // the longest wait between two 200s: what shops saw of the failover
	var prevOK time.Time
	for _, r := range results {
		switch r.status {
		case http.StatusOK:
			accepted = append(accepted, r.user)
			if !prevOK.IsZero() {
				gap = max(gap, r.at.Sub(prevOK))
			}
			prevOK = r.at
			if r.at.After(killedAt.Add(5 * time.Second)) {
				okAfter++
			}
		case http.StatusServiceUnavailable:
			refused++
		default:
			t.Errorf("order of learner %d answered %d, want 200 or 503", r.user, r.status)
		}
	}
	if okAfter == 0 {
		t.Fatalf("no order accepted after the failover: the service did not resume on the promoted replica")
	}
	lost := waitAllEnrolled(fake, accepted, 90*time.Second)
	t.Logf("ledger=%v: %d requests, %d accepted, %d refused with 503, longest gap between two 200s %v; accepted but never enrolled: %d",
		withLedger, len(results), len(accepted), refused, gap.Round(time.Millisecond), len(lost))
	if withLedger && len(lost) > 0 {
		t.Errorf("with the ledger, %d accepted orders were lost: %v", len(lost), lost[:min(10, len(lost))])
	}
}
