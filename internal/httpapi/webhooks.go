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

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/shop"
	"github.com/openedx/coordinator/internal/signals"
)

// WebhookMaxBodyBytes bounds a shop's delivery: WooCommerce, Shopify and
// Stripe bodies of real orders are a few KiB to some tens of KiB (an order of
// a few hundred lines fits); more gets 413.
const WebhookMaxBodyBytes = 512 << 10

// WebhookMaxReads bounds the webhook bodies being read at once: the
// route is unauthenticated until the body is read and its signature checked,
// so at most WebhookMaxReads × WebhookMaxBodyBytes (32 MiB) is held for
// bodies; a delivery beyond that gets 503 with Retry-After, unread.
const WebhookMaxReads = 64

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
	OrderNumber string                    `json:"order_number"`
	CourseID    string                    `json:"course_id"`
	Signal      string                    `json:"signal"`
	Receivers   map[string]receiverResult `json:"receivers"`
}

// webhookResult is the answer to a delivery that was read.
type webhookResult struct {
	Integration string        `json:"integration"`
	Event       string        `json:"event"`
	OrderNumber string        `json:"order_number,omitempty"`
	Ignored     string        `json:"ignored,omitempty"`
	Lines       []webhookLine `json:"lines"`
}

// handleWebhook answers POST /webhooks/{name}: the signature is the
// authentication (401, nothing recorded, when it does not verify); each
// course line of a paid order is sent on fulfill_order_placed and each
// refunded one on fulfill_order_returned, and the shop gets 200 only once
// every line is durably recorded, else 503 and it delivers again (repeats
// are idempotent per line). An event that cannot be read gets 400 with the
// reason, one that asks for nothing 200 with why.
func handleWebhook(shops map[string]*shop.Shop, placed *signals.Signal[fulfillment.Order],
	returned *signals.Signal[fulfillment.Return], lines shop.LineReader, knownSite SiteChecker, log *slog.Logger, obs WebhookObserver,
	maxReads int,
) http.HandlerFunc {
	if obs == nil {
		obs = noWebhookObserver{}
	}
	if maxReads <= 0 {
		maxReads = WebhookMaxReads
	}
	reading := make(chan struct{}, maxReads)
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		s, ok := shops[chi.URLParam(r, "name")]
		if !ok {
			// Not logged beyond the access line: the name is the caller's.
			encode(w, http.StatusNotFound, detail("Unknown integration."))
			return
		}
		reqID := RequestID(ctx)
		attrs := []any{"request_id", reqID, "integration", s.Name()}
		if r.ContentLength > WebhookMaxBodyBytes {
			tooLarge(ctx, w, s.Name(), obs, log, attrs)
			return
		}
		select {
		case reading <- struct{}{}:
		default:
			// Full: answered without reading the body; the shop delivers
			// again.
			obs.Webhook(s.Name(), "busy")
			log.WarnContext(ctx, "webhook_busy", append(attrs, "reading", maxReads)...)
			w.Header().Set("Connection", "close")
			unavailable(w, detail("Too many deliveries at once; deliver again later."))
			return
		}
		body, tooBig, err := readBody(r, WebhookMaxBodyBytes)
		<-reading
		if tooBig {
			tooLarge(ctx, w, s.Name(), obs, log, attrs)
			return
		}
		if err != nil {
			obs.Webhook(s.Name(), "invalid")
			encode(w, http.StatusBadRequest, detail("Could not read the request body."))
			return
		}
		if s.Ping(r.Header, body) {
			obs.Webhook(s.Name(), "ping")
			log.InfoContext(ctx, "webhook_ping", attrs...)
			encode(w, http.StatusOK, detail("Webhook reachable."))
			return
		}
		if err := s.Verify(r.Header, body, time.Now()); err != nil {
			obs.Webhook(s.Name(), "refused")
			log.WarnContext(ctx, "webhook_refused", append(attrs, "reason", err.Error())...)
			encode(w, http.StatusUnauthorized, detail("Missing or invalid signature."))
			return
		}
		ev, err := s.Event(ctx, r.Header, body)
		attrs = append(attrs, "event", ev.Topic)
		if err != nil {
			obs.Webhook(s.Name(), webhookError(ctx, w, err, log, attrs))
			return
		}
		out := webhookResult{Integration: s.Name(), Event: ev.Topic, Lines: []webhookLine{}}
		if ev.OrderID != "" {
			out.OrderNumber = s.OrderNumber(ev.OrderID)
			attrs = append(attrs, "order_number", out.OrderNumber)
		}
		if ev.Note != "" {
			log.WarnContext(ctx, "webhook_note", append(attrs, "note", ev.Note)...)
		}
		if ev.Ignored != "" {
			obs.Webhook(s.Name(), "ignored")
			log.InfoContext(ctx, "webhook_ignored", append(attrs, "reason", ev.Ignored)...)
			out.Ignored = ev.Ignored
			encode(w, http.StatusOK, out)
			return
		}
		// An integration's site that is not (or no longer) in the sites
		// table is the operator's to fix; until then the shop redelivers.
		if ok, err := knownSite(ctx, s.Site()); err != nil || !ok {
			obs.Webhook(s.Name(), "unavailable")
			log.ErrorContext(ctx, "webhook_site_unavailable", append(attrs, "site", s.Site(), "known", ok)...)
			unavailable(w, detail("Temporarily unavailable; deliver again later."))
			return
		}
		now := time.Now().UTC()
		failed := false
		for _, o := range s.Orders(ev, reqID, now) {
			l, ok := sendLine(ctx, placed, o, log, attrs)
			out.Lines, failed = append(out.Lines, l), failed || !ok
		}
		if ev.ReturnAll || len(ev.Returned) > 0 {
			rets, note, err := s.Returns(ctx, ev, lines, reqID, now)
			if err != nil {
				obs.Webhook(s.Name(), webhookError(ctx, w, err, log, attrs))
				return
			}
			if note != "" {
				log.WarnContext(ctx, "webhook_note", append(attrs, "note", note)...)
			}
			for _, ret := range rets {
				l, ok := sendLine(ctx, returned, ret, log, attrs)
				out.Lines, failed = append(out.Lines, l), failed || !ok
			}
		}
		if failed {
			obs.Webhook(s.Name(), "unavailable")
			unavailable(w, out)
			return
		}
		obs.Webhook(s.Name(), "accepted")
		log.InfoContext(ctx, "webhook_accepted", append(attrs, "lines", len(out.Lines))...)
		encode(w, http.StatusOK, out)
	}
}

// sendLine sends one line on its signal and reports every receiver's
// answer; ok is false when any receiver failed.
func sendLine[T lineRequest](ctx context.Context, sig *signals.Signal[T], v T, log *slog.Logger, attrs []any) (webhookLine, bool) {
	ref := v.Ref()
	l := webhookLine{OrderNumber: ref.OrderNumber, CourseID: ref.CourseID, Signal: sig.Name(), Receivers: map[string]receiverResult{}}
	ok := true
	for _, res := range sig.Send(ctx, v) {
		if res.Err == nil {
			l.Receivers[res.Receiver] = receiverResult{Response: res.Response}
			continue
		}
		ok = false
		l.Receivers[res.Receiver] = receiverResult{Response: receiverMessage(res.Err), Error: true}
		log.ErrorContext(ctx, "receiver_failed", append(attrs, "signal", sig.Name(), "receiver", res.Receiver,
			"line_order_number", ref.OrderNumber, "course_id", ref.CourseID, "err", res.Err.Error())...)
	}
	return l, ok
}

// webhookError answers an event that could not be read or planned: 400 with
// the reason for what the shop sent, 503 for what may pass (Stripe's API, our
// stores). Never a 500: the shop would only deliver the same body again. It
// returns the result it answered, for the metrics.
func webhookError(ctx context.Context, w http.ResponseWriter, err error, log *slog.Logger, attrs []any) string {
	var bad *shop.BadEvent
	var unexpected *shop.UnexpectedEvent
	switch {
	case errors.As(err, &bad), errors.As(err, &unexpected):
		log.WarnContext(ctx, "webhook_invalid", append(attrs, "reason", err.Error())...)
		encode(w, http.StatusBadRequest, detail(err.Error()))
		return "invalid"
	default:
		log.ErrorContext(ctx, "webhook_unavailable", append(attrs, "err", err.Error())...)
		unavailable(w, detail("Temporarily unavailable; deliver again later."))
		return "unavailable"
	}
}

// tooLarge answers a delivery over WebhookMaxBodyBytes, closing the
// connection rather than reading the rest.
func tooLarge(ctx context.Context, w http.ResponseWriter, name string, obs WebhookObserver, log *slog.Logger, attrs []any) {
	obs.Webhook(name, "too_large")
	log.WarnContext(ctx, "webhook_too_large", attrs...)
	w.Header().Set("Connection", "close")
	encode(w, http.StatusRequestEntityTooLarge, detail("Request body is larger than "+strconv.Itoa(WebhookMaxBodyBytes)+" bytes."))
}
