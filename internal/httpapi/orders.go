package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// Orders reads and re-queues the fulfillment lines of an order.
type Orders interface {
	Lines(ctx context.Context, site, orderNumber string) ([]fulfillment.Line, error)
	RetryFailed(ctx context.Context, site, orderNumber string) ([]fulfillment.Line, error)
}

type orderStatus struct {
	Site        string             `json:"site"`
	OrderNumber string             `json:"order_number"`
	Lines       []fulfillment.Line `json:"lines"`
}

// handleOrder answers GET /orders/{order_number}[?site=] and, with retry,
// POST /orders/{order_number}/retry.
func handleOrder(orders Orders, knownSite SiteChecker, retry bool, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		number, err := url.PathUnescape(chi.URLParam(r, "order_number"))
		if err != nil {
			encode(w, http.StatusBadRequest, map[string][]string{"order_number": {"Not a valid URL path segment."}})
			return
		}
		if problem := fulfillment.OrderNumberProblem(number); problem != "" {
			encode(w, http.StatusBadRequest, map[string][]string{"order_number": {problem}})
			return
		}
		site := r.URL.Query().Get("site")
		if site == "" {
			site = fulfillment.DefaultSite
		}
		if ok, err := knownSite(r.Context(), site); err != nil {
			writeError(w, r, err, log)
			return
		} else if !ok {
			encode(w, http.StatusBadRequest, map[string][]string{"site": {"Unknown site."}})
			return
		}
		get := orders.Lines
		if retry {
			get = orders.RetryFailed
		}
		lines, err := get(r.Context(), site, number)
		if err != nil {
			writeError(w, r, err, log)
			return
		}
		if retry {
			logOrderRetry(r, site, number, lines, log)
		}
		encode(w, http.StatusOK, orderStatus{Site: site, OrderNumber: number, Lines: lines})
	}
}

// writeError is the one place domain errors become HTTP statuses. Only
// unexpected errors are logged as errors; clients never see internals.
func writeError(w http.ResponseWriter, r *http.Request, err error, log *slog.Logger) {
	switch {
	case errors.Is(err, fulfillment.ErrNotFound):
		encode(w, http.StatusNotFound, detail("Not found."))
	case errors.Is(err, fulfillment.ErrUnavailable):
		log.WarnContext(r.Context(), "backend_unavailable", "request_id", RequestID(r.Context()), "err", err.Error())
		unavailable(w, detail("Temporarily unavailable; retry later."))
	default:
		log.ErrorContext(r.Context(), "internal_error", "request_id", RequestID(r.Context()), "err", err.Error())
		encode(w, http.StatusInternalServerError, detail("Internal error."))
	}
}
