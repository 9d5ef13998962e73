package httpapi

import (
	"io"
	"net/http"

	"github.com/openedx/coordinator/docs"
)

// handleOpenAPI serves the API's OpenAPI document (docs/openapi.yaml) to
// anyone: it describes the routes, never a secret or a configuration.
func handleOpenAPI(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", docs.OpenAPIContentType)
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = io.WriteString(w, docs.OpenAPI())
}
