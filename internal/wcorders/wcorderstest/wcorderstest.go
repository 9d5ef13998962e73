// Package wcorderstest is a fake WooCommerce REST API for tests of the
// calls Coordinator makes to a store, with basic auth of one consumer key and
// secret: PUT /wp-json/wc/v3/orders/{id} with {"status":"completed"}
// (woocommerce.complete_order), whose completions it counts, and GET
// /wp-json/wc/v3/orders/{id}/refunds (a partial refund's line items), which
// lists the refunds AddRefund made as WooCommerce does. It counts every call
// it refused.
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
	refunds     map[string][]Refund // by order id; an order with none is unknown
	refused     int
}

// New returns a store that accepts the consumer key and secret.
func New(key, secret string) *Store {
	return &Store{key: key, secret: secret, completions: map[string]int{}, refunds: map[string][]Refund{}}
}

// Refund is a refund of an order: its id, amount and the line items it
// refunds.
type Refund struct {
	ID     int
	Amount string // "9.00"
	Items  []RefundItem
}

// RefundItem is the part of one of the order's line items a refund takes
// back.
type RefundItem struct {
	ID        int // the refund line's own item id
	OrderItem int // the order's line item it refunds (meta _refunded_item_id)
	ProductID int
	SKU       string
	Quantity  int // units refunded, > 0 (served negative, as WooCommerce does)
}

// AddOrder makes an order known, with no refunds yet.
func (s *Store) AddOrder(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.refunds[id]; !ok {
		s.refunds[id] = []Refund{}
	}
}

// AddRefund adds a refund to an order, making it known.
func (s *Store) AddRefund(orderID string, r Refund) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refunds[orderID] = append(s.refunds[orderID], r)
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
	refundsOf, isRefunds := strings.CutSuffix(id, "/refunds")
	switch {
	case !auth || user != s.key || pass != s.secret:
		s.refused++
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"code":"woocommerce_rest_cannot_view","message":"Sorry, you cannot list resources.","data":{"status":401}}`)
	case ok && isRefunds && r.Method == http.MethodGet:
		s.listRefunds(w, refundsOf)
	case r.Method != http.MethodPut || !ok || json.Unmarshal(body, &req) != nil || req.Status != "completed":
		s.refused++
		w.WriteHeader(http.StatusBadRequest)
	default:
		s.completions[id]++
		fmt.Fprintf(w, `{"id":%s,"status":"completed"}`, id)
	}
}

// listRefunds answers GET /wp-json/wc/v3/orders/{id}/refunds: the order's
// refunds, newest first (WooCommerce's default order), each line item with
// a negative quantity and its _refunded_item_id meta; 404 for an order the
// store does not have.
func (s *Store) listRefunds(w http.ResponseWriter, orderID string) {
	refunds, known := s.refunds[orderID]
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	if !known {
		s.refused++
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"code":"woocommerce_rest_invalid_order_id","message":"Invalid order ID.","data":{"status":404}}`)
		return
	}
	out := make([]map[string]any, 0, len(refunds))
	for i := len(refunds) - 1; i >= 0; i-- {
		r := refunds[i]
		items := make([]map[string]any, 0, len(r.Items))
		for _, it := range r.Items {
			items = append(items, map[string]any{
				"id": it.ID, "name": it.SKU, "product_id": it.ProductID, "variation_id": 0, "quantity": -it.Quantity,
				"tax_class": "", "subtotal": "-9.00", "subtotal_tax": "0.00", "total": "-9.00", "total_tax": "0.00", "taxes": []any{},
				"meta_data": []any{map[string]any{"id": 2000 + it.ID, "key": "_refunded_item_id", "value": fmt.Sprint(it.OrderItem)}},
				"sku":       it.SKU, "price": -9,
			})
		}
		out = append(out, map[string]any{
			"id": r.ID, "date_created": "2017-03-21T16:55:37", "date_created_gmt": "2017-03-21T19:55:37",
			"amount": r.Amount, "reason": "", "refunded_by": 1, "refunded_payment": false, "meta_data": []any{}, "line_items": items,
		})
	}
	_ = json.NewEncoder(w).Encode(out)
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
