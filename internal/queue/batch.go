package queue

import (
	"context"

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
	rdb redis.UniversalClient
	in  chan call
}

const maxBatch = 512

func newBatcher(rdb redis.UniversalClient) *batcher {
	b := &batcher{rdb: rdb, in: make(chan call, maxBatch)}
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
// runs it in one pipeline. It never waits to fill a batch: when the service
// is idle a lone call goes out at once.
func (b *batcher) loop() {
	batch := make([]call, 0, maxBatch)
	for c := range b.in {
		batch = append(batch[:0], c)
	fill:
		for len(batch) < maxBatch {
			select {
			case c := <-b.in:
				batch = append(batch, c)
			default:
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
