package catalog_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/openedx/coordinator/internal/cache"
	"github.com/openedx/coordinator/internal/catalog"
	"github.com/openedx/coordinator/internal/catalog/wootest"
	"github.com/openedx/coordinator/internal/lms"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/shop/stripetest"
)

const (
	lmsSecret = "lms-secret"
	wooKey    = "ck_test"
	wooSecret = "cs_test_secret"
	stripeKey = "sk_test_catalog"
	demo      = "course-v1:edX+DemoX+Demo_Course"
	other     = "course-v1:edX+Other+2026"
)

var now = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

// fakeLMS is the fake LMS with runs on sale: audit free, verified 49 usd,
// professional 99 usd.
func fakeLMS(t *testing.T, runs ...string) (*lmstest.Server, *lms.Client) {
	t.Helper()
	f := lmstest.New()
	f.AddClient("coordinator-worker", lmstest.Client{Secret: lmsSecret, Staff: true})
	for _, r := range runs {
		addRun(f, r)
	}
	ts := lmstest.Start(t, f)
	return f, lms.New(lms.Options{Site: "default", BaseURL: ts.URL, TokenURL: ts.URL + "/oauth2/access_token",
		ClientID: "coordinator-worker", ClientSecret: lmsSecret, Timeout: 5 * time.Second, MaxConcurrency: 1,
		RatePerMinute: 60000, Cache: cache.NewMemory(100), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

func addRun(f *lmstest.Server, run string) {
	f.AddCourse(run, lmstest.CourseRun{Name: "Course " + run[strings.LastIndex(run, "+")+1:],
		Modes: []string{"audit", "verified", "professional"},
		Catalog: lmstest.Catalog{EnrollmentEnd: now.AddDate(1, 0, 0), Prices: map[string]lmstest.ModePrice{
			"audit":        {Name: "Audit"},
			"verified":     {Name: "Verified Certificate", MinPrice: 49, Currency: "usd"},
			"professional": {Name: "Professional Education", MinPrice: 99, Currency: "usd"},
		}}})
}

func woo(t *testing.T) (*wootest.Store, *catalog.WooCommerce) {
	t.Helper()
	st := wootest.New(wooKey, wooSecret)
	return st, catalog.NewWooCommerce(wootest.Start(t, st).URL, wooKey, wooSecret, &http.Client{Timeout: 10 * time.Second})
}

func stripeShop(t *testing.T) (*stripetest.Products, *catalog.Stripe) {
	t.Helper()
	st := stripetest.NewProducts(stripeKey)
	srv := httptest.NewServer(st)
	t.Cleanup(srv.Close)
	return st, catalog.NewStripe(srv.URL, stripeKey, &http.Client{Timeout: 10 * time.Second})
}

var opts = catalog.Options{CourseMode: "verified", Now: now}

// actions is "<action> <sku>" per result, in order.
func actions(rep catalog.Report) []string {
	var out []string
	for _, r := range rep.Results {
		out = append(out, string(r.Action)+" "+r.SKU)
	}
	return out
}

func sync(t *testing.T, src catalog.Source, shop catalog.Shop, o catalog.Options) catalog.Report {
	t.Helper()
	rep, err := catalog.Sync(t.Context(), src, shop, o)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func onlyUnchanged(t *testing.T, rep catalog.Report, want int) {
	t.Helper()
	if rep.Counts[catalog.Unchanged] != want || rep.Counts[catalog.Create]+rep.Counts[catalog.Update]+rep.Counts[catalog.Retire]+rep.Counts[catalog.Failed] != 0 {
		t.Errorf("second sync: %v, want %d unchanged and nothing else but skips\n%v", rep.Counts, want, actions(rep))
	}
}

// A plan writes nothing and says what a sync then does: one draft,
// virtual product per run and paid mode, SKU the run key for course_mode and
// <run>@<mode> otherwise, the store's decimals, Coordinator's meta; the free
// audit mode skipped; a second sync is all unchanged and writes nothing.
func TestWooCommercePlanThenSync(t *testing.T) {
	_, src := fakeLMS(t, demo, other)
	st, shop := woo(t)
	want := []string{
		"skip " + demo + "@audit", "create " + demo, "create " + demo + "@professional",
		"skip " + other + "@audit", "create " + other, "create " + other + "@professional",
	}
	plan, err := catalog.Plan(t.Context(), src, shop, opts)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, actions(plan)); diff != "" {
		t.Errorf("plan (-want +got):\n%s", diff)
	}
	if st.Len() != 0 || st.Calls("POST /products/batch") != 0 {
		t.Fatalf("the plan wrote: %d products, %d batches", st.Len(), st.Calls("POST /products/batch"))
	}
	rep := sync(t, src, shop, opts)
	if diff := cmp.Diff(want, actions(rep)); diff != "" {
		t.Errorf("sync (-want +got):\n%s", diff)
	}
	got := st.BySKU(demo + "@professional")
	if len(got) != 1 {
		t.Fatalf("products with SKU %s@professional: %+v", demo, got)
	}
	p := got[0]
	wantP := wootest.Product{ID: p.ID, Name: "Course Demo_Course (Professional Education)", Type: "simple", Status: "draft",
		SKU: demo + "@professional", RegularPrice: "99.00", Virtual: true,
		MetaData: []wootest.Meta{{ID: p.MetaData[0].ID, Key: catalog.MetaCourseID, Value: demo}, {ID: p.MetaData[1].ID, Key: catalog.MetaMode, Value: "professional"}}}
	if diff := cmp.Diff(wantP, p); diff != "" {
		t.Errorf("created product (-want +got):\n%s", diff)
	}
	batches := st.Calls("POST /products/batch")
	onlyUnchanged(t, sync(t, src, shop, opts), 4)
	if st.Calls("POST /products/batch") != batches {
		t.Errorf("the second sync wrote")
	}
}

// A price change updates the regular price only: an operator's
// description, images, categories and publishing survive; a store with 0
// decimals gets "59".
func TestWooCommercePriceChangeKeepsHandEdits(t *testing.T) {
	f, src := fakeLMS(t, demo)
	st, shop := woo(t)
	sync(t, src, shop, opts)
	id := st.BySKU(demo)[0].ID
	st.Edit(id, func(p *wootest.Product) {
		p.Status, p.Description = "publish", "<p>Written by the shop owner</p>"
		p.Images = []map[string]any{{"id": 7, "src": "https://shop.example/cover.png"}}
		p.Categories = []map[string]any{{"id": 3, "name": "Courses"}}
	})
	before, _ := st.Product(id)
	f.SetPrice(demo, "verified", lmstest.ModePrice{Name: "Verified Certificate", MinPrice: 59, Currency: "usd"})
	rep := sync(t, src, shop, opts)
	r := rep.Results[slices.IndexFunc(rep.Results, func(r catalog.Result) bool { return r.SKU == demo })]
	if r.Action != catalog.Update || !slices.Equal(r.Fields, []string{"regular_price"}) || !r.Written {
		t.Errorf("%+v, want an update of regular_price", r)
	}
	after, _ := st.Product(id)
	before.RegularPrice = "59.00"
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("product after the price change (-want +got):\n%s", diff)
	}

	st.SetCurrency("USD", 0)
	onlyUnchanged(t, sync(t, src, shop, opts), 2) // "59.00" is 59
	f.SetPrice(demo, "verified", lmstest.ModePrice{Name: "Verified Certificate", MinPrice: 60, Currency: "usd"})
	sync(t, src, shop, opts)
	if p, _ := st.Product(id); p.RegularPrice != "60" {
		t.Errorf("regular_price %q, want 60 in a store without decimals", p.RegularPrice)
	}
}

// A run whose enrollment ended is retired (draft), once; one never created
// is not created; a mode past its expiry likewise; a mode in another
// currency than the store's is skipped, naming both.
func TestWooCommerceRetireAndCurrency(t *testing.T) {
	f, src := fakeLMS(t, demo, other)
	st, shop := woo(t)
	sync(t, src, shop, opts)
	for _, p := range append(st.BySKU(demo), st.BySKU(demo+"@professional")...) {
		st.Edit(p.ID, func(p *wootest.Product) { p.Status = "publish" })
	}
	cat := lmstest.Catalog{EnrollmentEnd: now.AddDate(0, 0, -1), Prices: map[string]lmstest.ModePrice{
		"verified":     {Name: "Verified Certificate", MinPrice: 49, Currency: "usd"},
		"professional": {Name: "Professional Education", MinPrice: 99, Currency: "usd"},
	}}
	f.SetCatalog(demo, cat)
	f.SetPrice(other, "professional", lmstest.ModePrice{Name: "Professional Education", MinPrice: 99, Currency: "usd", Expires: now.Add(-time.Hour)})
	f.SetPrice(other, "verified", lmstest.ModePrice{Name: "Verified Certificate", MinPrice: 45, Currency: "eur"})
	addRun(f, "course-v1:edX+Old+2020")
	f.SetCatalog("course-v1:edX+Old+2020", cat)

	rep := sync(t, src, shop, opts)
	var got []string
	for _, r := range rep.Results {
		if r.Action != catalog.Skip || r.Mode != "audit" {
			got = append(got, fmt.Sprintf("%s %s: %s", r.Action, r.SKU, r.Reason))
		}
	}
	want := []string{
		"retire " + demo + ": enrollment ended 2026-12-05",
		"retire " + demo + "@professional: enrollment ended 2026-12-05",
		"skip course-v1:edX+Old+2020: enrollment ended 2026-12-05: not created",
		"skip course-v1:edX+Old+2020@professional: enrollment ended 2026-12-05: not created",
		"skip " + other + ": price in EUR, the store sells in USD",
		"unchanged " + other + "@professional: mode professional expired 2026-12-06: retired",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sync (-want +got):\n%s", diff)
	}
	for _, sku := range []string{demo, demo + "@professional"} {
		if p := st.BySKU(sku); p[0].Status != "draft" {
			t.Errorf("%s: status %s, want draft", sku, p[0].Status)
		}
	}
	if len(st.BySKU("course-v1:edX+Old+2020")) != 0 {
		t.Error("an ended run was created")
	}
	onlyUnchanged(t, sync(t, src, shop, opts), 3)
}

// 250 runs with one paid mode each: 250 products in three batches (100,
// 100, 50), found with look-ups of at most 50 SKUs; the second sync writes
// nothing; a price change of every run is three batches of updates.
func TestWooCommerce250Runs(t *testing.T) {
	runs := make([]string, 250)
	for i := range runs {
		runs[i] = fmt.Sprintf("course-v1:Big+C%03d+2027", i)
	}
	f, src := fakeLMS(t, runs...)
	for _, r := range runs {
		f.SetPrice(r, "professional", lmstest.ModePrice{Name: "Professional Education"}) // free: skipped
	}
	addRun(f, demo) // another organization
	st, shop := woo(t)
	o := opts
	o.Org = "big"
	start := time.Now()
	rep := sync(t, src, shop, o)
	took := time.Since(start)
	if rep.Counts[catalog.Create] != 250 || rep.Failed() != 0 || st.Len() != 250 {
		t.Fatalf("counts %v, %d products: want 250 created", rep.Counts, st.Len())
	}
	if got := st.Batches(); !slices.Equal(got, []int{100, 100, 50}) {
		t.Errorf("batches %v, want 100, 100, 50", got)
	}
	t.Logf("first sync of 250 runs: %s; LMS: %d course list pages, %d course modes; store: %d calls (%d look-ups, %d batches)",
		took, f.Count(lmstest.Courses), f.Count(lmstest.Course), shop.Calls(), st.Calls("GET /products"), st.Calls("POST /products/batch"))
	start = time.Now()
	onlyUnchanged(t, sync(t, src, shop, o), 250)
	t.Logf("second sync (all unchanged): %s, store calls so far %d", time.Since(start), shop.Calls())

	for _, r := range runs {
		f.SetPrice(r, "verified", lmstest.ModePrice{Name: "Verified Certificate", MinPrice: 50, Currency: "usd"})
	}
	rep = sync(t, src, shop, o)
	if got := st.Batches()[3:]; rep.Counts[catalog.Update] != 250 || !slices.Equal(got, []int{100, 100, 50}) {
		t.Errorf("price change of 250 runs: %v in batches %v, want 250 updates in 100, 100, 50", rep.Counts, got)
	}
}

// A 429 is waited out (its Retry-After) and the call made again; an item
// that fails (a SKU a variation holds) is reported failed while the others
// are written.
func TestWooCommerceThrottledAndFailedItem(t *testing.T) {
	_, src := fakeLMS(t, demo, other)
	st, shop := woo(t)
	st.AddVariation(other + "@professional")
	st.Throttle(2, "1")
	rep := sync(t, src, shop, opts)
	if st.Calls("GET /settings/general") != 3 {
		t.Errorf("settings read %d times, want 3 (two 429s, then the answer)", st.Calls("GET /settings/general"))
	}
	var failed []catalog.Result
	for _, r := range rep.Results {
		if r.Action == catalog.Failed {
			failed = append(failed, r)
		}
	}
	if len(failed) != 1 || failed[0].SKU != other+"@professional" || failed[0].Planned != catalog.Create ||
		!strings.Contains(failed[0].Error, "product_invalid_sku") {
		t.Errorf("failed %+v, want only %s@professional, product_invalid_sku", failed, other)
	}
	if rep.Counts[catalog.Create] != 3 || st.Len() != 3 {
		t.Errorf("counts %v with %d products, want the other 3 created", rep.Counts, st.Len())
	}
	if strings.Contains(fmt.Sprint(rep), wooSecret) {
		t.Error("the report holds the consumer secret")
	}
}

// A product an operator made by hand with the run key as SKU (as the docs
// said before the catalog) is taken over: name, price and meta; two
// products with one SKU fail that item.
func TestWooCommerceHandMadeAndDuplicates(t *testing.T) {
	_, src := fakeLMS(t, demo, other)
	st, shop := woo(t)
	id := st.Add(wootest.Product{Name: "Demo!", Type: "simple", Status: "publish", SKU: demo, RegularPrice: "49",
		Description: "mine"})
	st.Add(wootest.Product{Name: "A", Status: "publish", SKU: other})
	st.Add(wootest.Product{Name: "B", Status: "private", SKU: other})
	rep := sync(t, src, shop, opts)
	byRun := map[string]catalog.Result{}
	for _, r := range rep.Results {
		byRun[r.SKU] = r
	}
	if r := byRun[demo]; r.Action != catalog.Update || !slices.Equal(r.Fields, []string{"name", "meta_data"}) {
		t.Errorf("hand-made product: %+v, want an update of name and meta_data (49 is 49.00)", r)
	}
	p, _ := st.Product(id)
	if p.Description != "mine" || p.Status != "publish" || p.Meta(catalog.MetaMode) != "verified" {
		t.Errorf("hand-made product after sync: %+v", p)
	}
	if r := byRun[other]; r.Action != catalog.Failed || !strings.Contains(r.Error, "2 products have this SKU") {
		t.Errorf("duplicate SKU: %+v, want failed", r)
	}
	if rep.Failed() != 1 {
		t.Errorf("counts %v, want one failure", rep.Counts)
	}
}

// Stripe: a product per run and mode with a derived id, inactive, its
// metadata and a default price in minor units with the lookup_key; a second
// sync is unchanged; a new amount is a new default price, the old one
// deactivated, the lookup_key moved; hand edits survive; an ended run's
// product is deactivated; every write carries an Idempotency-Key.
func TestStripe(t *testing.T) {
	f, src := fakeLMS(t, demo, other)
	st, shop := stripeShop(t)
	st.Throttle(1, "1")
	plan, err := catalog.Plan(t.Context(), src, shop, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, writes := st.Calls(); writes != 0 || plan.Counts[catalog.Create] != 4 {
		t.Fatalf("plan: %v with %d writes, want 4 creates and none", plan.Counts, writes)
	}
	sync(t, src, shop, opts)
	id := catalog.StripeProductID(demo, "verified")
	p, ok := st.Product(id)
	if !ok || p.Active || p.Name != "Course Demo_Course (Verified Certificate)" ||
		!cmp.Equal(p.Metadata, map[string]string{"course_id": demo, "course_mode": "verified"}) {
		t.Fatalf("product %s: %+v", id, p)
	}
	prices := st.Prices(id)
	if len(prices) != 1 || prices[0].ID != p.DefaultPrice || prices[0].UnitAmount != 4900 || prices[0].Currency != "usd" ||
		prices[0].LookupKey != "coordinator:"+demo+":verified" {
		t.Fatalf("prices %+v, default %s", prices, p.DefaultPrice)
	}
	onlyUnchanged(t, sync(t, src, shop, opts), 4)

	st.Edit(id, func(p *stripetest.Product) {
		p.Active, p.Description, p.Images = true, "the owner's words", []string{"https://shop.example/c.png"}
	})
	f.SetPrice(demo, "verified", lmstest.ModePrice{Name: "Verified Certificate", MinPrice: 59, Currency: "usd"})
	rep := sync(t, src, shop, opts)
	if rep.Counts[catalog.Update] != 1 {
		t.Errorf("after a price change: %v\n%v", rep.Counts, actions(rep))
	}
	p, _ = st.Product(id)
	prices = st.Prices(id)
	if len(prices) != 2 || prices[0].Active || prices[0].LookupKey != "" || !prices[1].Active ||
		prices[1].UnitAmount != 5900 || p.DefaultPrice != prices[1].ID || prices[1].LookupKey != "coordinator:"+demo+":verified" {
		t.Errorf("prices after the change %+v, default %s: want the old one inactive, the new one default with the lookup_key", prices, p.DefaultPrice)
	}
	if !p.Active || p.Description != "the owner's words" || len(p.Images) != 1 {
		t.Errorf("hand edits lost: %+v", p)
	}
	onlyUnchanged(t, sync(t, src, shop, opts), 4)

	f.SetCatalog(other, lmstest.Catalog{EnrollmentEnd: now.AddDate(0, 0, -1)})
	f.SetPrice(other, "verified", lmstest.ModePrice{MinPrice: 49, Currency: "usd"})
	st.Edit(catalog.StripeProductID(other, "verified"), func(p *stripetest.Product) { p.Active = true })
	rep = sync(t, src, shop, opts)
	if rep.Counts[catalog.Retire] != 1 {
		t.Errorf("ended run: %v\n%v", rep.Counts, actions(rep))
	}
	if p, _ := st.Product(catalog.StripeProductID(other, "verified")); p.Active {
		t.Error("the ended run's product is still active")
	}
	// stripe-go sends a random key when none is set: each must be ours,
	// derived from what it writes.
	for _, k := range st.IdempotencyKeys() {
		if !strings.HasPrefix(k, "coordinator-catalog-") {
			t.Errorf("a write with Idempotency-Key %q, not one of Coordinator's", k)
		}
	}
}

// A sync that failed after creating a price (here: Stripe refused to make
// it the default) is finished by the next one, which finds the price by its
// lookup_key instead of making another.
func TestStripeResumesAfterAFailure(t *testing.T) {
	_, src := fakeLMS(t, demo)
	st := stripetest.NewProducts(stripeKey)
	srv := httptest.NewServer(st)
	t.Cleanup(srv.Close)
	refuse := &refuseDefaultPrice{next: http.DefaultTransport}
	shop := catalog.NewStripe(srv.URL, stripeKey, &http.Client{Transport: refuse})
	o := opts
	o.Runs = []string{demo}
	rep := sync(t, src, shop, o)
	if rep.Failed() != 2 || rep.Counts[catalog.Skip] != 1 {
		t.Fatalf("first sync: %v, want both paid modes failed\n%v", rep.Counts, rep.Results)
	}
	id := catalog.StripeProductID(demo, "verified")
	if p, ok := st.Product(id); !ok || p.DefaultPrice != "" || len(st.Prices(id)) != 1 {
		t.Fatalf("after the failure: %+v, prices %+v", p, st.Prices(id))
	}
	refuse.off = true
	rep = sync(t, src, shop, o)
	if rep.Counts[catalog.Update] != 2 || rep.Failed() != 0 {
		t.Errorf("second sync: %v", rep.Counts)
	}
	p, _ := st.Product(id)
	if prices := st.Prices(id); len(prices) != 1 || p.DefaultPrice != prices[0].ID {
		t.Errorf("prices %+v, default %s: want the first sync's price made default, no second one", prices, p.DefaultPrice)
	}
}

// refuseDefaultPrice answers Stripe's 400 to every product update setting
// default_price, until off.
type refuseDefaultPrice struct {
	next http.RoundTripper
	off  bool
}

func (r *refuseDefaultPrice) RoundTrip(req *http.Request) (*http.Response, error) {
	if !r.off && req.Method == http.MethodPost && strings.HasPrefix(req.URL.Path, "/v1/products/") {
		body, _ := io.ReadAll(req.Body)
		if strings.Contains(string(body), "default_price=") {
			return &http.Response{StatusCode: 400, Header: http.Header{"Content-Type": {"application/json"}}, Request: req,
				Body: io.NopCloser(strings.NewReader(`{"error":{"type":"invalid_request_error","message":"refused by the test"}}`))}, nil
		}
		req.Body = io.NopCloser(strings.NewReader(string(body)))
	}
	return r.next.RoundTrip(req)
}

// Stripe amounts are in minor units: none for zero-decimal currencies,
// thousandths for three-decimal ones; a mode in a currency that is not the
// account's is skipped.
func TestStripeCurrencies(t *testing.T) {
	for _, c := range []struct {
		currency string
		want     int64
	}{{"usd", 4900}, {"jpy", 49}, {"kwd", 49000}, {"isk", 4900}} {
		if got := catalog.StripeAmount(49, c.currency); got != c.want {
			t.Errorf("StripeAmount(49, %s) = %d, want %d", c.currency, got, c.want)
		}
	}
	f, src := fakeLMS(t, demo)
	f.SetPrice(demo, "verified", lmstest.ModePrice{Name: "Verified", MinPrice: 5000, Currency: "jpy"})
	st, shop := stripeShop(t)
	st.SetCurrency("jpy")
	rep := sync(t, src, shop, opts)
	if got := st.Prices(catalog.StripeProductID(demo, "verified")); len(got) != 1 || got[0].UnitAmount != 5000 {
		t.Errorf("jpy price %+v, want 5000", got)
	}
	r := rep.Results[slices.IndexFunc(rep.Results, func(r catalog.Result) bool { return r.Mode == "professional" })]
	if r.Action != catalog.Skip || r.Reason != "price in USD, the store sells in JPY" {
		t.Errorf("usd mode in a jpy account: %+v", r)
	}
}

// --run and --include-free select items; a run not listed is named; a
// mode the products map sells already gets no second product.
func TestSelection(t *testing.T) {
	_, src := fakeLMS(t, demo, other)
	o := opts
	o.Runs, o.IncludeFree = []string{other, "course-v1:edX+Gone+2001"}, true
	o.Mapped = map[string]string{other + "@verified": "OTHER-VERIFIED"}
	items, err := catalog.Items(t.Context(), src, o)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range items {
		got = append(got, it.SKU+" "+it.Skip)
	}
	want := []string{other + "@audit ", other + ` sold by "OTHER-VERIFIED" of the integration's products map`, other + "@professional ",
		" not in the LMS's course list (unknown, or another organization than --org)"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("items (-want +got):\n%s", diff)
	}
}
