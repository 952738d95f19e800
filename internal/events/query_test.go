package events

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestNormalize(t *testing.T) {
	since := time.Date(2026, 11, 25, 11, 0, 0, 0, time.FixedZone("CET", 3600))
	tests := []struct {
		name    string
		in      Query
		want    Query
		wantErr bool
	}{
		{name: "defaults", in: Query{},
			want: Query{Sort: "started_at", Order: "desc", Limit: 100}},
		{name: "limit kept", in: Query{Limit: 500},
			want: Query{Sort: "started_at", Order: "desc", Limit: 500}},
		{name: "limit clamped", in: Query{Limit: 501},
			want: Query{Sort: "started_at", Order: "desc", Limit: 500}},
		{name: "case folded", in: Query{Sort: "IMPACT", Order: "ASC"},
			want: Query{Sort: "impact", Order: "asc", Limit: 100}},
		{name: "times to UTC", in: Query{Since: since, Until: since},
			want: Query{Sort: "started_at", Order: "desc", Limit: 100, Since: since.UTC(), Until: since.UTC()}},
		{name: "every field", in: Query{Type: "dos", Source: "192.0.2.1", Status: "ended", MinImpact: 5, Sort: "source", Order: "asc", Limit: 7, Offset: 3},
			want: Query{Type: "dos", Source: "192.0.2.1", Status: "ended", MinImpact: 5, Sort: "source", Order: "asc", Limit: 7, Offset: 3}},
		{name: "unknown sort", in: Query{Sort: "id"}, wantErr: true},
		{name: "unknown order", in: Query{Order: "up"}, wantErr: true},
		{name: "unknown status", in: Query{Status: "done"}, wantErr: true},
		{name: "unknown type", in: Query{Type: "harvest"}, wantErr: true},
		{name: "negative limit", in: Query{Limit: -1}, wantErr: true},
		{name: "negative offset", in: Query{Offset: -1}, wantErr: true},
		{name: "negative min_impact", in: Query{MinImpact: -1}, wantErr: true},
		{name: "until before since", in: Query{Since: since, Until: since.Add(-time.Nanosecond)}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.Normalize()
			if tt.wantErr {
				if !errors.Is(err, ErrBadQuery) {
					t.Fatalf("Normalize(%+v) error = %v, want one wrapping ErrBadQuery", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Normalize(%+v): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("Normalize(%+v)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseQuery(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	defaults := Query{Sort: "started_at", Order: "desc", Limit: 100}
	tests := []struct {
		raw     string
		want    Query
		wantErr string // substring of the error; "" for success
	}{
		{raw: "", want: defaults},
		{raw: "type=&source=&status=&min_impact=&since=&until=&sort=&order=&limit=&offset=", want: defaults},
		{raw: "type=directory_harvest&source=203.0.113.7&status=active&min_impact=10&sort=impact&order=asc&limit=20&offset=40",
			want: Query{Type: "directory_harvest", Source: "203.0.113.7", Status: "active", MinImpact: 10,
				Sort: "impact", Order: "asc", Limit: 20, Offset: 40}},
		{raw: "source=2001%3Adb8%3A1%3A2%3A%3A%2F64",
			want: Query{Source: "2001:db8:1:2::/64", Sort: "started_at", Order: "desc", Limit: 100}},
		{raw: "since=2026-11-25T10:00:00Z&until=2026-11-25T11:00:00.5%2B01:00",
			want: Query{Since: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC),
				Until: time.Date(2026, 11, 25, 10, 0, 0, 5e8, time.UTC), Sort: "started_at", Order: "desc", Limit: 100}},
		{raw: "since=24h", want: Query{Since: now.Add(-24 * time.Hour), Sort: "started_at", Order: "desc", Limit: 100}},
		{raw: "since=90m&until=30m", want: Query{Since: now.Add(-90 * time.Minute), Until: now.Add(-30 * time.Minute),
			Sort: "started_at", Order: "desc", Limit: 100}},
		{raw: "limit=1000", want: Query{Sort: "started_at", Order: "desc", Limit: 500}},
		{raw: "limit=99999999999999999", want: Query{Sort: "started_at", Order: "desc", Limit: 500}},
		{raw: "limit=99999999999999999999", wantErr: "out of range"},
		{raw: "unknown=1&pretty=true", want: defaults},
		{raw: "limit=-1", wantErr: "negative limit"},
		{raw: "limit=ten", wantErr: "not a number"},
		{raw: "offset=-5", wantErr: "negative offset"},
		{raw: "offset=99999999999", wantErr: "out of range"},
		{raw: "min_impact=1.5", wantErr: "not a number"},
		{raw: "sort=id", wantErr: "unknown sort"},
		{raw: "order=random", wantErr: "unknown order"},
		{raw: "status=gone", wantErr: "unknown status"},
		{raw: "type=harvest", wantErr: "unknown type"},
		{raw: "since=yesterday", wantErr: "since"},
		{raw: "since=-1h", wantErr: "since"},
		{raw: "until=2026-13-01T00:00:00Z", wantErr: "until"},
		{raw: "since=1h&until=2h", wantErr: "before since"},
		{raw: "type=dos&type=spam_attack", wantErr: "type given 2 times"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			values, err := url.ParseQuery(tt.raw)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseQueryAt(values, now)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrBadQuery) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseQueryAt(%q) error = %v, want ErrBadQuery mentioning %q", tt.raw, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseQueryAt(%q): %v", tt.raw, err)
			}
			if !got.Since.Equal(tt.want.Since) || !got.Until.Equal(tt.want.Until) {
				t.Errorf("ParseQueryAt(%q) since/until = %v/%v, want %v/%v", tt.raw, got.Since, got.Until, tt.want.Since, tt.want.Until)
			}
			got.Since, got.Until, tt.want.Since, tt.want.Until = time.Time{}, time.Time{}, time.Time{}, time.Time{}
			if got != tt.want {
				t.Errorf("ParseQueryAt(%q)\n got %+v\nwant %+v", tt.raw, got, tt.want)
			}
		})
	}
}

// TestEventQuerySQL pins the SQL the builder writes in both bind styles,
// so that the PostgreSQL store can rely on it.
func TestEventQuerySQL(t *testing.T) {
	since := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	q, err := Query{Type: "dos", Source: "192.0.2.1", Status: "active", MinImpact: 3, Since: since,
		Until: since.Add(time.Hour), Sort: "impact", Order: "asc", Limit: 10, Offset: 20}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	const where = " WHERE type = ? AND source = ? AND status = ? AND impact >= ? AND started_at >= ? AND started_at < ?"
	tests := []struct {
		name      string
		dialect   sqlDialect
		count     string
		page      string
		sinceWant any
	}{
		{name: "sqlite", dialect: sqliteDialect(),
			count:     "SELECT count(*) FROM events" + where,
			page:      "SELECT " + eventColumns + " FROM events" + where + " ORDER BY impact ASC, id ASC LIMIT ? OFFSET ?",
			sinceWant: since.UnixNano()},
		{name: "postgres", dialect: sqlDialect{bind: dollarBind, timeArg: func(t time.Time) any { return t }},
			count: "SELECT count(*) FROM events WHERE type = $1 AND source = $2 AND status = $3 AND impact >= $4 AND started_at >= $5 AND started_at < $6",
			page: "SELECT " + eventColumns + " FROM events WHERE type = $1 AND source = $2 AND status = $3 AND impact >= $4 AND started_at >= $5 AND started_at < $6" +
				" ORDER BY impact ASC, id ASC LIMIT $7 OFFSET $8",
			sinceWant: since},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			count := tt.dialect.eventCount(q)
			page, err := tt.dialect.eventPage(q, pageOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if count.text != tt.count {
				t.Errorf("count SQL\n got %s\nwant %s", count.text, tt.count)
			}
			if page.text != tt.page {
				t.Errorf("page SQL\n got %s\nwant %s", page.text, tt.page)
			}
			if len(count.args) != 6 || len(page.args) != 8 {
				t.Fatalf("got %d count args and %d page args, want 6 and 8", len(count.args), len(page.args))
			}
			if count.args[4] != tt.sinceWant || page.args[6] != 10 || page.args[7] != 20 {
				t.Errorf("args: since %v, limit %v, offset %v", count.args[4], page.args[6], page.args[7])
			}
		})
	}
}

func TestEventPageHints(t *testing.T) {
	q, err := Query{Type: "dos", Status: "ended", Since: t0, Sort: "impact", Limit: 10}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	const where = " WHERE type = ? AND status = ? AND started_at >= ?"
	tests := []struct {
		name        string
		total, size int
		want        string
	}{
		{name: "few matches are collected and sorted", total: 50, size: 100000,
			want: where + " ORDER BY +impact DESC, id DESC"},
		{name: "many matches: walk the sort index, keep the (type, impact) index",
			total: 50000, size: 100000, want: " WHERE type = ? AND +status = ? AND +started_at >= ? ORDER BY impact DESC, id DESC"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			page, err := sqliteDialect().eventPage(q, sqlitePageOptions(q, tt.total, int64(tt.size)))
			if err != nil {
				t.Fatal(err)
			}
			want := "SELECT " + eventColumns + " FROM events" + tt.want + " LIMIT ? OFFSET ?"
			if page.text != want {
				t.Errorf("page SQL\n got %s\nwant %s", page.text, want)
			}
		})
	}
}

func FuzzParseQuery(f *testing.F) {
	for _, seed := range []string{
		"",
		"type=dos&sort=impact&order=asc&limit=20&offset=5",
		"since=24h&until=2026-11-25T10:00:00Z&min_impact=3",
		"since=9999999999h",
		"until=0001-01-01T00:00:00Z&since=9999-12-31T23:59:59.999999999Z",
		"limit=-0&offset=%zz&type=a&type=b",
		"status=active&source=2001%3Adb8%3A%3A%2F64",
	} {
		f.Add(seed)
	}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, raw string) {
		// url.ParseQuery returns what it could parse along with its
		// error; the HTTP server hands ParseQuery exactly that.
		values, _ := url.ParseQuery(raw)
		q, err := ParseQueryAt(values, now)
		if err != nil {
			if !errors.Is(err, ErrBadQuery) {
				t.Fatalf("ParseQueryAt(%q) error %v does not wrap ErrBadQuery", raw, err)
			}
			return
		}
		if _, ok := sortColumn(q.Sort); !ok || (q.Order != OrderAsc && q.Order != OrderDesc) ||
			q.Limit < 1 || q.Limit > MaxLimit || q.Offset < 0 || q.MinImpact < 0 {
			t.Fatalf("ParseQueryAt(%q) = %+v, not a normalized query", raw, q)
		}
		if again, err := q.Normalize(); err != nil || again != q {
			t.Fatalf("Normalize is not idempotent on %+v: %+v, %v", q, again, err)
		}
		if _, err := sqliteDialect().eventPage(q, pageOptions{}); err != nil {
			t.Fatalf("eventPage(%+v): %v", q, err)
		}
	})
}
