// Package docs holds what the service publishes about itself: the OpenAPI
// description of its HTTP API (openapi.yaml beside this file), embedded so
// that the binary serves the document it was built with.
package docs

import _ "embed" // for go:embed

//go:embed openapi.yaml
var openAPI string

// OpenAPI returns docs/openapi.yaml, the OpenAPI 3.1 description of the
// HTTP API.
func OpenAPI() string { return openAPI }

// OpenAPIContentType is the media type the document is served with (YAML,
// RFC 9512).
const OpenAPIContentType = "application/yaml"
