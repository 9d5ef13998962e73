// Package flow is the registry of Coordinator's flows. A flow — seats
// (enroll, unenroll), entitlements, and whatever comes next — is a package
// with one Register function that declares here its kind of line item, the
// signals its lines travel on with their default receivers, its receivers and
// its task kinds; the intake, the worker, the signal map and `config check`,
// the subscribers and the status model iterate over what is registered and
// never name a flow.
package flow

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/signals"
)

// Lines is the pipeline as flows use it: their receivers accept a line's
// task, their handlers read a line's other tasks (pipeline.Service).
type Lines interface {
	Accept(ctx context.Context, kind string, ref fulfillment.Ref, payload any) (string, error)
	Find(ctx context.Context, kind string, key fulfillment.Key) (t fulfillment.Task, found bool, err error)
	// KeepsEveryTask reports whether Find sees every task for good (the
	// ledger tier).
	KeepsEveryTask() bool
	// Lines reads an order's lines; fulfillment.ErrNotFound when none.
	Lines(ctx context.Context, site, orderNumber string) ([]fulfillment.Line, error)
	// Matching calls fn for the lines of any order matching f (at most
	// pipeline.MaxBulk; capped says there were more).
	Matching(ctx context.Context, f pipeline.Filter, fn func(pipeline.Row) error) (capped bool, err error)
}

// Item is one kind of order line item: the request field that names it
// (fulfillment.ItemCourseRun, fulfillment.ItemCourse), the signals a line of
// it is sent on when it is placed and when it is returned, and the task
// kinds that fulfill and return it (whose ends are the line's events after
// each signal, in that order).
type Item struct {
	Field        string
	Placed       string
	Returned     string
	PlacedKind   string
	ReturnedKind string
}

// Registry holds what the flows registered. Registration happens while the
// process is built, before anything is sent or run; afterwards the registry
// is only read, and is safe for concurrent use.
type Registry struct {
	signals *signals.Registry
	items   map[string]Item
	kinds   []pipeline.Kind
	lines   *boundLines
	done    *signals.Signal[fulfillment.Completed]
}

// NewRegistry returns a registry holding the signal every flow shares:
// fulfillment_completed, sent when a line reaches a final state (no
// receiver by default).
func NewRegistry() *Registry {
	r := &Registry{signals: signals.NewRegistry(), items: map[string]Item{}, lines: &boundLines{}}
	r.done = signals.Declare[fulfillment.Completed](r.signals, fulfillment.SignalLineCompleted)
	return r
}

// Signals is the registry of every signal, by name.
func (r *Registry) Signals() *signals.Registry { return r.signals }

// Completed is the fulfillment_completed signal.
func (r *Registry) Completed() *signals.Signal[fulfillment.Completed] { return r.done }

// DeclareLine declares a kind of line item with the signals its lines
// travel on, and their default receivers: placed carries fulfillment.Order,
// returned fulfillment.Return. An item field or a signal name registered
// twice is a programming error and panics.
func (r *Registry) DeclareLine(it Item, placedDefaults, returnedDefaults []string) (
	*signals.Signal[fulfillment.Order], *signals.Signal[fulfillment.Return]) {
	if _, dup := r.items[it.Field]; dup || it.Field == "" {
		panic(fmt.Sprintf("flow: item %q registered twice or empty", it.Field))
	}
	r.items[it.Field] = it
	return signals.Declare[fulfillment.Order](r.signals, it.Placed, placedDefaults...),
		signals.Declare[fulfillment.Return](r.signals, it.Returned, returnedDefaults...)
}

// Item returns the line item a request field names.
func (r *Registry) Item(field string) (Item, bool) {
	it, ok := r.items[field]
	return it, ok
}

// Items lists the registered item fields, sorted.
func (r *Registry) Items() []string {
	out := make([]string, 0, len(r.items))
	for f := range r.items {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// AddKinds registers task kinds.
func (r *Registry) AddKinds(ks ...pipeline.Kind) { r.kinds = append(r.kinds, ks...) }

// Kind returns the registered task kind called name.
func (r *Registry) Kind(name string) (pipeline.Kind, bool) {
	for _, k := range r.kinds {
		if k.Name == name {
			return k, true
		}
	}
	return pipeline.Kind{}, false
}

// Fulfilled reports whether a line in state st holds what its order bought:
// the done state of a flow that fulfills an item (enrolled, entitled).
func (r *Registry) Fulfilled(st fulfillment.State) bool {
	for _, it := range r.items {
		if k, ok := r.Kind(it.PlacedKind); ok && k.Done == st {
			return true
		}
	}
	return false
}

// Kinds returns every registered task kind (pipeline.NewKinds checks them).
func (r *Registry) Kinds() *pipeline.Kinds { return pipeline.NewKinds(r.kinds...) }

// Lines is the pipeline for the flows' receivers and handlers. It is built
// after the kinds it runs, so it is bound later (Bind); until then — in a
// process that only checks its configuration — using it is an error.
func (r *Registry) Lines() Lines { return r.lines }

// Bind gives the flows the pipeline, once it is built.
func (r *Registry) Bind(l Lines) { r.lines.l = l }

// errUnbound is a receiver used before the pipeline was bound.
var errUnbound = errors.New("flow: the pipeline is not bound")

type boundLines struct{ l Lines }

func (b *boundLines) Accept(ctx context.Context, kind string, ref fulfillment.Ref, payload any) (string, error) {
	if b.l == nil {
		return "", errUnbound
	}
	return b.l.Accept(ctx, kind, ref, payload)
}

func (b *boundLines) Find(ctx context.Context, kind string, key fulfillment.Key) (fulfillment.Task, bool, error) {
	if b.l == nil {
		return fulfillment.Task{}, false, errUnbound
	}
	return b.l.Find(ctx, kind, key)
}

func (b *boundLines) Lines(ctx context.Context, site, orderNumber string) ([]fulfillment.Line, error) {
	if b.l == nil {
		return nil, errUnbound
	}
	return b.l.Lines(ctx, site, orderNumber)
}

func (b *boundLines) Matching(ctx context.Context, f pipeline.Filter, fn func(pipeline.Row) error) (bool, error) {
	if b.l == nil {
		return false, errUnbound
	}
	return b.l.Matching(ctx, f, fn)
}

func (b *boundLines) KeepsEveryTask() bool { return b.l != nil && b.l.KeepsEveryTask() }
