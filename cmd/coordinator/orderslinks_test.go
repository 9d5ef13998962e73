package main

import (
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/openedx/coordinator/internal/seat"
)

// The links of /admin/orders carry their query strings as written: a state's
// count link opens that state's lines and "Older lines" the next page of the
// same filter. They were escaped twice ("?state%3dfailed"), which the server
// read as no filter at all: the unfiltered first page.
func TestOrdersPageLinks(t *testing.T) {
	t.Parallel()
	in, _ := startProblems(t, false, "")
	auth := supportToken(t)
	for _, o := range []struct {
		order string
		user  int64
	}{{"LINK-1", 3}, {"LINK-2", 4}, {"LINK-3", 998}} { // 998 has no account: fails for good
		status, out := in.fulfill(t, orderBody(o.order, o.user, ""), "")
		if status != http.StatusOK {
			t.Fatalf("fulfill %s: %d", o.order, status)
		}
		in.waitFinal(t, out[seat.ReceiverEnroll]["response"].(string))
	}
	page := func(path string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, in.base+path, nil)
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d\n%s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	// link returns the href of the link whose text starts with text.
	link := func(body, text string) string {
		t.Helper()
		m := regexp.MustCompile(`<a href="([^"]*)"[^>]*>` + regexp.QuoteMeta(text)).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no link %q in:\n%s", text, body)
		}
		return html.UnescapeString(m[1])
	}
	orders := func(body string) []string {
		var got []string
		for _, m := range regexp.MustCompile(`<a href="/admin/orders/default/[^"]*">([^<]*)</a>`).FindAllStringSubmatch(body, -1) {
			got = append(got, m[1])
		}
		return got
	}

	failed := link(page("/admin/orders"), "failed: ")
	if failed != "/admin/orders?state=failed" {
		t.Errorf("the failed lines' link is %q, want /admin/orders?state=failed", failed)
	}
	if got := orders(page(failed)); strings.Join(got, " ") != "LINK-3" {
		t.Errorf("following the failed lines' link lists %v, want only LINK-3", got)
	}

	first := page("/admin/orders?state=enrolled&limit=1")
	older := link(first, "Older lines")
	if u, err := url.Parse(older); err != nil || u.Query().Get("state") != "enrolled" || u.Query().Get("cursor") == "" {
		t.Errorf("the older lines' link %q does not carry the filter and the cursor", older)
	}
	got := append(orders(first), orders(page(older))...)
	if strings.Join(got, " ") != "LINK-2 LINK-1" {
		t.Errorf("the enrolled lines over two pages of one: %v, want LINK-2 then LINK-1", got)
	}
}
