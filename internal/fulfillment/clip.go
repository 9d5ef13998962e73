package fulfillment

import (
	"strings"
	"unicode/utf8"
)

// Clip returns s cut to at most n bytes, on a rune boundary, with invalid
// UTF-8 replaced, marking a cut with "...". It bounds what a caller's,
// a shop's or a config file's input can add to a log line or an error
// message. (One implementation for config, shop and httpapi, which all
// import this package already.)
func Clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\ufffd")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
