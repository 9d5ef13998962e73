// Package wcorderstest is a fake WooCommerce REST API for tests of
// woocommerce.complete_order: it takes PUT /wp-json/wc/v3/orders/{id} with
// {"status":"completed"} and basic auth with one consumer key and secret, and
// counts each order's completions and every call it refused.
package wcorderstest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
)

// Store is the fake store. Its zero value is not usable: use New.
type Store struct {
	key, secret string

	mu          sync.Mutex
	completions map[string]int
	refused     int
}

// New returns a store that accepts the consumer key and secret.
func New(key, secret string) *Store {
	return &Store{key: key, secret: secret, completions: map[string]int{}}
}

// ServeHTTP answers as WooCommerce does: 401 with its error body for a wrong
// key or secret, 400 for anything but a PUT of status completed to an
// order, else the order.
func (s *Store) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutPrefix(r.URL.Path, "/wp-json/wc/v3/orders/")
	user, pass, auth := r.BasicAuth()
	body, _ := io.ReadAll(r.Body)
	var req struct {
		Status string `json:"status"`
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case !auth || user != s.key || pass != s.secret:
		s.refused++
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"code":"woocommerce_rest_cannot_view","message":"Sorry, you cannot list resources."}`)
	case r.Method != http.MethodPut || !ok || json.Unmarshal(body, &req) != nil || req.Status != "completed":
		s.refused++
		w.WriteHeader(http.StatusBadRequest)
	default:
		s.completions[id]++
		fmt.Fprintf(w, `{"id":%s,"status":"completed"}`, id)
	}
}

// Completions is how many times the order was marked completed.
func (s *Store) Completions(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.completions[id]
}

// Refused is how many calls the store refused.
func (s *Store) Refused() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}
