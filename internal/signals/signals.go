// Package signals provides named, in-process events with typed payloads, in
// the manner of Django signals: receivers are registered in code under stable
// dotted names, configuration decides which of them a signal reaches and in
// what order, and sending is always robust — every receiver runs, and each
// one's result, error or panic is returned to the sender.
package signals

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"strings"
)

// Receiver handles one signal. It must be quick: slow work belongs in a task.
type Receiver[T any] func(ctx context.Context, payload T) (string, error)

// Result is one receiver's answer to a Send.
type Result struct {
	Receiver string
	Response string
	Err      error
}

// PanicError is the error a receiver's panic is turned into.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("receiver panicked: %v", e.Value) }

// Signal is a named event whose payload has type T.
type Signal[T any] struct {
	name      string
	defaults  []string
	available map[string]Receiver[T]
	connected []string
}

// New returns a signal with no receivers. defaults are the receivers it
// reaches when the configuration does not name it (none is allowed).
func New[T any](name string, defaults ...string) *Signal[T] {
	return &Signal[T]{name: name, defaults: defaults, available: map[string]Receiver[T]{}}
}

// Defaults lists the receivers the signal reaches when the configuration
// does not name it.
func (s *Signal[T]) Defaults() []string { return append([]string(nil), s.defaults...) }

// Name is the signal's configuration name.
func (s *Signal[T]) Name() string { return s.name }

// Register makes a receiver available under a dotted name. It is not yet
// connected: Connect decides that. Registering a name twice panics, since it
// is a programming error.
func (s *Signal[T]) Register(name string, r Receiver[T]) {
	if _, dup := s.available[name]; dup {
		panic(fmt.Sprintf("signals: receiver %q registered twice on %q", name, s.name))
	}
	s.available[name] = r
}

// Receivers lists the names that may be connected, sorted.
func (s *Signal[T]) Receivers() []string {
	names := make([]string, 0, len(s.available))
	for n := range s.available {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Connected lists the connected receivers in the order they run.
func (s *Signal[T]) Connected() []string { return append([]string(nil), s.connected...) }

// Connect sets which receivers the signal reaches, in order. It refuses
// unknown names, duplicates, and an empty list unless the signal's default is
// none too. It must be called before the signal is sent; it is not safe to
// call concurrently with Send.
func (s *Signal[T]) Connect(names []string) error {
	if len(names) == 0 && len(s.defaults) > 0 {
		return errors.New("no receivers listed")
	}
	seen := map[string]bool{}
	for _, n := range names {
		if _, ok := s.available[n]; !ok {
			return fmt.Errorf("unknown receiver %q (known: %s)", n, strings.Join(s.Receivers(), ", "))
		}
		if seen[n] {
			return fmt.Errorf("receiver %q listed twice", n)
		}
		seen[n] = true
	}
	s.connected = append([]string(nil), names...)
	return nil
}

// Send runs every connected receiver in order and returns one Result each. A
// receiver's error or panic does not stop the others.
func (s *Signal[T]) Send(ctx context.Context, payload T) []Result {
	results := make([]Result, len(s.connected))
	for i, name := range s.connected {
		results[i] = s.call(ctx, name, payload)
	}
	return results
}

func (s *Signal[T]) call(ctx context.Context, name string, payload T) (res Result) {
	res.Receiver = name
	defer func() {
		if v := recover(); v != nil {
			res.Response, res.Err = "", &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	res.Response, res.Err = s.available[name](ctx, payload)
	return res
}

// Connector is what Wire needs of a signal of any payload type.
type Connector interface {
	Name() string
	Connect(names []string) error
	Connected() []string
	Defaults() []string
}

// Wire connects each signal to the receivers the configuration map names for
// it; a signal the map does not name gets its defaults, so configurations
// written before a signal existed keep loading. The map may name no other
// signal, and a signal it names needs at least one receiver; errors name the
// offending key as "signals.<name>".
func Wire(mapping map[string][]string, sigs ...Connector) error {
	byName := map[string]Connector{}
	var known []string
	for _, s := range sigs {
		byName[s.Name()] = s
		known = append(known, s.Name())
	}
	sort.Strings(known)
	var names []string
	for n := range mapping {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s, ok := byName[n]
		if !ok {
			return fmt.Errorf("signals.%s: unknown signal (known: %s)", n, strings.Join(known, ", "))
		}
		if err := s.Connect(mapping[n]); err != nil {
			return fmt.Errorf("signals.%s: %w", n, err)
		}
	}
	for _, n := range known {
		if _, ok := mapping[n]; !ok {
			if err := byName[n].Connect(byName[n].Defaults()); err != nil {
				return fmt.Errorf("signals.%s: defaults: %w", n, err)
			}
		}
	}
	return nil
}

// Registry holds a process's signals by name: the flows declare theirs, and
// whoever sends or wires a signal finds it here, so no caller lists them.
type Registry struct {
	byName map[string]Connector
	order  []string
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{byName: map[string]Connector{}} }

// Declare adds a signal with payload type T and its default receivers to r.
// Declaring a name twice is a programming error and panics.
func Declare[T any](r *Registry, name string, defaults ...string) *Signal[T] {
	if _, dup := r.byName[name]; dup {
		panic(fmt.Sprintf("signals: %q declared twice", name))
	}
	s := New[T](name, defaults...)
	r.byName[name] = s
	r.order = append(r.order, name)
	return s
}

// Lookup returns r's signal called name, which must carry payloads of type
// T; ok is false when there is none (or its payload type differs).
func Lookup[T any](r *Registry, name string) (s *Signal[T], ok bool) {
	s, ok = r.byName[name].(*Signal[T])
	return s, ok
}

// All lists r's signals in the order they were declared.
func (r *Registry) All() []Connector {
	out := make([]Connector, len(r.order))
	for i, n := range r.order {
		out[i] = r.byName[n]
	}
	return out
}

// Wire connects r's signals as Wire does.
func (r *Registry) Wire(mapping map[string][]string) error { return Wire(mapping, r.All()...) }
