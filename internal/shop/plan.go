package shop

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// A line is (site, order_number, course_id), so two participants of the same
// course in one order need two order numbers: the first participant of a
// course keeps the order's number, the k-th (k ≥ 2) gets
// "<order_number>-p<k>", counted in the order's line-item order. Shops keep
// that order on every redelivery, so the numbering is stable.
func participantNumber(base string, k int) string {
	if k <= 1 {
		return base
	}
	return fmt.Sprintf("%s-p%d", base, k)
}

// numbered is a line with its order number.
type numbered struct {
	number string
	line   Line
}

// number gives each line its order number; a repeat of a (course, email)
// pair is the same seat and is dropped. Lines without an email (seats of a
// refund that names no learner) are each a seat.
func number(base string, lines []Line) []numbered {
	seen := map[string]bool{}
	count := map[string]int{}
	var out []numbered
	for _, l := range lines {
		key := l.key() + "\x00" + strings.ToLower(l.Email)
		if seen[key] && l.Email != "" {
			continue
		}
		seen[key] = true
		count[l.key()]++
		out = append(out, numbered{participantNumber(base, count[l.key()]), l})
	}
	return out
}

// Orders are the fulfill requests a paid event makes: one per seat, stamped
// with the request id and the time; a seat refunded in the same body
// (Line.Refunded) keeps its number but is not placed.
func (s *Shop) Orders(ev Event, requestID string, now time.Time) []fulfillment.Order {
	base := s.OrderNumber(ev.OrderID)
	var out []fulfillment.Order
	for _, n := range number(base, ev.Placed) {
		if n.line.Refunded {
			continue
		}
		out = append(out, fulfillment.Order{
			Site: s.in.Site, OrderNumber: n.number, CourseID: n.line.CourseID, CourseUUID: n.line.CourseUUID, CourseMode: n.line.Mode,
			OrderPlaced: ev.At.UTC().Truncate(time.Second), Email: n.line.Email,
			EnrollUnregistered: s.in.EnrollUnregistered, Integration: s.in.Name,
			RequestID: requestID, AcceptedAt: now,
		})
	}
	return out
}

// LineReader reads the lines Coordinator knows for an order
// (pipeline.Service.Lines): fulfillment.ErrNotFound when none.
type LineReader interface {
	Lines(ctx context.Context, site, orderNumber string) ([]fulfillment.Line, error)
}

// known is a line Coordinator already has for the order.
type known struct {
	number string
	line   fulfillment.Line
	who    fulfillment.Ref // the learner, from the first task that names one
}

// maxParticipants bounds the participant order numbers read back for a
// refund.
const maxParticipants = maxSeats

// knownLines reads the order's lines and those of its extra participants
// (OrderLines), each with its learner.
func (s *Shop) knownLines(ctx context.Context, base string, r LineReader) ([]known, error) {
	lines, err := OrderLines(ctx, r, s.in.Site, base)
	if err != nil {
		return nil, err
	}
	out := make([]known, len(lines))
	for i, nl := range lines {
		out[i] = known{number: nl.OrderNumber, line: nl.Line}
		for _, t := range nl.Line.Tasks {
			if t.Ref.LMSUserID != 0 || t.Ref.Username != "" || t.Ref.Email != "" {
				out[i].who = t.Ref
				break
			}
		}
	}
	return out, nil
}

// Returns are the return requests a refund event makes, and a note for the
// log about seats it could not tell apart. A whole-order refund returns every
// known line of the order and every line the event names: for a course not
// known yet (a refund before the payment), the event carries the order's
// whole line list (a WooCommerce refunded order, a Stripe full refund read
// through the API), so its seats are numbered as a paid order's would be
// (a return before its fulfill: the later fulfill enrolls nobody). A partial refund returns
// at most the refunded seats (one Line each) of each course: the known lines
// whose learner the refund names; then, for the seats it names no known
// learner of, the course's other known lines only when there are no more of
// them than such seats — else which ones is unclear, nothing more is
// returned and the note says so (the operator uses POST /orders/return). A
// partial refund of a course not known yet returns nothing for it, with a
// note, unless the event also carries the paid order's lines (Placed).
func (s *Shop) Returns(ctx context.Context, ev Event, r LineReader, requestID string, now time.Time) ([]fulfillment.Return, string, error) {
	base := s.OrderNumber(ev.OrderID)
	knownLines, err := s.knownLines(ctx, base, r)
	if err != nil {
		return nil, "", err
	}
	at := ev.At.UTC().Truncate(time.Second)
	if at.IsZero() {
		at = now.Truncate(time.Second)
	}
	var out []fulfillment.Return
	done := map[string]bool{}
	add := func(number string, item Item, who fulfillment.Ref, email string) {
		if done[number+"\x00"+item.key()] {
			return
		}
		done[number+"\x00"+item.key()] = true
		ret := fulfillment.Return{
			Site: s.in.Site, OrderNumber: number, CourseID: item.CourseID, CourseUUID: item.CourseUUID, CourseMode: item.Mode,
			LMSUserID: who.LMSUserID, Username: who.Username, Email: who.Email,
			Integration: s.in.Name, ReturnedAt: at, RequestID: requestID, AcceptedAt: now,
		}
		if ret.LMSUserID == 0 && ret.Username == "" && ret.Email == "" {
			ret.Email = email
		}
		out = append(out, ret)
	}
	addKnown := func(k known) {
		add(k.number, Item{CourseID: k.line.CourseID, CourseUUID: k.line.CourseUUID, Mode: k.line.CourseMode}, k.who, "")
	}
	var notes []string
	// finish notes the returns that name no learner, which no known line
	// names either: their unenrollment needs the line's enrollment on record
	// (the ledger, or within worker.retention in Redis), else it fails
	// "learner unknown" for support.
	finish := func() ([]fulfillment.Return, string, error) {
		var nobody []string
		for _, r := range out {
			if r.LMSUserID == 0 && r.Username == "" && r.Email == "" {
				nobody = append(nobody, r.OrderNumber+" "+r.Ref().Item())
			}
		}
		if len(nobody) > 0 {
			notes = append(notes, fmt.Sprintf("the refund names no learner for %s and no known line gives one: unenrolled only if the line's enrollment is still on record, else failed (learner unknown); POST /orders/return with the learner",
				strings.Join(nobody, ", ")))
		}
		return out, strings.Join(notes, "; "), nil
	}
	knownCourse := map[string]bool{}
	for _, k := range knownLines {
		knownCourse[k.line.Item()] = true
	}
	if ev.ReturnAll {
		// Every known line; the event's lines only for the courses not
		// known yet (a refund before the payment), numbered as the paid
		// order will number them.
		for _, k := range knownLines {
			addKnown(k)
		}
		var unknown []Line
		for _, l := range ev.Returned {
			if !knownCourse[l.key()] {
				unknown = append(unknown, l)
			}
		}
		for _, n := range number(base, unknown) {
			add(n.number, Item{CourseID: n.line.CourseID, CourseUUID: n.line.CourseUUID, Mode: n.line.Mode}, fulfillment.Ref{}, n.line.Email)
		}
		return finish()
	}
	// A partial refund: the seats of a course not known yet can be told
	// apart only by the order's whole line list for it, which the event
	// carries when it is also the paid order (a WooCommerce order body with
	// refunds): its lines count as known, numbered as Orders numbers them.
	for _, n := range number(base, ev.Placed) {
		if !knownCourse[n.line.key()] {
			knownLines = append(knownLines, known{number: n.number,
				line: fulfillment.Line{CourseID: n.line.CourseID, CourseUUID: n.line.CourseUUID, CourseMode: n.line.Mode},
				who:  fulfillment.Ref{Email: n.line.Email}})
		}
	}
	var courses []string
	byCourse := map[string][]Line{}
	for _, l := range ev.Returned {
		if _, ok := byCourse[l.key()]; !ok {
			courses = append(courses, l.key())
		}
		byCourse[l.key()] = append(byCourse[l.key()], l)
	}
	for _, course := range courses {
		var ofCourse []known
		for _, k := range knownLines {
			if k.line.Item() == course {
				ofCourse = append(ofCourse, k)
			}
		}
		if len(ofCourse) == 0 {
			// A refund before the order, naming some of its seats:
			// which participant number each has depends on the order's
			// other lines of the course, which the refund does not
			// carry. Numbering them from the refund alone would record
			// bob's refund on alice's line.
			// The same when the order's lines were forgotten (Redis
			// only, after worker.retention): nobody is known either.
			notes = append(notes, fmt.Sprintf("%s: no line of the course on record (a refund before the order, or after its lines were forgotten without the ledger): which participant is unknown, none returned; POST /orders/return with the learner", course))
			continue
		}
		matched := map[int]bool{}
		unnamed := 0 // refunded seats that name no known learner
		for _, l := range byCourse[course] {
			found := false
			for i, k := range ofCourse {
				if l.Email != "" && !matched[i] && strings.EqualFold(k.who.Email, l.Email) {
					matched[i], found = true, true
					addKnown(k)
					break
				}
			}
			if !found {
				unnamed++
			}
		}
		var rest []known
		for i, k := range ofCourse {
			if !matched[i] {
				rest = append(rest, k)
			}
		}
		switch {
		case unnamed == 0 || len(rest) == 0:
		case len(rest) <= unnamed:
			for _, k := range rest {
				addKnown(k)
			}
		default:
			notes = append(notes, fmt.Sprintf("%s: %d refunded seats name no learner and %d participants remain: unclear which, none returned; return them with POST /orders/return",
				course, unnamed, len(rest)))
		}
	}
	return finish()
}
