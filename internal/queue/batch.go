package queue

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// call is one request's Redis commands waiting for their batch: add queues
// them on the batch's pipeline, keeping the commands to read afterwards.
type call struct {
	add  func(ctx context.Context, p redis.Pipeliner)
	done chan error
}

// batcher runs requests' commands on Coordinator's own keys (the order
// index) with group commit: concurrent requests share one pipelined round
// trip to Redis, and each waits for the batch that carries its commands, so
// nothing is answered before it is written. Under load this turns one round
// trip per accept into one per batch.
//
// A call's error is its own commands' first error, or the batch's when the
// round trip failed: a call is answered success only when Redis answered
// every one of its commands.
type batcher struct {
	rdb redis.UniversalClient
	in  chan call
}

const maxBatch = 512

// newBatcher starts a batcher. It never waits to fill a batch: when the
// service is idle a lone call goes out at once.
func newBatcher(rdb redis.UniversalClient) *batcher {
	b := &batcher{rdb: rdb, in: make(chan call, maxBatch)}
	go b.loop()
	return b
}

// do runs add's commands in the next batch and returns once the batch was
// executed; add's commands can be read then. The error is the call's.
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
// runs it in one pipeline.
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
		for i, err := range b.exec(ctx, batch) {
			batch[i].done <- err
		}
		cancel()
	}
}

// exec runs the calls in one pipeline and returns each call's error.
func (b *batcher) exec(ctx context.Context, batch []call) []error {
	pipe := b.rdb.Pipeline()
	ends := make([]int, len(batch))
	for i, c := range batch {
		c.add(ctx, pipe)
		ends[i] = pipe.Len()
	}
	cmds, err := pipe.Exec(ctx)
	errs := make([]error, len(batch))
	if err != nil && !isReply(err) {
		// The round trip failed (connection, timeout): whatever replies
		// were read, the batch is answered as failed, every call of it.
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	start := 0
	for i, end := range ends {
		for _, cmd := range cmds[start:end] {
			if e := cmd.Err(); e != nil && !errors.Is(e, redis.Nil) {
				errs[i] = e
				break
			}
		}
		start = end
	}
	return errs
}

// isReply reports whether err is an error reply of Redis to one command, not
// a failure of the round trip.
func isReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)
}
