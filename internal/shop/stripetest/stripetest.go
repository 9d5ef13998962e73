// Package stripetest is a fake of the part of Stripe's API that Coordinator
// reads: a Checkout Session's line items (with price.product expanded) and
// the sessions of a payment intent, answering with Stripe's shapes, status
// codes and error bodies, for tests.
package stripetest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
)

// Item is one Checkout line item as the fake serves it.
type Item struct {
	ID              string
	Description     string
	PriceID         string
	ProductID       string
	ProductMetadata map[string]string
	Quantity        int64
}

// Session is a Checkout Session with its line items.
type Session struct {
	ID            string
	PaymentIntent string
	Items         []Item
}

// Server is the fake Stripe API. Its methods are safe for concurrent use.
type Server struct {
	key      string
	mu       sync.Mutex
	sessions map[string]Session
	failures int // the next calls answered 500
	calls    int
}

// New returns a fake that accepts the API key key.
func New(key string) *Server { return &Server{key: key, sessions: map[string]Session{}} }

// Start serves the fake on a loopback port until the test ends.
func Start(t interface{ Cleanup(func()) }, s *Server) *httptest.Server {
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv
}

// AddSession makes a session known.
func (s *Server) AddSession(cs Session) { s.locked(func() { s.sessions[cs.ID] = cs }) }

// Fail answers the next n calls with 500, as Stripe does when it has trouble.
func (s *Server) Fail(n int) { s.locked(func() { s.failures = n }) }

// Calls is how many requests the fake received.
func (s *Server) Calls() int {
	var n int
	s.locked(func() { n = s.calls })
	return n
}

func (s *Server) locked(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if r.Method != http.MethodGet {
		stripeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "", "Unrecognized request URL method.")
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+s.key {
		stripeError(w, http.StatusUnauthorized, "invalid_request_error", "", "Invalid API Key provided.")
		return
	}
	if s.failures > 0 {
		s.failures--
		stripeError(w, http.StatusInternalServerError, "api_error", "", "An unknown error occurred.")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/checkout/sessions")
	switch {
	case ok && rest == "":
		s.listSessions(w, r)
	case ok && strings.HasSuffix(rest, "/line_items") && strings.Count(rest, "/") == 2:
		s.lineItems(w, r, strings.TrimSuffix(strings.TrimPrefix(rest, "/"), "/line_items"))
	default:
		stripeError(w, http.StatusNotFound, "invalid_request_error", "", "Unrecognized request URL.")
	}
}

// listSessions answers GET /v1/checkout/sessions?payment_intent=: the
// sessions of that payment intent (a refund's or a dispute's), as Checkout
// Session objects of a paid one-time payment, without their line items
// (Stripe never includes them in a list).
func (s *Server) listSessions(w http.ResponseWriter, r *http.Request) {
	pi := r.URL.Query().Get("payment_intent")
	data := []any{}
	for _, cs := range s.sessions {
		if pi != "" && cs.PaymentIntent == pi {
			data = append(data, map[string]any{"id": cs.ID, "object": "checkout.session", "mode": "payment",
				"payment_intent": cs.PaymentIntent, "payment_status": "paid", "status": "complete",
				"livemode": false, "metadata": map[string]string{}, "currency": "usd", "amount_total": 1000 * len(cs.Items)})
		}
	}
	list(w, "/v1/checkout/sessions", data)
}

// lineItems answers GET /v1/checkout/sessions/{id}/line_items, expanding
// data.price.product when asked, as Stripe does.
func (s *Server) lineItems(w http.ResponseWriter, r *http.Request, id string) {
	cs, ok := s.sessions[id]
	if !ok {
		stripeError(w, http.StatusNotFound, "invalid_request_error", "resource_missing", "No such checkout.session: '"+id+"'")
		return
	}
	// stripe-go sends expand[0]=..., curl users expand[]=...: both count.
	expand := false
	for k, vs := range r.URL.Query() {
		if strings.HasPrefix(k, "expand[") {
			expand = expand || slices.Contains(vs, "data.price.product")
		}
	}
	data := []any{}
	for _, it := range cs.Items {
		var product any = it.ProductID
		if expand {
			meta := it.ProductMetadata
			if meta == nil {
				meta = map[string]string{}
			}
			product = map[string]any{"id": it.ProductID, "object": "product", "name": it.Description, "metadata": meta}
		}
		data = append(data, map[string]any{
			"id": it.ID, "object": "item", "description": it.Description, "quantity": it.Quantity,
			"amount_total": 1000, "currency": "usd",
			"price": map[string]any{"id": it.PriceID, "object": "price", "product": product, "metadata": map[string]string{},
				"type": "one_time", "unit_amount": 1000, "currency": "usd"},
		})
	}
	list(w, "/v1/checkout/sessions/"+id+"/line_items", data)
}

func list(w http.ResponseWriter, url string, data []any) {
	write(w, http.StatusOK, map[string]any{"object": "list", "data": data, "has_more": false, "url": url})
}

func stripeError(w http.ResponseWriter, status int, typ, code, msg string) {
	e := map[string]any{"type": typ, "message": msg}
	if code != "" {
		e["code"] = code
	}
	write(w, status, map[string]any{"error": e})
}

func write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_fake")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
