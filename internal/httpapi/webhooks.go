package httpapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/openedx/coordinator/internal/intake"
	"github.com/openedx/coordinator/internal/shop"
)

// WebhookMaxBodyBytes bounds a shop's delivery: WooCommerce, Shopify and
// Stripe bodies of real orders are a few KiB to some tens of KiB (an order of
// a few hundred lines fits); more gets 413.
const WebhookMaxBodyBytes = 512 << 10

// WebhookMaxReads bounds the webhook bodies being read at once, per
// integration: the route is unauthenticated until the body is read and its
// signature checked, so at most WebhookMaxReads × WebhookMaxBodyBytes (32
// MiB) per integration is held for bodies. Slots are per integration (their
// names come from the config), so slow senders posting to one integration
// cannot take another's. A delivery that finds its integration's slots
// taken waits up to WebhookSlotWait for one, then gets 503 with
// Retry-After, unread.
const WebhookMaxReads = 64

// WebhookSlotWait is how long a delivery waits for a read slot of its
// integration before 503: real deliveries read in milliseconds.
const WebhookSlotWait = 2 * time.Second

// WebhookBodyTimeout bounds the read of a delivery's whole body (a read
// deadline on the connection, not the server's 30 s ReadTimeout): shops send
// small bodies at once, so a sender trickling its body loses its slot soon.
const WebhookBodyTimeout = 10 * time.Second

// webhookLimits are the bounds on reading deliveries' bodies.
type webhookLimits struct {
	reads    int           // per integration; 0: WebhookMaxReads
	wait     time.Duration // for a slot; 0: WebhookSlotWait, < 0: none
	bodyRead time.Duration // 0: WebhookBodyTimeout
	waiting  func()        // tests: called when a delivery starts waiting for a slot
}

// slot takes one of the read slots within wait, or reports false.
func slot(ctx context.Context, slots chan struct{}, wait time.Duration, waiting func()) bool {
	select {
	case slots <- struct{}{}:
		return true
	default:
	}
	if wait <= 0 {
		return false
	}
	if waiting != nil {
		waiting()
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// readBody reads a delivery of at most limit bytes into a buffer sized from
// its Content-Length (capped), so that a slow sender cannot make it grow
// beyond limit. tooBig reports a body over the limit.
func readBody(r *http.Request, limit int64) (body []byte, tooBig bool, err error) {
	if r.ContentLength > limit {
		return nil, true, nil
	}
	size := int64(4096)
	if r.ContentLength >= 0 {
		size = r.ContentLength + 1 // +1: room to see the EOF in one read
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	n, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1))
	switch {
	case err != nil:
		return nil, false, err
	case n > limit:
		return nil, true, nil
	}
	return buf.Bytes(), false, nil
}

// WebhookObserver counts shop deliveries by integration and result.
type WebhookObserver interface {
	Webhook(integration, result string)
}

type noWebhookObserver struct{}

func (noWebhookObserver) Webhook(string, string) {}

// webhookLine is one line an event recorded, in the webhook's answer.
type webhookLine struct {
	OrderNumber string          `json:"order_number"`
	CourseID    string          `json:"course_id,omitempty"`
	CourseUUID  string          `json:"course_uuid,omitempty"`
	Signal      string          `json:"signal"`
	Receivers   receiverResults `json:"receivers"`
}

// webhookSignal is a signal an event sent that is not about one line
// (shop_dispute_opened), in the webhook's answer.
type webhookSignal struct {
	Signal    string          `json:"signal"`
	Receivers receiverResults `json:"receivers"`
}

// webhookResult is the answer to a delivery that was read.
type webhookResult struct {
	Integration string          `json:"integration"`
	Event       string          `json:"event"`
	OrderNumber string          `json:"order_number,omitempty"`
	Ignored     string          `json:"ignored,omitempty"`
	Lines       []webhookLine   `json:"lines"`
	Signals     []webhookSignal `json:"signals,omitempty"`
}

// handleWebhook answers POST /webhooks/{name}: the signature is the
// authentication (401, nothing recorded, when it does not verify); the
// intake makes the event's lines and sends each on its flow's signal
// (intake.Service.Shop), and the shop gets 200 only once every line is
// durably recorded, else 503 and it delivers again (repeats are idempotent
// per line). An event that cannot be read gets 400 with the
// reason, one that asks for nothing 200 with why.
func handleWebhook(shops map[string]*shop.Shop, in Intake, lines shop.LineReader, knownSite SiteChecker, obs WebhookObserver,
	lim webhookLimits,
) http.HandlerFunc {
	if obs == nil {
		obs = noWebhookObserver{}
	}
	if lim.reads <= 0 {
		lim.reads = WebhookMaxReads
	}
	if lim.wait == 0 {
		lim.wait = WebhookSlotWait
	}
	if lim.bodyRead <= 0 {
		lim.bodyRead = WebhookBodyTimeout
	}
	// Each integration with its own read slots: the names are the
	// config's, so the map is bounded.
	type integration struct {
		*shop.Shop
		slots chan struct{}
	}
	byName := make(map[string]integration, len(shops))
	for name, s := range shops {
		byName[name] = integration{s, make(chan struct{}, lim.reads)}
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		s, ok := byName[chi.URLParam(r, "name")]
		if !ok {
			// Not logged beyond the access line: the name is the caller's.
			encode(w, http.StatusNotFound, detail("Unknown integration."))
			return
		}
		reqID := RequestID(ctx)
		LogAttrs(ctx, slog.String("integration", s.Name()))
		// The delivery's result, counted and in its log line.
		report := func(l slog.Level, result string, attrs ...slog.Attr) {
			obs.Webhook(s.Name(), result)
			outcome(ctx, l, result, attrs...)
		}
		if r.ContentLength > WebhookMaxBodyBytes {
			tooLarge(w, report)
			return
		}
		if !slot(ctx, s.slots, lim.wait, lim.waiting) {
			// Full: answered without reading the body; the shop delivers
			// again.
			report(slog.LevelWarn, "busy", slog.Int("reading", lim.reads))
			w.Header().Set("Connection", "close")
			unavailable(w, detail("Too many deliveries at once; deliver again later."))
			return
		}
		// The whole body within lim.bodyRead: a trickling sender gives
		// its slot back soon. (Unsupported, as in tests with a recorder:
		// the server's ReadTimeout still bounds it.)
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(lim.bodyRead))
		body, tooBig, err := readBody(r, WebhookMaxBodyBytes)
		<-s.slots
		if tooBig || err != nil {
			// Part of the body is unread, and the server drains it after
			// the answer: a second more for that, then the connection
			// ends (no deadline would keep a stalled sender's connection
			// open for good).
			_ = rc.SetReadDeadline(time.Now().Add(time.Second))
		} else {
			// Read to the end: no deadline for the rest (a past one would
			// end the request's context through the server's background
			// read; the server sets its own for the next request).
			_ = rc.SetReadDeadline(time.Time{})
		}
		if tooBig {
			tooLarge(w, report)
			return
		}
		if err != nil {
			// Closed after the answer: the server would otherwise wait
			// for the rest of the body before answering.
			w.Header().Set("Connection", "close")
			report(slog.LevelWarn, "invalid", slog.String("reason", "could not read the body"))
			encode(w, http.StatusBadRequest, detail("Could not read the request body."))
			return
		}
		if s.Ping(r.Header, body) {
			report(slog.LevelInfo, "ping")
			encode(w, http.StatusOK, detail("Webhook reachable."))
			return
		}
		if err := s.Verify(r.Header, body, time.Now()); err != nil {
			report(slog.LevelWarn, "refused", slog.String("reason", err.Error()))
			encode(w, http.StatusUnauthorized, detail("Missing or invalid signature."))
			return
		}
		ev, err := s.Event(ctx, r.Header, body)
		LogAttrs(ctx, slog.String("event", ev.Topic))
		if err != nil {
			webhookError(w, err, report)
			return
		}
		out := webhookResult{Integration: s.Name(), Event: ev.Topic, Lines: []webhookLine{}}
		if ev.OrderID != "" {
			out.OrderNumber = s.OrderNumber(ev.OrderID)
			LogAttrs(ctx, slog.String("order_number", out.OrderNumber))
		}
		notes := []string{}
		if ev.Note != "" {
			notes = append(notes, ev.Note)
		}
		if ev.Ignored != "" {
			report(noteLevel(notes), "ignored", slog.String("reason", ev.Ignored), notesAttr(notes))
			out.Ignored = ev.Ignored
			encode(w, http.StatusOK, out)
			return
		}
		// An integration's site that is not (or no longer) in the sites
		// table is the operator's to fix; until then the shop redelivers.
		if ok, err := knownSite(ctx, s.Site()); err != nil || !ok {
			obs.Webhook(s.Name(), "unavailable")
			outcome(ctx, slog.LevelError, "site_unavailable", slog.String("site", s.Site()), slog.Bool("known", ok))
			unavailable(w, detail("Temporarily unavailable; deliver again later."))
			return
		}
		sent, err := in.Shop(ctx, s.Shop, ev, lines, reqID, time.Now().UTC())
		if err != nil {
			LogAttrs(ctx, notesAttr(notes))
			webhookError(w, err, report)
			return
		}
		failed := false
		var receivers []map[string]string // each line's receivers' results, for the log line
		if d := sent.Dispute; d != nil {
			// Changes no seat; whoever listens is told, and the
			// operator reads it in the log line.
			notes = append(notes, "payment disputed ("+d.Reason+"): the seats stay unless the dispute is lost")
			res, ok := toResults(sent.DisputeSent.Results)
			if sent.DisputeErr != nil {
				res, ok = intakeFault(sent.DisputeErr), false
			}
			out.Signals = append(out.Signals, webhookSignal{Signal: shop.SignalDisputeOpened, Receivers: res})
			logged := map[string]string{"signal": shop.SignalDisputeOpened, "dispute_id": d.DisputeID}
			for _, r := range res {
				logged[r.name] = r.logged
			}
			failed, receivers = !ok, append(receivers, logged)
		}
		if sent.Note != "" {
			notes = append(notes, sent.Note)
		}
		for _, l := range sent.Lines {
			line, logged, ok := shopLine(l)
			out.Lines, failed, receivers = append(out.Lines, line), failed || !ok, append(receivers, logged)
		}
		LogAttrs(ctx, slog.Int("lines", len(out.Lines)), slog.Any("receivers", receivers))
		if failed {
			report(slog.LevelError, "unavailable", notesAttr(notes))
			unavailable(w, out)
			return
		}
		report(noteLevel(notes), "accepted", notesAttr(notes))
		encode(w, http.StatusOK, out)
	}
}

// outcome puts a delivery's result, and what explains it, in the request's
// one http_request log line (`webhook_result`), at level at least l.
func outcome(ctx context.Context, l slog.Level, result string, attrs ...slog.Attr) {
	LogAttrs(ctx, append(attrs, slog.String("webhook_result", result))...)
	LogLevel(ctx, l)
}

// notesAttr is the event's notes (what a shop owner should know of an
// accepted event: extra emails, unclear refunds) for the log line.
func notesAttr(notes []string) slog.Attr {
	if len(notes) == 0 {
		return slog.Attr{}
	}
	return slog.Any("webhook_note", notes)
}

// noteLevel is warn when there are notes, else info.
func noteLevel(notes []string) slog.Level {
	if len(notes) > 0 {
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// shopLine is one line a delivery made, as the answer and the log line
// report it: every receiver's answer; ok is false when any failed.
func shopLine(l intake.ShopLine) (webhookLine, map[string]string, bool) {
	out, ok := toResults(l.Sent.Results)
	if l.Err != nil {
		out, ok = intakeFault(l.Err), false
	}
	logged := map[string]string{"signal": l.Sent.Signal, "order_number": l.Ref.OrderNumber, l.Ref.ItemField(): l.Ref.Item()}
	for _, r := range out {
		logged[r.name] = r.logged
	}
	return webhookLine{OrderNumber: l.Ref.OrderNumber, CourseID: l.Ref.CourseID, CourseUUID: l.Ref.CourseUUID,
		Signal: l.Sent.Signal, Receivers: out}, logged, ok
}

// webhookError answers an event that could not be read or planned: 400 with
// the reason for what the shop sent, 503 for what may pass (Stripe's API, our
// stores). Never a 500: the shop would only deliver the same body again.
func webhookError(w http.ResponseWriter, err error, report func(slog.Level, string, ...slog.Attr)) {
	var bad *shop.BadEvent
	switch {
	case errors.As(err, &bad):
		report(slog.LevelWarn, "invalid", slog.String("reason", err.Error()))
		encode(w, http.StatusBadRequest, detail(err.Error()))
	default:
		report(slog.LevelError, "unavailable", slog.String("reason", err.Error()))
		unavailable(w, detail("Temporarily unavailable; deliver again later."))
	}
}

// tooLarge answers a delivery over WebhookMaxBodyBytes, closing the
// connection rather than reading the rest.
func tooLarge(w http.ResponseWriter, report func(slog.Level, string, ...slog.Attr)) {
	report(slog.LevelWarn, "too_large")
	w.Header().Set("Connection", "close")
	encode(w, http.StatusRequestEntityTooLarge, detail("Request body is larger than "+strconv.Itoa(WebhookMaxBodyBytes)+" bytes."))
}
