package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// call is one request's Redis commands waiting for their batch: add queues
// them on the batch's pipeline, keeping the commands to read afterwards. add
// may run more than once (a batch resent after Redis lost its scripts); each
// run replaces the commands of the last.
type call struct {
	add  func(ctx context.Context, p redis.Pipeliner)
	done chan error
}

// batcher runs requests' commands with group commit: concurrent requests
// share one pipelined round trip to Redis, and each waits for the batch that
// carries its commands, so nothing is answered before it is written. Under
// load this turns one round trip per request into one per batch. It serves
// the accepts (the enqueue script with its index write and checks), the
// workers' checks before each attempt, and the outcomes of the attempts the
// worker's fetch ran (fetch.go).
//
// A call's error is its own commands' first error, or the batch's when the
// round trip failed: a call is answered success only when Redis answered
// every one of its commands. Scripts run by EVALSHA; when Redis answers
// NOSCRIPT (restarted, failed over, SCRIPT FLUSH), the batcher loads its
// scripts and resends the calls that got it.
type batcher struct {
	rdb     redis.UniversalClient
	in      chan call
	linger  time.Duration
	scripts []*redis.Script
}

const maxBatch = 512

// newBatcher starts a batcher. With linger > 0 a batch waits that long for
// company after its first call: fewer, fuller round trips for callers that
// can spare the time (the workers' checks, next to LMS calls of tens of
// milliseconds); 0 sends whatever is waiting at once (the accepts). scripts
// are the scripts its calls run, reloaded on NOSCRIPT.
func newBatcher(rdb redis.UniversalClient, linger time.Duration, scripts ...*redis.Script) *batcher {
	b := &batcher{rdb: rdb, in: make(chan call, maxBatch), linger: linger, scripts: scripts}
	go b.loop()
	return b
}

// close ends the batcher's loop; no call may follow.
func (b *batcher) close() { close(b.in) }

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
		b.run(ctx, batch)
		cancel()
	}
}

// run executes a batch and answers each of its calls.
func (b *batcher) run(ctx context.Context, batch []call) {
	errs := b.exec(ctx, batch)
	var again []call
	var againAt []int
	for i, err := range errs {
		if isNoScript(err) {
			again, againAt = append(again, batch[i]), append(againAt, i)
		}
	}
	if len(again) > 0 {
		// Redis lost its script cache: load the scripts and resend only
		// the calls that did not run (others may have; a resend of those
		// would find their own task and report a conflict).
		err := b.load(ctx)
		if err == nil {
			for k, e := range b.exec(ctx, again) {
				errs[againAt[k]] = e
			}
		} else {
			for _, i := range againAt {
				errs[i] = err
			}
		}
	}
	for i, c := range batch {
		c.done <- errs[i]
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

// load loads the batcher's scripts (on every master of a cluster).
func (b *batcher) load(ctx context.Context) error {
	for _, s := range b.scripts {
		if err := s.Load(ctx, b.rdb).Err(); err != nil {
			return fmt.Errorf("load script: %w", err)
		}
	}
	return nil
}

// isReply reports whether err is an error reply of Redis to one command, not
// a failure of the round trip.
func isReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)
}

func isNoScript(err error) bool { return redis.HasErrorPrefix(err, "NOSCRIPT") }
