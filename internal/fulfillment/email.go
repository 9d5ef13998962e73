package fulfillment

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxEmail is RFC 5321's limit on a path, which bounds an address.
const MaxEmail = 254

// ValidEmail is a loose check of a trimmed address: something@something,
// at most MaxEmail bytes of valid UTF-8, without spaces or control
// characters. The LMS, not Coordinator, says whether an account has it.
func ValidEmail(s string) bool {
	local, domain, ok := strings.Cut(s, "@")
	return ok && local != "" && domain != "" && len(s) <= MaxEmail && utf8.ValidString(s) &&
		!strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) })
}

// MaskEmail is an email as logs may show it: its first character and its
// domain ("j***@example.com"), enough to tell two learners of an order apart
// and to match a complaint, not enough to be the address. Emails are
// personal data; logs are kept longer and read more widely than the ledger.
func MaskEmail(email string) string {
	local, domain, ok := strings.Cut(email, "@")
	if !ok || local == "" {
		return "***"
	}
	r := []rune(local)
	return string(r[0]) + "***@" + domain
}

// MaskEmailIn replaces every occurrence of email (trimmed) in s by its mask.
func MaskEmailIn(s, email string) string {
	email = strings.TrimSpace(email) // as it was looked up
	if email == "" {
		return s
	}
	return strings.ReplaceAll(s, email, MaskEmail(email))
}
