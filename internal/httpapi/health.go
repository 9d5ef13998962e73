package httpapi

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// Three probes, for three questions:
//
//   - GET /health: is every dependency answering? The overall status the
//     README promises (503 when any non-optional check fails), for people and
//     monitoring.
//   - GET /health/live: is this process alive? It checks nothing else, so a
//     Redis or Postgres outage never gets a process restarted: liveness
//     probes use it.
//   - GET /health/ready: can this process do its job now? Only the checks
//     marked Ready decide (Redis, or the ledger when the Postgres tier is
//     configured, since the API then accepts orders while Redis is down):
//     readiness probes and load balancers use it.

// healthTimeout bounds each dependency check.
const healthTimeout = 2 * time.Second

// handleHealth reports each dependency: 200 when all answer, else 503.
func handleHealth(checks []Check) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		detailed := make(map[string]string, len(checks))
		ok := true
		for _, c := range checks {
			ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
			err := c.Ping(ctx)
			cancel()
			if err != nil {
				ok = ok && c.Optional
				detailed[c.Name] = "UNAVAILABLE"
				continue
			}
			detailed[c.Name] = "OK"
		}
		writeHealth(w, ok, detailed)
	}
}

// handleLive answers 200 while the process can serve HTTP at all.
func handleLive(w http.ResponseWriter, _ *http.Request) {
	writeHealth(w, true, map[string]string{})
}

// handleReady pings the checks that gate readiness, at once so that the
// answer comes within one healthTimeout, and answers 200 when all of them
// answer. The other checks are left out: a slow optional cache must not make
// a probe time out.
func handleReady(checks []Check) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var (
			mu       sync.Mutex
			wg       sync.WaitGroup
			ok       = true
			detailed = map[string]string{}
		)
		for _, c := range checks {
			if !c.Ready {
				continue
			}
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
				err := c.Ping(ctx)
				cancel()
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					ok = false
					detailed[c.Name] = "UNAVAILABLE"
					return
				}
				detailed[c.Name] = "OK"
			})
		}
		wg.Wait()
		writeHealth(w, ok, detailed)
	}
}

// writeHealth answers in /health's shape: 200 OK or 503 UNAVAILABLE.
func writeHealth(w http.ResponseWriter, ok bool, detailed map[string]string) {
	body := map[string]any{"overall_status": "OK", "detailed_status": detailed}
	if !ok {
		body["overall_status"] = "UNAVAILABLE"
		encode(w, http.StatusServiceUnavailable, body)
		return
	}
	encode(w, http.StatusOK, body)
}
