// Package migrations holds Coordinator's numbered SQL migrations
// (NNNN_name.up.sql / NNNN_name.down.sql), embedded into the binary and
// applied by `coordinator migrate`.
package migrations

import "embed"

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS
