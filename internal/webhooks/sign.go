package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/openedx/coordinator/internal/pipeline"
)

// Sign returns the value of the webhook-signature header for a message:
// "v1," and the base64 HMAC-SHA256 of "<id>.<timestamp>.<body>" under each
// key, space separated (Standard Webhooks).
func Sign(keys [][]byte, id string, timestamp int64, body []byte) string {
	content := make([]byte, 0, len(id)+len(body)+24)
	content = append(content, id...)
	content = append(content, '.')
	content = strconv.AppendInt(content, timestamp, 10)
	content = append(content, '.')
	content = append(content, body...)
	sigs := make([]string, len(keys))
	for i, k := range keys {
		m := hmac.New(sha256.New, k)
		m.Write(content)
		sigs[i] = "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	}
	return strings.Join(sigs, " ")
}

// MessageID is the webhook-id of a line's event: the same for every attempt
// of every delivery of that event, and for every redelivery of it by the
// shop, so that subscribers can drop duplicates.
func MessageID(site, orderNumber, courseID, event string) string {
	return "msg_" + pipeline.EventDigest(site, orderNumber, courseID, event)
}
