package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// The gauge is the age of the oldest open line, 0 without one, and absent
// when the look-up fails (a wrong age would mislead the alert).
func TestOldestOpenLine(t *testing.T) {
	now := time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		at   time.Time
		ok   bool
		err  error
		want string
	}{
		{"open line", now.Add(-90 * time.Minute), true, nil, `coordinator_oldest_open_line_age_seconds{queue="q"} 5400`},
		{"none", time.Time{}, false, nil, `coordinator_oldest_open_line_age_seconds{queue="q"} 0`},
		{"unreadable", time.Time{}, false, errors.New("down"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New()
			m.reg.MustRegister(&oldestCollector{queue: "q", now: func() time.Time { return now },
				oldest: func(context.Context) (time.Time, bool, error) { return tc.at, tc.ok, tc.err }})
			got := exposition(t, m)
			if tc.want == "" {
				if strings.Contains(got, "coordinator_oldest_open_line_age_seconds{") {
					t.Errorf("gauge exported although the look-up failed:\n%s", got)
				}
				return
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("want %s in:\n%s", tc.want, got)
			}
		})
	}
}
