package queue

import "time"

// For the tests of package queue_test.

const AsynqVersion = asynqVersion

func TaskMessage(typ string, payload []byte, id, queue string, retry int, timeout, retention time.Duration) []byte {
	return taskMessage(typ, payload, id, queue, retry, timeout, retention)
}
