// Package webhooks delivers signals to subscribers: HTTP endpoints, written
// in any language, that react to a line's events (docs/subscribers.md). Each subscriber
// is a receiver, webhook.<name>, that only queues a delivery; each delivery
// is a task of the subscriber's own kind, signed per the Standard Webhooks
// specification and retried like any task, in the order of the line's
// events.
package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/flow"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/signals"
)

// StateDelivered is what a delivery reports once the subscriber took it.
const StateDelivered fulfillment.State = "delivered"

// receiverPrefix starts a subscriber's receiver and delivery kind names.
const receiverPrefix = "webhook."

// Warnings are what an operator should know of the subscribers the
// configuration lists: one connected to no signal receives nothing.
func Warnings(cfg config.Config) []string {
	var out []string
	for i, w := range cfg.Webhooks {
		if !cfg.Connected(Receiver(w.Name)) {
			out = append(out, fmt.Sprintf("webhooks[%d] (%s) is connected to no signal: it receives nothing (list it under signals:)",
				i, Receiver(w.Name)))
		}
	}
	return out
}

// Receiver, Kind and TaskType name a subscriber's receiver (webhook.crm), the
// kind of its deliveries (the same name) and their task type (webhook:crm).
func Receiver(name string) string { return receiverPrefix + name }

// Kind is the task kind of a subscriber's deliveries.
func Kind(name string) string { return receiverPrefix + name }

// IsKind reports whether kind is a subscriber's delivery kind (Kind).
func IsKind(kind string) bool { return strings.HasPrefix(kind, receiverPrefix) }

// TaskType is the queue's task type of a subscriber's deliveries.
func TaskType(name string) string { return "webhook:" + name }

// Subscriber is one configured endpoint (config.Webhook).
type Subscriber struct {
	Name    string
	URL     string
	Secrets []string // whsec_<base64>; every one signs each delivery
	Timeout time.Duration
	Headers map[string]string
	// MaxConcurrency bounds deliveries in flight to it per process.
	MaxConcurrency int
}

// Options configure Deliveries.
type Options struct {
	Subscribers []Subscriber
	// Transport carries the deliveries; nil: a transport of its own,
	// which reads at most 32 KiB of a subscriber's response headers.
	Transport http.RoundTripper
	// Now is the clock of webhook-timestamp; nil: time.Now.
	Now func() time.Time
}

// Deliveries are the subscribers' receivers and kinds.
type Deliveries struct {
	subs []*subscriber
	now  func() time.Time
}

type subscriber struct {
	Subscriber
	kind   string
	keys   [][]byte
	client *http.Client
}

// New prepares the subscribers' clients and keys.
func New(o Options) (*Deliveries, error) {
	d := &Deliveries{now: o.Now}
	if d.now == nil {
		d.now = time.Now
	}
	rt := o.Transport
	if rt == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 16
		// A subscriber's answer is a status; Go would read up to 10 MB of
		// its headers.
		t.MaxResponseHeaderBytes = maxResponseHeader
		rt = t
	}
	for _, s := range o.Subscribers {
		sub := &subscriber{Subscriber: s, kind: Kind(s.Name)}
		for i, secret := range s.Secrets {
			key, err := config.WebhookSecret(secret)
			if err != nil {
				return nil, fmt.Errorf("webhook %s: secret %d: %w", s.Name, i, err)
			}
			sub.keys = append(sub.keys, key)
		}
		if len(sub.keys) == 0 {
			return nil, fmt.Errorf("webhook %s: no secret", s.Name)
		}
		sub.client = &http.Client{
			Transport: rt,
			Timeout:   s.Timeout,
			// A redirect is answered as a failure and retried: following
			// it would send a signed body where the operator never said.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		d.subs = append(d.subs, sub)
	}
	return d, nil
}

// Register declares each subscriber: a kind for its deliveries (asides of
// the line they are about, one task per event, each waiting for the line's
// earlier events to that subscriber, at most MaxConcurrency of them at once)
// and its receiver webhook.<name> on every line signal of every flow and on
// fulfillment_completed.
func (d *Deliveries) Register(r *flow.Registry) {
	lines := r.Lines()
	for _, s := range d.subs {
		r.AddKinds(pipeline.Kind{
			Name: s.kind, TaskType: TaskType(s.Name), Done: StateDelivered, Rank: 100, Aside: true,
			Slots:  max(s.MaxConcurrency, 1),
			Behind: func(j pipeline.Job) ([]string, []string) { return behind(r, s.kind, j.Ref) },
			Handle: pipeline.NoResult(func(ctx context.Context, j pipeline.Job) error { return d.handle(ctx, s, j) }),
		})
		for _, field := range r.Items() {
			it, _ := r.Item(field)
			if placed, ok := signals.Lookup[fulfillment.Order](r.Signals(), it.Placed); ok {
				placed.Register(Receiver(s.Name), func(ctx context.Context, o fulfillment.Order) (string, error) {
					return accept(ctx, lines, s.kind, placed.Name(), placed.Name(), o.Ref(), o.AcceptedAt, o)
				})
			}
			if returned, ok := signals.Lookup[fulfillment.Return](r.Signals(), it.Returned); ok {
				returned.Register(Receiver(s.Name), func(ctx context.Context, ret fulfillment.Return) (string, error) {
					return accept(ctx, lines, s.kind, returned.Name(), returned.Name(), ret.Ref(), ret.AcceptedAt, ret)
				})
			}
		}
		completed := r.Completed()
		completed.Register(Receiver(s.Name), func(ctx context.Context, c fulfillment.Completed) (string, error) {
			return accept(ctx, lines, s.kind, completed.Name(), CompletedEvent(c.Kind, c.State), c.Ref(), c.FinishedAt, c)
		})
	}
}

// Envelope is a delivery's body (docs/subscribers.md).
type Envelope struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      any       `json:"data"`
}

// delivery is a delivery task's payload: the line, the message id and the
// body, fixed when the event is accepted so that every attempt sends the
// same bytes.
type delivery struct {
	fulfillment.Ref
	MessageID string          `json:"message_id"`
	Body      json.RawMessage `json:"body"`
}

// accept queues one subscriber's delivery of one event of a line.
func accept(ctx context.Context, a flow.Lines, kind, signal, event string, ref fulfillment.Ref, at time.Time, data any) (string, error) {
	if at.IsZero() {
		at = time.Now()
	}
	body, err := json.Marshal(Envelope{Type: signal, Timestamp: at.UTC(), Data: data})
	if err != nil {
		return "", fmt.Errorf("encode %s event: %w", signal, err)
	}
	ref.Event = event
	return a.Accept(ctx, kind, ref, delivery{Ref: ref, MessageID: MessageID(ref.Site, ref.OrderNumber, ref.Item(), event), Body: body})
}

// handle makes one attempt of a delivery.
func (d *Deliveries) handle(ctx context.Context, s *subscriber, j pipeline.Job) error {
	var m delivery
	if err := json.Unmarshal(j.Payload, &m); err != nil || m.MessageID == "" || len(m.Body) == 0 {
		return pipeline.Permanent(fmt.Errorf("decode delivery %s: not a delivery", j.ID))
	}
	return s.deliver(ctx, m.MessageID, m.Body, d.now())
}

// EventPing is the type of the test delivery Ping sends.
const EventPing = "ping"

// ErrUnknownSubscriber is Ping's answer for a name not configured.
var ErrUnknownSubscriber = errors.New("no such subscriber in webhooks")

// Ping sends one signed test delivery to a subscriber, now, outside the
// queue: {"type": "ping", "timestamp": ..., "data": {"subscriber": name}},
// with a fresh webhook-id. It returns the delivery's outcome as an attempt
// would have it (nil: the subscriber answered 2xx).
func (d *Deliveries) Ping(ctx context.Context, name string) (id string, err error) {
	for _, s := range d.subs {
		if s.Name != name {
			continue
		}
		now := d.now()
		body, err := json.Marshal(Envelope{Type: EventPing, Timestamp: now.UTC(), Data: map[string]string{"subscriber": name}})
		if err != nil {
			return "", fmt.Errorf("encode ping: %w", err)
		}
		id := MessageID("", "", name, EventPing+":"+strconv.FormatInt(now.UnixNano(), 10))
		return id, s.deliver(ctx, id, body, now)
	}
	return "", fmt.Errorf("%w: %q", ErrUnknownSubscriber, name)
}
