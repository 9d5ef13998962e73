package shop

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// BaseOrderNumber is the order number of a shop's order that number belongs
// to: number without the "-p<k>" (k ≥ 2) of a course's k-th participant
// (participantNumber).
func BaseOrderNumber(number string) string {
	i := strings.LastIndex(number, "-p")
	if i <= 0 {
		return number
	}
	k, err := strconv.Atoi(number[i+2:])
	if err != nil || k < 2 || strconv.Itoa(k) != number[i+2:] {
		return number
	}
	return number[:i]
}

// NumberedLine is a line of a shop's order under the order number it has:
// the order's own, or a participant's ("<order_number>-p<k>").
type NumberedLine struct {
	OrderNumber string
	Line        fulfillment.Line
}

// OrderLines reads every line of a shop's order, base being the order's own
// number: its lines, then those of its extra participants, in order. An
// order Coordinator does not know has none.
func OrderLines(ctx context.Context, r LineReader, site, base string) ([]NumberedLine, error) {
	var out []NumberedLine
	for k := 1; k <= maxParticipants; k++ {
		n := participantNumber(base, k)
		lines, err := r.Lines(ctx, site, n)
		if errors.Is(err, fulfillment.ErrNotFound) {
			break // numbered densely: no k-th participant, no later one
		}
		if err != nil {
			return nil, fmt.Errorf("read order %s: %w", n, err)
		}
		for _, l := range lines {
			out = append(out, NumberedLine{OrderNumber: n, Line: l})
		}
	}
	return out, nil
}
