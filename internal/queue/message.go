package queue

import (
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
// neither a timeout nor a deadline (client.go's defaultTimeout).
const asynqDefaultTimeout = 30 * time.Minute

// taskMessage encodes asynq's protobuf TaskMessage (internal/proto) the way
// proto.Marshal does for what asynq.Client.Enqueue writes: fields in number
// order, zero values left out. Only the fields an enqueue sets are written:
// type 1, payload 2, id 3, queue 4, retry 5, timeout 8 (seconds), retention
// 12 (seconds). No deadline (0), no unique key, no group, no headers.
func taskMessage(typ string, payload []byte, id, queue string, retry int, timeout, retention time.Duration) []byte {
	n := len(typ) + len(payload) + len(id) + len(queue) + 40
	b := make([]byte, 0, n)
	if typ != "" {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, typ)
	}
	if len(payload) > 0 {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, payload)
	}
	if id != "" {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendString(b, id)
	}
	if queue != "" {
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendString(b, queue)
	}
	if retry != 0 { // int32: a negative value is sign-extended to 64 bits
		b = protowire.AppendTag(b, 5, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(int32(retry))))
	}
	if s := int64(timeout.Seconds()); s != 0 {
		b = protowire.AppendTag(b, 8, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(s))
	}
	if s := int64(retention.Seconds()); s != 0 {
		b = protowire.AppendTag(b, 12, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(s))
	}
	return b
}

// pendingKey is asynq's list of a queue's pending task ids.
func (q *Queue) pendingKey() string { return "asynq:{" + q.name + "}:pending" }

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
