package queue

import (
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"
)

// asynqVersion is the asynq release whose task message, task keys and enqueue
// script this file reproduces, so that Coordinator can queue tasks inside its
// own group-committed pipeline (asynq's client takes one round trip per task
// and exposes no pipeline). TestTaskMessagePinned fails when go.mod names
// another version, and compares these bytes with what asynq.Client writes:
// an upgrade must be checked against the new release's internal/base,
// internal/proto and internal/rdb before this constant is changed.
const asynqVersion = "v0.26.0"

// asynqDefaultTimeout is the timeout asynq.Client gives a task enqueued with
// neither a timeout nor a deadline (client.go's defaultTimeout), and the one
// its processor gives a task that has neither (processor.go's).
const asynqDefaultTimeout = 30 * time.Minute

// taskMessage encodes the TaskMessage asynq.Client.Enqueue writes for a task
// with these fields (msg.encode): no deadline, unique key, group or headers.
func taskMessage(typ string, payload []byte, id, queue string, retry int, timeout, retention time.Duration) []byte {
	return msg{Type: typ, Payload: payload, ID: id, Queue: queue, Retry: int32(retry),
		Timeout: int64(timeout.Seconds()), Retention: int64(retention.Seconds())}.encode()
}

// msg is asynq's protobuf TaskMessage (internal/proto/asynq.proto), read and
// written by hand for the enqueue in the group commit and for the worker's
// batched path (fetch.go), which both write what asynq's client and server
// write. Headers (field 15) and fields this release does not define are
// kept as read and written back after the others, as protobuf does.
type msg struct {
	Type         string // 1
	Payload      []byte // 2
	ID           string // 3
	Queue        string // 4
	Retry        int32  // 5
	Retried      int32  // 6
	ErrorMsg     string // 7
	Timeout      int64  // 8, seconds
	Deadline     int64  // 9, Unix seconds
	UniqueKey    string // 10
	LastFailedAt int64  // 11, Unix seconds
	Retention    int64  // 12, seconds
	CompletedAt  int64  // 13, Unix seconds
	GroupKey     string // 14
	rest         []byte // headers (15) and unknown fields, as read
}

// encode writes m the way proto.Marshal does: fields in number order, zero
// values left out.
func (m msg) encode() []byte {
	b := make([]byte, 0, len(m.Type)+len(m.Payload)+len(m.ID)+len(m.Queue)+len(m.ErrorMsg)+
		len(m.UniqueKey)+len(m.GroupKey)+len(m.rest)+80)
	str := func(num protowire.Number, v string) {
		if v != "" {
			// proto3 strings are UTF-8: asynq cannot read a message with
			// anything else (an error's text cut inside a character).
			b = protowire.AppendTag(b, num, protowire.BytesType)
			b = protowire.AppendString(b, strings.ToValidUTF8(v, "\uFFFD"))
		}
	}
	varint := func(num protowire.Number, v int64) {
		if v != 0 { // an int32 is sign-extended to 64 bits, as proto does
			b = protowire.AppendTag(b, num, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(v))
		}
	}
	str(1, m.Type)
	if len(m.Payload) > 0 {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, m.Payload)
	}
	str(3, m.ID)
	str(4, m.Queue)
	varint(5, int64(m.Retry))
	varint(6, int64(m.Retried))
	str(7, m.ErrorMsg)
	varint(8, m.Timeout)
	varint(9, m.Deadline)
	str(10, m.UniqueKey)
	varint(11, m.LastFailedAt)
	varint(12, m.Retention)
	varint(13, m.CompletedAt)
	str(14, m.GroupKey)
	return append(b, m.rest...)
}

// decodeMsg reads a TaskMessage.
func decodeMsg(b []byte) (msg, error) {
	var m msg
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return msg{}, fmt.Errorf("task message: %w", protowire.ParseError(n))
		}
		field := b
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return msg{}, fmt.Errorf("task message field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case 5:
				m.Retry = int32(v)
			case 6:
				m.Retried = int32(v)
			case 8:
				m.Timeout = int64(v)
			case 9:
				m.Deadline = int64(v)
			case 11:
				m.LastFailedAt = int64(v)
			case 12:
				m.Retention = int64(v)
			case 13:
				m.CompletedAt = int64(v)
			default:
				m.rest = append(m.rest, field[:len(field)-len(b)]...)
			}
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return msg{}, fmt.Errorf("task message field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case 1:
				m.Type = string(v)
			case 2:
				m.Payload = v
			case 3:
				m.ID = string(v)
			case 4:
				m.Queue = string(v)
			case 7:
				m.ErrorMsg = string(v)
			case 10:
				m.UniqueKey = string(v)
			case 14:
				m.GroupKey = string(v)
			default: // 15, headers, or unknown
				m.rest = append(m.rest, field[:len(field)-len(b)]...)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return msg{}, fmt.Errorf("task message field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			m.rest = append(m.rest, field[:len(field)-len(b)]...)
		}
	}
	return m, nil
}

// asynqKey is the key of asynq's structure s of the queue (asynq's
// internal/base): "pending", "active", "lease", "t:<id>", ... Every key of a
// queue, asynq's and Coordinator's (ownKey), carries the queue's {hash tag},
// so a Redis Cluster keeps them on one node.
func asynqKey(queue, s string) string { return "asynq:{" + queue + "}:" + s }

// ownKey is the key of Coordinator's own structure s of the queue.
func ownKey(queue, s string) string { return "coordinator:{" + queue + "}:" + s }

// queueKeys are the keys of a queue's structures, built once for the
// Queue's enqueues and the fetch's scripts.
type queueKeys struct {
	pending, paused, active, lease, completed, retry, archived, processed, failed string
	task                                                                          string // prefix of a task's hash (asynq's)
	order                                                                         string // prefix of an order's index (ownKey)
}

func newQueueKeys(queue string) queueKeys {
	k := func(s string) string { return asynqKey(queue, s) }
	return queueKeys{pending: k("pending"), paused: k("paused"), active: k("active"), lease: k("lease"),
		completed: k("completed"), retry: k("retry"), archived: k("archived"), processed: k("processed"),
		failed: k("failed"), task: k("t:"), order: ownKey(queue, "order:")}
}

// allQueues is asynq's set of queue names (Inspector, asynqmon).
const allQueues = "asynq:queues"

// enqueueScript is one accept of a line in one script, so that it rides in
// the group commit's pipeline as a single command: index the task under its
// order; refuse it when the superseding task exists (-1); report a legacy id
// indexed under the order (2) so the caller can look at that task; else
// queue the task exactly as asynq v0.26.0's enqueueCmd does (internal/rdb:
// the hash's msg, state and pending_since, LPUSH on the pending list),
// answering 1, or 0 when a task of that id exists. Every key carries the
// queue's {hash tag}, so a Redis Cluster runs it on one node.
//
// KEYS[1] asynq:{q}:t:<id>, KEYS[2] asynq:{q}:pending,
// KEYS[3] coordinator:{q}:order:<site>:<order>, KEYS[4] (optional) the
// superseding task's asynq:{q}:t:<id>.
// ARGV[1] task message, ARGV[2] task id, ARGV[3] now in Unix ns,
// ARGV[4] index TTL in seconds, ARGV[5] legacy id or "".
var enqueueScript = redis.NewScript(`
redis.call("SADD", KEYS[3], ARGV[2])
redis.call("EXPIRE", KEYS[3], ARGV[4])
if KEYS[4] and redis.call("EXISTS", KEYS[4]) == 1 then
	return -1
end
if ARGV[5] ~= "" and redis.call("SISMEMBER", KEYS[3], ARGV[5]) == 1 then
	return 2
end
if redis.call("EXISTS", KEYS[1]) == 1 then
	return 0
end
redis.call("HSET", KEYS[1],
           "msg", ARGV[1],
           "state", "pending",
           "pending_since", ARGV[3])
redis.call("LPUSH", KEYS[2], ARGV[2])
return 1
`)

// The answers of enqueueScript.
const (
	enqueueSuperseded = -1
	enqueueConflict   = 0
	enqueueQueued     = 1
	enqueueLegacy     = 2
)
