package httpapi

import (
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/signals"
)

// receiverResult is one receiver's entry in the fulfill response, the shape
// of the original service's format_signal_results.
type receiverResult struct {
	Response string `json:"response"`
	Error    bool   `json:"error"`
}

// handleFulfill validates an order line and sends the fulfill_order_placed
// signal. It answers 200 only when every receiver succeeded; a receiver that
// failed means the line may not be recorded, so the shop gets 503 and retries.
func handleFulfill(sig *signals.Signal[fulfillment.Order], knownSite SiteChecker, maxBody int64, log *slog.Logger, obs Observer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			obs.Fulfill(false, "unsupported_media_type")
			encode(w, http.StatusUnsupportedMediaType, detail(`Unsupported media type in request: use "application/json".`))
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			var tooBig *http.MaxBytesError
			obs.Fulfill(false, "body")
			if errors.As(err, &tooBig) {
				encode(w, http.StatusRequestEntityTooLarge, detail("Request body is larger than "+strconv.FormatInt(maxBody, 10)+" bytes."))
				return
			}
			encode(w, http.StatusBadRequest, map[string][]string{fulfillment.NonFieldErrors: {"Could not read the request body."}})
			return
		}
		var siteErr error
		order, err := fulfillment.Parse(body, func(site string) bool {
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
			obs.Fulfill(false, "invalid")
			encode(w, http.StatusBadRequest, fe)
			return
		}
		order.RequestID = RequestID(ctx)
		order.AcceptedAt = time.Now().UTC()

		results := sig.Send(ctx, order)
		out := make(map[string]receiverResult, len(results))
		failed := false
		for _, res := range results {
			if res.Err == nil {
				out[res.Receiver] = receiverResult{Response: res.Response}
				continue
			}
			failed = true
			out[res.Receiver] = receiverResult{Response: receiverMessage(res.Err), Error: true}
			log.ErrorContext(ctx, "receiver_failed", "request_id", order.RequestID, "receiver", res.Receiver,
				"order_number", order.OrderNumber, "course_id", order.CourseID, "err", res.Err.Error())
		}
		if failed {
			obs.Fulfill(false, "unavailable")
			unavailable(w, out)
			return
		}
		log.InfoContext(ctx, "order_accepted", "request_id", order.RequestID, "order_number", order.OrderNumber,
			"course_id", order.CourseID, "site", order.Site)
		obs.Fulfill(true, "")
		encode(w, http.StatusOK, out)
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
