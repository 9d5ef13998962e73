// Package wcorders is the built-in receiver woocommerce.complete_order: once
// every course line of an order from a WooCommerce integration is enrolled,
// it marks the order completed in the shop through the WooCommerce REST API,
// once per order.
package wcorders

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/flow"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/shop"
)

// Names of the receiver, its task kind and task type, and the event that
// names its one task per order.
const (
	Receiver = "woocommerce.complete_order"
	Kind     = Receiver
	TaskType = "woocommerce:complete_order"
	Event    = "complete_order"
)

// StateCompleted is what the task reports once the shop's order is completed.
const StateCompleted fulfillment.State = "order_completed"

// Integration is one WooCommerce shop (an integration of type woocommerce).
type Integration struct {
	Name string // the integration's name: fulfillment.Ref.Integration of its lines
	// BaseURL is the store's root, e.g. https://shop.example.com; the API is
	// <BaseURL>/wp-json/wc/v3/.
	BaseURL        string
	ConsumerKey    string
	ConsumerSecret string
	// OrderPrefix is what the integration put before the shop's order id
	// to make the order number.
	OrderPrefix string
	Site        string
}

// Options configure a Completer.
type Options struct {
	Integrations []Integration
	Timeout      time.Duration     // per API call; default 30 s
	Transport    http.RoundTripper // nil: a transport of its own
}

// Orders is what the completer needs of the pipeline: an order's lines, and
// taking its task in.
type Orders interface {
	Lines(ctx context.Context, site, orderNumber string) ([]fulfillment.Line, error)
	Accept(ctx context.Context, kind string, ref fulfillment.Ref, payload any) (string, error)
}

// Completer is the receiver and its task kind.
type Completer struct {
	shops  map[string]Integration
	client *http.Client

	flows *flow.Registry // set by Register
}

// New returns a completer for the integrations.
func New(o Options) *Completer {
	c := &Completer{shops: map[string]Integration{}}
	for _, in := range o.Integrations {
		c.shops[in.Name] = in
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	rt := o.Transport
	if rt == nil {
		rt = http.DefaultTransport.(*http.Transport).Clone()
	}
	c.client = &http.Client{Transport: rt, Timeout: o.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return c
}

// Register declares the completion task — an aside of the order's first
// line (its one task per order), not a flow of it — and the receiver on
// fulfillment_completed; the task reads the order's lines through the
// registry's pipeline, and what counts as fulfilled from its flows.
func (c *Completer) Register(r *flow.Registry) {
	c.flows = r
	r.AddKinds(pipeline.Kind{Name: Kind, TaskType: TaskType, Done: StateCompleted, Rank: 101, Aside: true,
		Handle: pipeline.NoResult(c.handle)})
	r.Completed().Register(Receiver, c.receive)
}

func (c *Completer) pipeline() (Orders, error) {
	if c.flows == nil {
		return nil, errors.New("woocommerce.complete_order: not registered")
	}
	return c.flows.Lines(), nil
}

// receive queues the order's completion when an enrollment of one of its
// lines ended enrolled and every other course line is enrolled too, or
// still running (two lines finishing at once both see the other running:
// both queue the one task of the order, which waits for them). An order's
// lines include those of its extra participants ("<order>-p<k>", shop
// package): the one task is the base order's.
func (c *Completer) receive(ctx context.Context, done fulfillment.Completed) (string, error) {
	if _, ok := c.shops[done.Integration]; !ok || !c.flows.Fulfilled(done.State) {
		return "", nil // not a line of a WooCommerce shop, or not fulfilled
	}
	orders, err := c.pipeline()
	if err != nil {
		return "", err
	}
	base := shop.BaseOrderNumber(done.OrderNumber)
	lines, err := shop.OrderLines(ctx, orders, done.Site, base)
	if err != nil {
		return "", fmt.Errorf("complete order %s: %w", base, err)
	}
	lines = courseLines(lines)
	for _, l := range lines {
		self := l.OrderNumber == done.OrderNumber && l.Line.Item() == done.Ref().Item()
		if !self && !c.flows.Fulfilled(l.Line.State) && l.Line.State != fulfillment.StateRunning {
			return "", nil // not the last line: its own enrollment queues the completion
		}
	}
	first := fulfillment.Line{CourseID: done.CourseID, CourseUUID: done.CourseUUID, CourseMode: done.CourseMode}
	if i := slices.IndexFunc(lines, func(l shop.NumberedLine) bool { return l.OrderNumber == base }); i >= 0 {
		first = lines[i].Line
	}
	ref := done.Ref()
	ref.OrderNumber, ref.CourseID, ref.CourseUUID, ref.CourseMode = base, first.CourseID, first.CourseUUID, first.CourseMode
	ref.AcceptedAt, ref.Event = time.Now().UTC(), Event
	return orders.Accept(ctx, Kind, ref, ref)
}

// courseLines are an order's lines with an enrollment (not those known only
// by asides), the base order's sorted by course first: the first one carries
// the order's task.
func courseLines(lines []shop.NumberedLine) []shop.NumberedLine {
	out := slices.DeleteFunc(slices.Clone(lines), func(l shop.NumberedLine) bool {
		return !slices.ContainsFunc(l.Line.Tasks, func(t fulfillment.Task) bool { return t.Event == "" && t.Kind != Kind })
	})
	if len(out) == 0 {
		return lines
	}
	return out
}

// notYet is a wait for a line still running.
type notYet struct{ course string }

func (n notYet) Error() string          { return "waiting for the line " + n.course }
func (n notYet) RetryIn() time.Duration { return 2 * time.Second }

// handle completes the order once every course line, of every participant,
// is enrolled.
func (c *Completer) handle(ctx context.Context, j pipeline.Job) error {
	shopIn, ok := c.shops[j.Ref.Integration]
	if !ok {
		return pipeline.Permanent(fmt.Errorf("complete order %s: integration %q is not a configured WooCommerce shop", j.Ref.OrderNumber, j.Ref.Integration))
	}
	// A task queued by an earlier version may name a participant's number.
	base := shop.BaseOrderNumber(j.Ref.OrderNumber)
	id, ok := strings.CutPrefix(base, shopIn.OrderPrefix)
	if _, err := strconv.ParseUint(id, 10, 64); !ok || err != nil {
		return pipeline.Permanent(fmt.Errorf("complete order %s: not %q and a WooCommerce order id", j.Ref.OrderNumber, shopIn.OrderPrefix))
	}
	orders, err := c.pipeline()
	if err != nil {
		return err
	}
	lines, err := shop.OrderLines(ctx, orders, j.Ref.Site, base)
	if err == nil && len(lines) == 0 {
		err = fmt.Errorf("order %s: %w", base, fulfillment.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("complete order %s: %w", base, err)
	}
	for _, l := range courseLines(lines) {
		switch st := l.Line.State; {
		case c.flows.Fulfilled(st):
		case st == fulfillment.StateRunning:
			return pipeline.Wait(notYet{l.Line.Item()})
		default:
			// A line that is fulfilled later queues this task again (an
			// accept reopens a failed task).
			who := l.Line.Item()
			if l.OrderNumber != base {
				who += " (" + l.OrderNumber + ")"
			}
			return pipeline.Permanent(fmt.Errorf("complete order %s: %s is %s, not fulfilled", base, who, l.Line.State))
		}
	}
	return c.complete(ctx, shopIn, id)
}

// complete PUTs the order's status. Completing a completed order changes
// nothing in WooCommerce, so a retry after a lost answer is harmless.
func (c *Completer) complete(ctx context.Context, shop Integration, id string) error {
	u := strings.TrimRight(shop.BaseURL, "/") + "/wp-json/wc/v3/orders/" + url.PathEscape(id)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader([]byte(`{"status":"completed"}`)))
	if err != nil {
		return pipeline.Permanent(fmt.Errorf("complete order %s of %s: bad store URL", id, shop.Name))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Coordinator")
	req.SetBasicAuth(shop.ConsumerKey, shop.ConsumerSecret)
	resp, err := c.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL
		}
		return fmt.Errorf("complete order %s of %s: %v", id, shop.Name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusTooManyRequests || code >= 500 || (code >= 300 && code < 400):
		return fmt.Errorf("complete order %s of %s: WooCommerce answered %d", id, shop.Name, code)
	default:
		return pipeline.Permanent(fmt.Errorf("complete order %s of %s: WooCommerce answered %d%s", id, shop.Name, code, message(b)))
	}
}

// message is WooCommerce's error message ({"code", "message"}), bounded.
func message(b []byte) string {
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &m) != nil || m.Message == "" {
		return ""
	}
	return ": " + strings.ToValidUTF8(m.Message[:min(len(m.Message), 200)], "")
}

// Check requires, when woocommerce.complete_order is connected, the REST
// API of every WooCommerce integration, whose keys the errors name.
func Check(cfg config.Config) error {
	if !cfg.Connected(Receiver) {
		return nil
	}
	for i, in := range cfg.Integrations {
		if in.Type != shop.TypeWooCommerce {
			continue
		}
		k := fmt.Sprintf("integrations[%d]", i)
		switch {
		case in.ConsumerKey == "":
			return config.KeyErr(k+".consumer_key", "required: %s is connected and calls the store's REST API", Receiver)
		case in.ConsumerSecret == "":
			return config.KeyErr(k+".consumer_secret", "required: %s is connected and calls the store's REST API", Receiver)
		}
		if err := config.HTTPURL(k+".api_url", in.APIURL); err != nil {
			return config.KeyErr(k+".api_url", "required: the store's base URL (https://shop.example.com), as %s calls its REST API", Receiver)
		}
		if u, _ := url.Parse(in.APIURL); !config.CredentialsSafe(u) {
			return config.KeyErr(k+".api_url", "must be https: %s sends the consumer key and secret with every call (plain http only to a loopback address)", Receiver)
		}
	}
	return nil
}
