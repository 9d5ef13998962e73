package wcorders

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/openedx/coordinator/internal/flow"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/seat"
)

// lines is an order's lines, as the pipeline would report them.
type lines []fulfillment.Line

func (ls lines) Lines(context.Context, string, string) ([]fulfillment.Line, error) { return ls, nil }
func (lines) Accept(context.Context, string, fulfillment.Ref, any) (string, error) {
	return "", errors.New("not used")
}
func (lines) Find(context.Context, string, fulfillment.Key) (fulfillment.Task, bool, error) {
	return fulfillment.Task{}, false, errors.New("not used")
}
func (lines) KeepsEveryTask() bool { return true }
func (lines) Matching(context.Context, pipeline.Filter, func(pipeline.Row) error) (bool, error) {
	return false, errors.New("not used")
}

func line(course string, state fulfillment.State) fulfillment.Line {
	return fulfillment.Line{CourseID: course, State: state, Tasks: []fulfillment.Task{{Kind: "enroll", State: fulfillment.StateDone}}}
}

// How the task ends for each state of the order and each answer of the shop,
// and that its errors never carry the consumer secret.
func TestHandle(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		if status == http.StatusNotFound {
			w.Write([]byte(`{"code":"woocommerce_rest_shop_order_invalid_id","message":"Invalid ID."}`))
		}
	}))
	defer srv.Close()
	c := New(Options{Integrations: []Integration{{Name: "woo", BaseURL: srv.URL, ConsumerKey: "ck", ConsumerSecret: "cs_s3cr3t", OrderPrefix: "woo-"}}})
	flows := flow.NewRegistry()
	seat.Register(flows, nil)
	c.Register(flows)
	both := lines{line("a", fulfillment.StateEnrolled), line("b", fulfillment.StateEnrolled)}
	tests := []struct {
		name      string
		order     string
		lines     lines
		status    int
		ok, wait  bool
		permanent bool
		says      string
	}{
		{"completed", "woo-7", both, 200, true, false, false, ""},
		{"a line still running", "woo-7", lines{line("a", fulfillment.StateEnrolled), line("b", fulfillment.StateRunning)}, 200, false, true, false, "waiting"},
		{"a line failed", "woo-7", lines{line("a", fulfillment.StateEnrolled), line("b", fulfillment.StateFailed)}, 200, false, false, true, "b is failed"},
		{"not a WooCommerce order number", "shop-7", both, 200, false, false, true, "not \"woo-\""},
		{"no such order", "woo-7", both, 404, false, false, true, "404: Invalid ID."},
		{"bad credentials", "woo-7", both, 401, false, false, true, "401"},
		{"shop down", "woo-7", both, 503, false, false, false, "503"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status = tt.status
			flows.Bind(tt.lines)
			err := c.handle(context.Background(), pipeline.Job{Ref: fulfillment.Ref{OrderNumber: tt.order, Integration: "woo"}})
			if (err == nil) != tt.ok || isWait(err) != tt.wait || pipeline.IsPermanent(err) != tt.permanent {
				t.Fatalf("error %v: want ok %v, wait %v, permanent %v", err, tt.ok, tt.wait, tt.permanent)
			}
			if err != nil && (!strings.Contains(err.Error(), tt.says) || strings.Contains(err.Error(), "s3cr3t")) {
				t.Errorf("error %q: want %q, and never the secret", err, tt.says)
			}
		})
	}
}

// isWait reports a routine wait: held, with its own short delay.
func isWait(err error) bool {
	_, ok := pipeline.RetryIn(err)
	return pipeline.IsHold(err) && ok
}
