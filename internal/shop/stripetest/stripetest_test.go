package stripetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/openedx/coordinator/internal/shop/shoptest"
)

// jsonKind is a JSON value's type as Stripe's API documents it.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "boolean"
	case []any:
		return "array"
	}
	return "object"
}

// subset reports every field of got that the real object lacks or types
// differently (a null in the real object matches anything).
func subset(path string, got, real map[string]any) []string {
	var bad []string
	for k, v := range got {
		r, ok := real[k]
		switch {
		case !ok:
			bad = append(bad, path+k+": not in Stripe's object")
		case r != nil && jsonKind(r) != jsonKind(v):
			bad = append(bad, fmt.Sprintf("%s%s: %s, Stripe's is %s", path, k, jsonKind(v), jsonKind(r)))
		}
	}
	return bad
}

// The fake's line item has the fields and types of Stripe's own item
// (stripe/openapi fixtures3, testdata of package shop), price included.
func TestLineItemShapeIsStripes(t *testing.T) {
	raw := shoptest.Fixture(t, "stripe-object-checkout.session.line_item.openapi-fixtures3.json")
	var real map[string]any
	if err := json.Unmarshal(raw, &real); err != nil {
		t.Fatal(err)
	}
	s := New("sk_test_x")
	s.AddSession(Session{ID: "cs_1", PaymentIntent: "pi_1", Items: []Item{{ID: "li_1", PriceID: "price_1", ProductID: "prod_1", Quantity: 1}}})
	srv := Start(t, s)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/checkout/sessions/cs_1/line_items", nil)
	req.Header.Set("Authorization", "Bearer sk_test_x")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Object string           `json:"object"`
		Data   []map[string]any `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || resp.StatusCode != 200 || list.Object != "list" || len(list.Data) != 1 {
		t.Fatalf("%d %+v %v", resp.StatusCode, list, err)
	}
	item := list.Data[0]
	bad := subset("", item, real)
	bad = append(bad, subset("price.", item["price"].(map[string]any), real["price"].(map[string]any))...)
	for _, b := range bad {
		t.Error(b)
	}
}
