package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/queue/queuetest"
)

// probe GETs a health route and returns its status and detailed_status.
func probe(t *testing.T, base, path string) (int, map[string]string) {
	t.Helper()
	resp, err := http.Get(base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var body struct {
		Detailed map[string]string `json:"detailed_status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, body.Detailed
}

// startWorker runs `coordinator worker` and waits until it is ready.
func startWorker(t *testing.T, cfg string) string {
	t.Helper()
	base := startRun(t, "worker", cfg)
	waitFor(t, "the worker's /health/ready", 10*time.Second, func() bool {
		resp, err := http.Get(base + "/health/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return base
}

type probeWant struct {
	path   string
	status int
	detail map[string]string
}

func checkProbes(t *testing.T, base, when string, wants []probeWant) {
	t.Helper()
	for _, w := range wants {
		status, detail := probe(t, base, w.path)
		if status != w.status {
			t.Errorf("%s: %s answered %d, want %d (%v)", when, w.path, status, w.status, detail)
		}
		if w.detail != nil {
			if diff := cmp.Diff(w.detail, detail); diff != "" {
				t.Errorf("%s: %s detailed_status (-want +got):\n%s", when, w.path, diff)
			}
		}
	}
}

// Liveness never depends on Redis; readiness does in the Redis-only tier,
// where nothing can be accepted without it.
func TestProbesRedisOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a Redis server")
	}
	t.Parallel()
	srv := queuetest.StartServer(t)
	fake := lmstest.NewDemo(testSecret)
	cfg := testConfig(t, srv.URL(), lmstest.Start(t, fake).URL, queuetest.Name(), "")
	api := startRun(t, "api", cfg)
	worker := startWorker(t, testConfig(t, srv.URL(), lmstest.Start(t, fake).URL, queuetest.Name(), ""))
	for _, base := range []string{api, worker} {
		checkProbes(t, base, "Redis up", []probeWant{
			{"/health", 200, map[string]string{"redis": "OK"}},
			{"/health/live", 200, map[string]string{}},
			{"/health/ready", 200, map[string]string{"redis": "OK"}},
		})
	}
	srv.Kill()
	for _, base := range []string{api, worker} {
		checkProbes(t, base, "Redis down", []probeWant{
			{"/health", 503, map[string]string{"redis": "UNAVAILABLE"}},
			{"/health/live", 200, map[string]string{}},
			{"/health/ready", 503, map[string]string{"redis": "UNAVAILABLE"}},
		})
	}
	if status := post(t, api, orderBody("PROBE-1", 3, "")); status != http.StatusServiceUnavailable {
		t.Errorf("fulfill with Redis down: %d, want 503 (readiness said not ready)", status)
	}
	srv.Start()
	checkProbes(t, api, "Redis back", []probeWant{{"/health/ready", 200, nil}})
}

// With the ledger the API stays ready while Redis is down, because it still
// accepts orders; a worker-only process is not ready without Redis.
func TestProbesWithLedger(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a Redis server")
	}
	t.Parallel()
	e := newLedgerEnv(t, 46000, 1)
	api := startRun(t, "api", e.config())
	worker := startWorker(t, e.config())
	e.srv.Kill()
	checkProbes(t, api, "api, Redis down", []probeWant{
		{"/health", 503, map[string]string{"redis": "UNAVAILABLE", "postgres": "OK"}},
		{"/health/live", 200, map[string]string{}},
		{"/health/ready", 200, map[string]string{"postgres": "OK"}},
	})
	checkProbes(t, worker, "worker, Redis down", []probeWant{
		{"/health/live", 200, map[string]string{}},
		{"/health/ready", 503, map[string]string{"redis": "UNAVAILABLE", "postgres": "OK"}},
	})
	if status := post(t, api, orderBody("PROBE-2", 46000, "")); status != http.StatusOK {
		t.Errorf("fulfill with Redis down and the ledger up: %d, want 200 (readiness said ready)", status)
	}
}

// Queue gauges come from processes that run the worker only, so that a
// fleet of API replicas does not repeat them; every process says what it is.
func TestQueueGaugesOnlyFromWorkers(t *testing.T) {
	t.Parallel()
	fake := lmstest.NewDemo(testSecret)
	lmsURL, qname := lmstest.Start(t, fake).URL, queuetest.Name()
	for _, c := range []struct {
		mode   string
		gauges bool
	}{{"api", false}, {"worker", true}, {"all", true}} {
		cfg := testConfig(t, queuetest.URL(), lmsURL, qname, "")
		var base string
		if c.mode == "worker" {
			base = startWorker(t, cfg)
		} else {
			base = startRun(t, c.mode, cfg)
		}
		text := scrape(t, base)
		if got := strings.Contains(text, "coordinator_queue_up{"); got != c.gauges {
			t.Errorf("%s process exports coordinator_queue_up: %v, want %v", c.mode, got, c.gauges)
		}
		if !strings.Contains(text, `mode="`+c.mode+`",version="dev"} 1`) {
			t.Errorf("%s process lacks coordinator_build_info with mode=%q", c.mode, c.mode)
		}
	}
}
