package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/queue/queuetest"
	"github.com/openedx/coordinator/internal/store/postgres/pgtest"
)

// A Redis Cluster of three primaries with a replica each, on loopback. The
// primary that holds the queue (asynq puts every key of a queue in one hash
// slot, {queue}: one queue lives on one primary) is killed during a stream
// of fulfill requests; its replica is promoted and Coordinator carries on.
// With the ledger, every accepted order is enrolled; none is enrolled in a
// second enrollment, whatever asynq's at-least-once delivery repeats. Most
// of the test's minute is asynq's own recovery: a task the worker held when
// the primary died stays "active" on the promoted replica until its 30 s
// lease expires and asynq's recoverer requeues it.
func TestRedisClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a six-node Redis Cluster")
	}
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Skip("redis-cli is not installed (Debian package redis-tools)")
	}
	t.Parallel()
	ctx := context.Background()
	var nodes []*queuetest.Server
	var addrs []string
	for range 6 {
		s := queuetest.StartServer(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "1000")
		nodes = append(nodes, s)
		addrs = append(addrs, "127.0.0.1:"+strconv.Itoa(s.Port()))
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	if out, err := exec.Command("redis-cli", append(args, "--cluster-replicas", "1", "--cluster-yes")...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer cluster.Close()
	waitFor(t, "the cluster to be ok on every node", 30*time.Second, func() bool {
		for _, a := range addrs {
			c := redis.NewClient(&redis.Options{Addr: a})
			info, err := c.ClusterInfo(ctx).Result()
			c.Close()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
		}
		return true
	})

	// The primary serving the queue's hash slot, and its replica.
	qname := queuetest.Name()
	slot, err := cluster.ClusterKeySlot(ctx, "{"+qname+"}").Result()
	if err != nil {
		t.Fatal(err)
	}
	var victim *queuetest.Server
	var replicaAddr string
	waitFor(t, "the queue's slot to have a primary and a replica", 30*time.Second, func() bool {
		shards, err := cluster.ClusterShards(ctx).Result()
		if err != nil {
			return false
		}
		for _, sh := range shards {
			owns := false
			for _, r := range sh.Slots {
				owns = owns || (r.Start <= slot && slot <= r.End)
			}
			var primary, replica string
			for _, n := range sh.Nodes {
				addr := fmt.Sprintf("127.0.0.1:%d", n.Port)
				if n.Role == "master" && n.Health == "online" {
					primary = addr
				} else if n.Role == "replica" && n.Health == "online" {
					replica = addr
				}
			}
			if !owns || primary == "" || replica == "" {
				continue
			}
			for _, n := range nodes {
				if primary == "127.0.0.1:"+strconv.Itoa(n.Port()) {
					victim, replicaAddr = n, replica
					return true
				}
			}
		}
		return false
	})

	fake := lmstest.NewDemo(testSecret)
	addLearners(fake, 60000, 20000)
	quoted := make([]string, len(addrs))
	for i, a := range addrs {
		quoted[i] = strconv.Quote(a)
	}
	cfg := testConfig(t, fmt.Sprintf("{cluster: {addrs: [%s]}}", strings.Join(quoted, ", ")),
		lmstest.Start(t, fake).URL, qname, databaseYAML(pgtest.Schema(t)))
	mustRunCmd(t, cfg, nil, "migrate")
	base := startRun(t, "all", cfg)

	var killedAt time.Time
	var promotedIn time.Duration // 0: not seen promoted during the stream
	results := stream(t, base, "CLUSTER", 60000, func() {
		time.Sleep(1500 * time.Millisecond)
		killedAt = time.Now()
		victim.Kill()
		replica := redis.NewClient(&redis.Options{Addr: replicaAddr})
		defer replica.Close()
		for time.Since(killedAt) < 6*time.Second {
			if info, err := replica.Info(ctx, "replication").Result(); err == nil && promotedIn == 0 &&
				strings.Contains(info, "role:master") {
				promotedIn = time.Since(killedAt)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	if promotedIn == 0 {
		t.Fatal("the replica was not promoted within 6s of the kill")
	}

	var accepted []int64
	refused, okAfter := 0, 0
	var gap time.Duration
	var prevOK time.Time
	for _, r := range results {
		switch r.status {
		case http.StatusOK:
			accepted = append(accepted, r.user)
			if !prevOK.IsZero() {
				gap = max(gap, r.at.Sub(prevOK))
			}
			prevOK = r.at
			if r.at.After(killedAt.Add(4 * time.Second)) {
				okAfter++
			}
		case http.StatusServiceUnavailable:
			refused++
		default:
			t.Errorf("order of learner %d answered %d, want 200 or 503", r.user, r.status)
		}
	}
	if okAfter == 0 {
		t.Fatal("no order accepted after the failover: the service did not resume on the promoted replica")
	}
	waitStart := time.Now()
	lost := waitAllEnrolled(fake, accepted, 90*time.Second)
	t.Logf("all accepted enrolled %v after the stream", time.Since(waitStart).Round(100*time.Millisecond))
	if len(lost) > 0 {
		t.Errorf("%d accepted orders were never enrolled: %v", len(lost), lost[:min(10, len(lost))])
	}
	// Each accepted line holds one active enrollment in the mode bought;
	// a repeated POST (at-least-once delivery around the crash) changes
	// nothing at the LMS, which updates the enrollment it has.
	posts := map[string]int{}
	for _, c := range fake.Calls(lmstest.Enroll) {
		var body struct {
			User string `json:"user"`
		}
		if json.Unmarshal(c.Body, &body) == nil && c.Status == http.StatusOK {
			posts[body.User]++
		}
	}
	repeated := 0
	for _, u := range accepted {
		name := fmt.Sprintf("learner%d", u)
		if e, ok := fake.Enrollment(name, demoCourse); ok && (!e.IsActive || e.Mode != "audit") {
			t.Errorf("%s: enrollment %+v, want active audit", name, e)
		}
		if posts[name] > 1 {
			repeated++
		}
	}
	t.Logf("cluster failover: replica promoted %v after the kill; %d requests, %d accepted, %d refused with 503, "+
		"longest gap between two 200s %v; never enrolled: %d; lines whose enrollment was POSTed more than once: %d",
		promotedIn.Round(100*time.Millisecond), len(results), len(accepted), refused, gap.Round(time.Millisecond), len(lost), repeated)
}
