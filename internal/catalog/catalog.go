// Package catalog stocks a shop from the LMS catalog: one shop product per
// course run and paid mode, with the SKU (or Stripe metadata) the shop
// adapters read back, the LMS's price, created unpublished, updated only in
// the fields Coordinator owns, retired when enrollment ends, never deleted.
// Plan reads the LMS and the shop and says what Sync would do; Sync does it.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/openedx/coordinator/internal/lms"
)

// Action is what a plan or a sync does with one item.
type Action string

// The actions, in the order a report lists them.
const (
	Create    Action = "create"
	Update    Action = "update"
	Unchanged Action = "unchanged"
	Retire    Action = "retire"
	Skip      Action = "skip"
	Failed    Action = "failed"
)

// Actions lists every action in report order.
func Actions() []Action { return []Action{Create, Update, Unchanged, Retire, Skip, Failed} }

// Item is one course run and mode the LMS offers.
type Item struct {
	Run      string
	Mode     string
	SKU      string
	Name     string
	Price    int64  // whole units of Currency, as the LMS stores min_price
	Currency string // lower case
	// Ended, when set, says why the item is no longer on sale: its
	// product is retired, never created.
	Ended string
	// Skip, when set, says why the item is not for a shop at all.
	Skip string
}

// Result is what happened, or would happen, to one item.
type Result struct {
	Action  Action   `json:"action"`
	SKU     string   `json:"sku,omitempty"`
	Run     string   `json:"course_id"`
	Mode    string   `json:"mode,omitempty"`
	Price   string   `json:"price,omitempty"`   // as the shop writes it, with the currency
	Product string   `json:"product,omitempty"` // the shop's id of the product
	Fields  []string `json:"fields,omitempty"`  // an update's fields
	Reason  string   `json:"reason,omitempty"`  // why, for skip, retire, unchanged, update
	Error   string   `json:"error,omitempty"`   // a failed item's error
	Planned Action   `json:"planned,omitempty"` // a failed item's planned action
	Written bool     `json:"written,omitempty"` // sync wrote the change
	item    Item
	state   any // the shop's own: what apply needs
}

// fail marks the result failed with err, keeping what was planned.
func (r *Result) fail(err error) {
	if r.Action != Failed {
		r.Planned = r.Action
	}
	r.Action, r.Error, r.Written = Failed, err.Error(), false
}

// Report is a plan's or a sync's outcome.
type Report struct {
	Integration string         `json:"integration"`
	Type        string         `json:"type"`
	Currency    string         `json:"currency,omitempty"` // the store's
	Sync        bool           `json:"sync"`               // false: a plan, nothing written
	Counts      map[Action]int `json:"counts"`
	Results     []Result       `json:"items"`
}

// Failed is how many items failed.
func (r Report) Failed() int { return r.Counts[Failed] }

// Shop is one shop's products: plan reads them and decides each item's
// action without writing; apply makes the planned changes, marking each
// result written or failed.
type Shop interface {
	plan(ctx context.Context, items []Item) (currency string, _ []Result, _ error)
	apply(ctx context.Context, results []Result)
}

// Source is the LMS's catalog (*lms.Client).
type Source interface {
	CatalogRuns(ctx context.Context, org string, each func(lms.CatalogRun) error) error
	CourseModes(ctx context.Context, run string) (lms.RunModes, error)
}

// Options select the items.
type Options struct {
	Org         string   // only this organization's runs
	Runs        []string // only these runs; empty: every run listed
	IncludeFree bool     // sell modes whose price is 0 too
	// CourseMode is the integration's course_mode: its items' SKU is the
	// bare run key.
	CourseMode string
	// Mapped are the runs and modes the integration's products map sells
	// already: "<run>@<mode>" → the map's key (SKU or id). They get no
	// second product.
	Mapped map[string]string
	Now    time.Time
}

// Plan reads the LMS and the shop and reports what Sync would do.
func Plan(ctx context.Context, src Source, shop Shop, o Options) (Report, error) {
	return run(ctx, src, shop, o, false)
}

// Sync reads the LMS and the shop and makes the shop's products match: a
// failed item is reported and the others go on.
func Sync(ctx context.Context, src Source, shop Shop, o Options) (Report, error) {
	return run(ctx, src, shop, o, true)
}

func run(ctx context.Context, src Source, shop Shop, o Options, sync bool) (Report, error) {
	items, err := Items(ctx, src, o)
	if err != nil {
		return Report{}, err
	}
	currency, results, err := shop.plan(ctx, items)
	if err != nil {
		return Report{}, err
	}
	if sync {
		shop.apply(ctx, results)
	}
	rep := Report{Currency: currency, Sync: sync, Counts: map[Action]int{}, Results: results}
	for _, r := range results {
		rep.Counts[r.Action]++
	}
	return rep, nil
}

// SKU is the SKU of a run's mode: the run key for the integration's
// course_mode, "<run key>@<mode>" for another (the shop adapters read both).
func SKU(run, mode, courseMode string) string {
	if mode == courseMode {
		return run
	}
	return run + "@" + mode
}

// Items reads the course runs (of o.Org, or o.Runs) and their modes: one
// item per run and mode, free modes skipped unless o.IncludeFree, modes
// whose enrollment or expiry passed marked ended.
func Items(ctx context.Context, src Source, o Options) ([]Item, error) {
	want := map[string]bool{}
	for _, r := range o.Runs {
		want[r] = true
	}
	var runs []lms.CatalogRun
	err := src.CatalogRuns(ctx, o.Org, func(r lms.CatalogRun) error {
		if len(want) == 0 || want[r.ID] {
			runs = append(runs, r)
			delete(want, r.ID)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the LMS course list: %w", err)
	}
	var items []Item
	for _, r := range runs {
		modes, err := src.CourseModes(ctx, r.ID)
		if err != nil {
			var le *lms.Error
			if errors.As(err, &le) && le.Permanent() {
				items = append(items, Item{Run: r.ID, Skip: "modes not readable: " + err.Error()})
				continue
			}
			return nil, fmt.Errorf("read the modes of %s: %w", r.ID, err)
		}
		for _, m := range modes.Modes {
			items = append(items, item(r, modes, m, o))
		}
	}
	missing := make([]string, 0, len(want))
	for r := range want {
		missing = append(missing, r)
	}
	slices.Sort(missing)
	for _, r := range missing {
		items = append(items, Item{Run: r, Skip: "not in the LMS's course list (unknown, or another organization than --org)"})
	}
	return items, nil
}

func item(r lms.CatalogRun, d lms.RunModes, m lms.CourseMode, o Options) Item {
	name := r.Name
	if name == "" {
		name = d.CourseName
	}
	modeName := m.Name
	if modeName == "" {
		modeName = m.Slug
	}
	it := Item{Run: r.ID, Mode: m.Slug, SKU: SKU(r.ID, m.Slug, o.CourseMode),
		Name: fmt.Sprintf("%s (%s)", name, modeName), Price: m.MinPrice, Currency: strings.ToLower(m.Currency)}
	end := r.EnrollmentEnd
	if end == nil {
		end = d.EnrollmentEnd
	}
	switch {
	case o.Mapped[r.ID+"@"+m.Slug] != "":
		it.Skip = fmt.Sprintf("sold by %q of the integration's products map", o.Mapped[r.ID+"@"+m.Slug])
	case m.Slug == "credit":
		it.Skip = "credit mode: its enrollment names a credit provider, which a shop order cannot"
	case m.MinPrice < 0:
		it.Skip = fmt.Sprintf("negative price %d", m.MinPrice)
	case m.MinPrice == 0 && !o.IncludeFree:
		it.Skip = "free mode (min_price 0): --include-free sells it too"
	case it.Currency == "":
		it.Skip = "the mode has no currency"
	case end != nil && !end.IsZero() && end.Before(o.Now):
		it.Ended = "enrollment ended " + end.UTC().Format(time.DateOnly)
	case m.Expiration != nil && !m.Expiration.IsZero() && m.Expiration.Before(o.Now):
		it.Ended = "mode " + m.Slug + " expired " + m.Expiration.UTC().Format(time.DateOnly)
	}
	return it
}

// decide is what both shops do with an item before looking at its product:
// a skip, or a currency that is not the store's. ok false: r is final.
func decide(it Item, storeCurrency string) (r Result, ok bool) {
	r = Result{SKU: it.SKU, Run: it.Run, Mode: it.Mode, item: it}
	switch {
	case it.Skip != "":
		r.Action, r.Reason = Skip, it.Skip
		return r, false
	case it.Ended == "" && it.Currency != storeCurrency:
		r.Action = Skip
		r.Reason = fmt.Sprintf("price in %s, the store sells in %s", strings.ToUpper(it.Currency), strings.ToUpper(storeCurrency))
		return r, false
	}
	return r, true
}

// retireOrNot decides an ended item: retire a product still on sale,
// nothing else.
func retireOrNot(r *Result, exists, onSale bool) {
	switch {
	case !exists:
		r.Action, r.Reason = Skip, r.item.Ended+": not created"
	case onSale:
		r.Action, r.Reason = Retire, r.item.Ended
	default:
		r.Action, r.Reason = Unchanged, r.item.Ended+": retired"
	}
}
