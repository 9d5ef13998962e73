package httpapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/intake"
	"github.com/openedx/coordinator/internal/shop"
	"github.com/openedx/coordinator/internal/signals"
)

// receiverResult is one receiver's entry in the fulfill response, the shape
// of the original service's format_signal_results.
type receiverResult struct {
	Response string `json:"response"`
	Error    bool   `json:"error"`
}

// receiverResults is every receiver's answer to a line: in a response, a
// JSON object of receiverResult by receiver name, names in order.
type receiverResults []namedResult

type namedResult struct {
	name string
	receiverResult
	logged string // what the log says of it: the task id, or "error: " and the error
}

// logAttrs are the results as the log carries them, one per receiver.
func (rs receiverResults) logAttrs() []slog.Attr {
	attrs := make([]slog.Attr, len(rs))
	for i, r := range rs {
		attrs[i] = slog.String(r.name, r.logged)
	}
	return attrs
}

func (rs receiverResults) MarshalJSON() ([]byte, error) { return rs.appendJSON(nil), nil }

// appendJSON appends the results as encoding/json would write a map of
// them, without its reflection and sorting: an accepted order's response
// is written this way.
func (rs receiverResults) appendJSON(b []byte) []byte {
	b = append(b, '{')
	for i, r := range rs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, r.name)
		b = append(b, `:{"response":`...)
		b = appendJSONString(b, r.Response)
		b = append(b, `,"error":`...)
		b = strconv.AppendBool(b, r.Error)
		b = append(b, '}')
	}
	return append(b, '}')
}

// lineRequest is what handleLine needs of a request type: its line, for logs.
type lineRequest interface{ Ref() fulfillment.Ref }

// Intake sends a line on its flow's signal (intake.Service): it chooses the
// signal by the line's item, so this package never names a flow.
type Intake interface {
	// Accepts reports whether a flow handles lines whose item the request
	// field names (course_id, course_uuid).
	Accepts(field string) bool
	Place(ctx context.Context, o fulfillment.Order) (intake.Sent, error)
	Return(ctx context.Context, r fulfillment.Return) (intake.Sent, error)
	// Shop sends the lines a shop's delivery makes, and its dispute's
	// report, on their signals.
	Shop(ctx context.Context, s *shop.Shop, ev shop.Event, lines shop.LineReader, requestID string, now time.Time) (intake.ShopSent, error)
}

// noIntake is the intake of an API that accepts no lines.
type noIntake struct{}

func (noIntake) Accepts(string) bool { return false }
func (noIntake) Place(context.Context, fulfillment.Order) (intake.Sent, error) {
	return intake.Sent{}, errors.New("no flows")
}
func (noIntake) Return(context.Context, fulfillment.Return) (intake.Sent, error) {
	return intake.Sent{}, errors.New("no flows")
}
func (noIntake) Shop(context.Context, *shop.Shop, shop.Event, shop.LineReader, string, time.Time) (intake.ShopSent, error) {
	return intake.ShopSent{}, errors.New("no flows")
}

// sendAll sends v through send and returns the signal's name, every
// receiver's answer, in name order, and whether every receiver succeeded.
func sendAll[T lineRequest](ctx context.Context, send func(context.Context, T) (intake.Sent, error), v T) (string, receiverResults, bool) {
	sent, err := send(ctx, v)
	if err != nil {
		// No flow for the line's item: the handlers check Accepts first,
		// so this is a wiring fault, answered like a failed receiver.
		return "", intakeFault(err), false
	}
	out, ok := toResults(sent.Results)
	return sent.Signal, out, ok
}

// intakeFault is the answer of an intake that could not send: a wiring
// fault, answered like a failed receiver.
func intakeFault(err error) receiverResults {
	return receiverResults{{name: "intake", receiverResult: receiverResult{Response: receiverMessage(err), Error: true},
		logged: "error: " + err.Error()}}
}

// toResults are a signal's receivers' answers in name order, and whether
// every receiver succeeded.
func toResults(results []signals.Result) (receiverResults, bool) {
	out := make(receiverResults, 0, len(results))
	ok := true
	for _, res := range results {
		if res.Err == nil {
			out = append(out, namedResult{res.Receiver, receiverResult{Response: res.Response}, res.Response})
			continue
		}
		ok = false
		out = append(out, namedResult{res.Receiver, receiverResult{Response: receiverMessage(res.Err), Error: true},
			"error: " + res.Err.Error()})
	}
	slices.SortFunc(out, func(a, b namedResult) int { return strings.Compare(a.name, b.name) })
	return out, ok
}

// handleLine validates a line request (a fulfill, a return) with parse,
// stamps it with the request id and the time, and sends it through send
// (the intake, which picks the signal of its item's flow). It
// answers 200 only when every receiver succeeded; a receiver that failed
// means the line may not be recorded, so the shop gets 503 and retries.
func handleLine[T lineRequest](
	parse func(body []byte, knownSite func(string) bool) (T, error),
	stamp func(v *T, requestID string, now time.Time),
	send func(context.Context, T) (intake.Sent, error), accepts func(field string) bool,
	knownSite SiteChecker, maxBody int64, log *slog.Logger, obs Observer,
) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		// A refused request, counted and in its log line.
		refuse := func(reason string, attrs ...slog.Attr) {
			obs.Fulfill(false, reason)
			LogAttrs(ctx, append([]slog.Attr{slog.String("refused", reason)}, attrs...)...)
		}
		if !isJSON(r.Header.Get("Content-Type")) {
			refuse("unsupported_media_type")
			encode(w, http.StatusUnsupportedMediaType, detail(`Unsupported media type in request: use "application/json".`))
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			var tooBig *http.MaxBytesError
			refuse("body")
			if errors.As(err, &tooBig) {
				encode(w, http.StatusRequestEntityTooLarge, detail("Request body is larger than "+strconv.FormatInt(maxBody, 10)+" bytes."))
				return
			}
			encode(w, http.StatusBadRequest, map[string][]string{fulfillment.NonFieldErrors: {"Could not read the request body."}})
			return
		}
		var siteErr error
		req, err := parse(body, func(site string) bool {
			ok, err := knownSite(ctx, site)
			if err != nil {
				siteErr = err
				return true
			}
			return ok
		})
		if siteErr != nil {
			obs.Fulfill(false, "unavailable")
			writeError(w, r, siteErr, log)
			return
		}
		if err != nil {
			var fe fulfillment.FieldErrors
			errors.As(err, &fe)
			refuse("invalid", slog.Any("invalid_fields", slices.Sorted(maps.Keys(fe))))
			encode(w, http.StatusBadRequest, fe)
			return
		}
		ref := req.Ref()
		if field := ref.ItemField(); !accepts(field) {
			refuse("invalid", slog.Any("invalid_fields", []string{field}))
			encode(w, http.StatusBadRequest, fulfillment.FieldErrors{field: {"No flow for this kind of item is configured."}})
			return
		}
		stamp(&req, RequestID(ctx), time.Now().UTC())
		ref = req.Ref()

		LogAttrs(ctx, slog.String("order_number", ref.OrderNumber),
			slog.String(ref.ItemField(), ref.Item()), slog.String("site", ref.Site))

		signal, out, ok := sendAll(ctx, send, req)
		LogAttrs(ctx, slog.String("signal", signal))
		// Each receiver's result — its task id, or its error — in the
		// request's one log line (logged at error for the 503).
		LogAttrs(ctx, slog.GroupAttrs("receivers", out.logAttrs()...))
		if !ok {
			obs.Fulfill(false, "unavailable")
			unavailable(w, out)
			return
		}
		obs.Fulfill(true, "")
		writeJSON(w, http.StatusOK, append(out.appendJSON(make([]byte, 0, 128)), '\n'))
	}
}

// isJSON reports whether a Content-Type is application/json, with or
// without parameters; the bare type, which shops send, is not parsed.
func isJSON(contentType string) bool {
	if contentType == "application/json" {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

// stampOrder and stampReturn give an accepted request its request id and
// acceptance time; a return without returned_at was returned now.
func stampOrder(o *fulfillment.Order, requestID string, now time.Time) {
	o.RequestID, o.AcceptedAt = requestID, now
}

func stampReturn(r *fulfillment.Return, requestID string, now time.Time) {
	r.RequestID, r.AcceptedAt = requestID, now
	if r.ReturnedAt.IsZero() {
		r.ReturnedAt = now.Truncate(time.Second)
	}
}

// receiverMessage is the short message a shop sees for a failed receiver;
// internal details stay in the logs.
func receiverMessage(err error) string {
	var pe *signals.PanicError
	switch {
	case errors.Is(err, fulfillment.ErrUnavailable):
		return "The fulfillment queue is unavailable; retry later."
	case errors.As(err, &pe):
		return "Internal error in receiver."
	}
	return "Receiver failed; retry later."
}
