package queue

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// For the tests of package queue_test.

const AsynqVersion = asynqVersion

func TaskMessage(typ string, payload []byte, id, queue string, retry int, timeout, retention time.Duration) []byte {
	return taskMessage(typ, payload, id, queue, retry, timeout, retention)
}

// For TestFetchWritesWhatAsynqWrites: asynq's server or the batched fetch
// alone.

func (w *Worker) StartAsynqOnly() error { return w.srv.Start(w.mux) }
func (w *Worker) ShutdownAsynqOnly()    { w.srv.Shutdown() }
func (w *Worker) StartFetchOnly()       { w.fetch.start() }
func (w *Worker) ShutdownFetchOnly()    { w.fetch.shutdown() }

func DecodeMsg(b []byte) (msg, error) { return decodeMsg(b) }
func (m msg) Encode() []byte          { return m.encode() }

// DequeueScriptHash names the fetch's dequeue script in the protocol.
var DequeueScriptHash = dequeueScript.Hash()

// LoadDequeueScript loads the dequeue script, so the first run is an EVALSHA.
func LoadDequeueScript(ctx context.Context, rdb redis.UniversalClient) error {
	return dequeueScript.Load(ctx, rdb).Err()
}
