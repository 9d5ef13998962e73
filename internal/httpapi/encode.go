package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// encode writes v as a JSON response.
func encode(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// detail is DRF's shape for errors that concern the whole request.
func detail(msg string) map[string]string { return map[string]string{"detail": msg} }

// retryAfterSeconds is what a 503 asks the caller to wait.
const retryAfterSeconds = 5

// unavailable answers 503 with Retry-After, the shop's cue to try again.
func unavailable(w http.ResponseWriter, v any) {
	w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	encode(w, http.StatusServiceUnavailable, v)
}
