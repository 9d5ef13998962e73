package lms

import (
	"errors"
	"net/url"
	"strings"
)

// errPathKey refuses a course key that could leave the API's path once a
// server or proxy decodes it.
var errPathKey = errors.New("course id has a dot-segment or an encoded separator; refusing to put it in a URL")

// checkPathKey refuses a course key whose '/'-separated parts are, or
// decode to, "." or "..", or decode to something holding a path separator.
// Legacy keys allow '.' and '%' (docs/lms.md#course-run-keys), so "a/b/%2e%2e%2f" is a valid
// key that a server decoding it twice would read as a step up the tree.
func checkPathKey(key string) error {
	for part := range strings.SplitSeq(key, "/") {
		// Decode as often as a chain of servers might, until it is stable;
		// a part still changing after that is refused too.
		for round := 0; ; round++ {
			if part == "." || part == ".." || strings.ContainsAny(part, "/\\") {
				return errPathKey
			}
			dec, err := url.PathUnescape(part)
			if err != nil || dec == part {
				break
			}
			if round == 3 {
				return errPathKey
			}
			part = dec
		}
	}
	return nil
}
