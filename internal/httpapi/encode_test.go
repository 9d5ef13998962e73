package httpapi

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// The hand-written response is what encoding/json writes for the map of
// results it replaced.
func FuzzReceiverResultsJSON(f *testing.F) {
	f.Add("lms.fulfill_order_placed_send_enroll_in_course", "5f1c0d2e9a7b4c3d", false, "hooks.b", "The fulfillment queue is unavailable; retry later.", true)
	f.Add("a", "<script>&amp;\u2028\u2029", false, "b\"\\", "\x00\x1f\x7f\xff", true)
	f.Add("same", "x", false, "same", "y", true)
	f.Add("é", "ünï", true, "", "", false)
	f.Fuzz(func(t *testing.T, name1, resp1 string, err1 bool, name2, resp2 string, err2 bool) {
		if name1 == name2 {
			name2 += "2" // receiver names are unique within a signal
		}
		rs := receiverResults{{name1, receiverResult{resp1, err1}}, {name2, receiverResult{resp2, err2}}}
		slices.SortFunc(rs, func(a, b namedResult) int { return strings.Compare(a.name, b.name) })
		want, err := json.Marshal(map[string]receiverResult{name1: {resp1, err1}, name2: {resp2, err2}})
		if err != nil {
			t.Fatal(err)
		}
		if got := rs.appendJSON(nil); string(got) != string(want) {
			t.Fatalf("appendJSON = %s, encoding/json writes %s", got, want)
		}
		if got, _ := json.Marshal(struct{ R receiverResults }{rs}); string(got) != `{"R":`+string(want)+`}` {
			t.Fatalf("as a field: %s", got)
		}
	})
}
