package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/flow"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/seat"
	"github.com/openedx/coordinator/internal/webhooks/webhookstest"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// The example of the Standard Webhooks specification.
func TestSignVector(t *testing.T) {
	d, err := New(Options{Subscribers: []Subscriber{{Name: "a", URL: "http://127.0.0.1:1", Secrets: []string{secret, secret}, Timeout: time.Second}}})
	if err != nil {
		t.Fatal(err)
	}
	key := d.subs[0].keys[0]
	got := Sign([][]byte{key}, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Errorf("Sign = %q, want %q", got, want)
	}
	if two := Sign(d.subs[0].keys, "msg_x", 1, nil); len(strings.Fields(two)) != 2 {
		t.Errorf("two secrets: %q, want two space-separated signatures", two)
	}
}

// newSub is one subscriber at url with a 300 ms timeout.
func newSub(t *testing.T, url string, headers map[string]string, conc int) (*Deliveries, *subscriber) {
	t.Helper()
	d, err := New(Options{Subscribers: []Subscriber{{Name: "crm", URL: url, Secrets: []string{secret}, Timeout: 300 * time.Millisecond,
		Headers: headers, MaxConcurrency: conc}}})
	if err != nil {
		t.Fatal(err)
	}
	return d, d.subs[0]
}

func job(t *testing.T) pipeline.Job {
	t.Helper()
	ref := fulfillment.Ref{Site: "default", OrderNumber: "W-1", CourseID: "course-v1:a+b+c", Event: fulfillment.SignalOrderPlaced}
	body, _ := json.Marshal(Envelope{Type: fulfillment.SignalOrderPlaced, Timestamp: time.Now().UTC(), Data: map[string]string{"order_number": "W-1"}})
	payload, _ := json.Marshal(delivery{Ref: ref, MessageID: MessageID(ref.Site, ref.OrderNumber, ref.CourseID, ref.Event), Body: body})
	return pipeline.Job{Kind: Kind("crm"), ID: pipeline.JobID(Kind("crm"), ref), Ref: ref, Payload: payload}
}

// How each answer is classed, with what the error says and never says.
func TestDeliverOutcomes(t *testing.T) {
	var redirected atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) { redirected.Add(1) })
	mux.HandleFunc("/hook/{status}", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhookstest.Verify(secret, r.Header, body, time.Now()); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if r.Header.Get("X-Tenant") != "acme" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "headers", http.StatusBadRequest)
			return
		}
		switch r.PathValue("status") {
		case "slow":
			time.Sleep(time.Second)
		case "301":
			http.Redirect(w, r, "/elsewhere", http.StatusMovedPermanently)
		case "429":
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(429)
		case "500":
			w.WriteHeader(500)
			w.Write([]byte("boom\n" + strings.Repeat("x", 100_000)))
		default:
			w.WriteHeader(map[string]int{"204": 204, "410": 410}[r.PathValue("status")])
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tests := []struct {
		path      string
		ok        bool
		permanent bool
		retryIn   time.Duration
		says      string
	}{
		{"204", true, false, 0, ""},
		{"410", false, true, 0, "410 Gone"},
		{"301", false, false, 0, "redirects are not followed"},
		{"429", false, false, 7 * time.Second, "answered 429"},
		{"500", false, false, 0, "answered 500: boom x"},
		{"slow", false, false, 0, "no answer within 300ms"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			d, s := newSub(t, srv.URL+"/hook/"+tt.path+"?token=s3cr3t", map[string]string{"X-Tenant": "acme"}, 2)
			err := d.handle(context.Background(), s, job(t))
			if (err == nil) != tt.ok || pipeline.IsPermanent(err) != tt.permanent || pipeline.IsHold(err) {
				t.Fatalf("error %v: want ok %v, permanent %v, not held", err, tt.ok, tt.permanent)
			}
			if err == nil {
				return
			}
			if !strings.Contains(err.Error(), tt.says) || strings.Contains(err.Error(), "s3cr3t") || len(err.Error()) > 400 {
				t.Errorf("error %q: want %q, bounded, without the URL's token", err, tt.says)
			}
			if d, _ := pipeline.RetryIn(err); d != tt.retryIn {
				t.Errorf("RetryIn %v, want %v", d, tt.retryIn)
			}
		})
	}
	if redirected.Load() != 0 {
		t.Error("a redirect was followed")
	}
}

// A subscriber that answers 2xx with megabytes of headers (Go's client
// reads up to 10 MB of them) is read only so far: past 32 KiB of headers
// the attempt fails, to be retried. (Its body is drained at most 64 KiB:
// TestDeliverOutcomes.)
func TestDeliverBoundsResponseHeaders(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range 2000 { // 2 MB
			w.Header().Set(fmt.Sprintf("X-Filler-%d", i), strings.Repeat("h", 1000))
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	d, s := newSub(t, srv.URL, nil, 1)
	err := d.handle(context.Background(), s, job(t))
	if err == nil || pipeline.IsPermanent(err) || !strings.Contains(err.Error(), "headers exceeded") {
		t.Errorf("2 MB of response headers: %v, want a failed attempt (headers exceeded), retried", err)
	}
}

// A line's events wait for the earlier ones, and the return for a running
// enrollment.
func TestBehindOrder(t *testing.T) {
	ref := fulfillment.Ref{Site: "default", OrderNumber: "W-1", CourseID: "course-v1:a+b+c"}
	at := func(event string) fulfillment.Ref { r := ref; r.Event = event; return r }
	flows := flow.NewRegistry()
	seat.Register(flows, nil)
	behind := func(kind string, r fulfillment.Ref) ([]string, []string) { return behind(flows, kind, r) }
	if open, running := behind("webhook.crm", at(fulfillment.SignalOrderPlaced)); len(open)+len(running) != 0 {
		t.Errorf("placed waits for %v %v, want nothing", open, running)
	}
	open, running := behind("webhook.crm", at(fulfillment.SignalOrderReturned))
	want := []string{pipeline.JobID("webhook.crm", at(fulfillment.SignalOrderPlaced)),
		pipeline.JobID("webhook.crm", at(CompletedEvent("enroll", fulfillment.StateEnrolled))),
		pipeline.JobID("webhook.crm", at(CompletedEvent("enroll", fulfillment.StateFailed)))}
	if strings.Join(open, " ") != strings.Join(want, " ") || len(running) != 1 || running[0] != pipeline.TaskID("enroll", ref.Key()) {
		t.Errorf("returned waits for %v and running %v, want %v and the enrollment", open, running, want)
	}
	if open, _ := behind("webhook.crm", at(CompletedEvent("unenroll", fulfillment.StateReturned))); len(open) != 4 {
		t.Errorf("the unenrollment's end waits for %d events, want the 4 before it", len(open))
	}
}
