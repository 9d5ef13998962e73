package queue

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// call is one request's Redis commands waiting for their batch: add queues
// them on the batch's pipeline, keeping the commands to read afterwards.
type call struct {
	add  func(ctx context.Context, p redis.Pipeliner)
	done chan error
}

// batcher runs requests' commands with group commit: concurrent requests
// share one pipelined round trip to Redis, and each waits for the batch that
// carries its commands, so nothing is answered before it is written. Under
// load this turns one round trip per request into one per batch. It serves
// the accepts' order-index writes (with the checks riding on them) and the
// workers' checks before each attempt.
type batcher struct {
	rdb    redis.UniversalClient
	in     chan call
	linger time.Duration
}

const maxBatch = 512

// newBatcher starts a batcher. With linger > 0 a batch waits that long for
// company after its first call: fewer, fuller round trips for callers that
// can spare the time (the workers' checks, next to LMS calls of tens of
// milliseconds); 0 sends whatever is waiting at once (the accepts).
func newBatcher(rdb redis.UniversalClient, linger time.Duration) *batcher {
	b := &batcher{rdb: rdb, in: make(chan call, maxBatch), linger: linger}
	go b.loop()
	return b
}

// do runs add's commands in the next batch and returns once the batch was
// executed; add's commands can be read then. The error is the batch's.
func (b *batcher) do(ctx context.Context, add func(ctx context.Context, p redis.Pipeliner)) error {
	c := call{add: add, done: make(chan error, 1)}
	select {
	case b.in <- c:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// loop takes whatever is waiting — at least one call, at most a batch — and
// runs it in one pipeline. Without linger it never waits to fill a batch:
// when the service is idle a lone call goes out at once.
func (b *batcher) loop() {
	batch := make([]call, 0, maxBatch)
	for c := range b.in {
		batch = append(batch[:0], c)
		var timeout <-chan time.Time
		if b.linger > 0 {
			timeout = time.After(b.linger)
		}
	fill:
		for len(batch) < maxBatch {
			if timeout == nil {
				select {
				case c := <-b.in:
					batch = append(batch, c)
				default:
					break fill
				}
				continue
			}
			select {
			case c := <-b.in:
				batch = append(batch, c)
			case <-timeout:
				break fill
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), enqueueTimeout)
		pipe := b.rdb.Pipeline()
		for _, c := range batch {
			c.add(ctx, pipe)
		}
		_, err := pipe.Exec(ctx)
		cancel()
		for _, c := range batch {
			c.done <- err
		}
	}
}
