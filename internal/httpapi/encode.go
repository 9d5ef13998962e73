package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
)

// writeJSON writes b, JSON already, as a response.
func writeJSON(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// appendJSONString appends s as a JSON string, byte for byte as
// encoding/json writes it; strings of plain ASCII (task ids, receiver
// names) are copied, others left to encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// encode writes v as a JSON response.
func encode(w http.ResponseWriter, status int, v any) {
	var b bytes.Buffer
	_ = json.NewEncoder(&b).Encode(v)
	writeJSON(w, status, b.Bytes())
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
