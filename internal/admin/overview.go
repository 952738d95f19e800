package admin

import (
	"cmp"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"mxguard/internal/events"
	"mxguard/internal/metrics"
)

// The overview is the console's landing page: what is attacking now, what
// is blocked, the last hour's traffic, the delivery servers and the spool.
// Its live part is also served alone (GET /overview/live), which a small
// script fetches every few seconds and swaps in; without script the page
// is complete, and a reload refreshes it.

// overviewActiveLimit bounds the active events listed; past it the page
// links to the full list.
const overviewActiveLimit = 50

// overviewNewestBlocks is how many of the newest blocks are listed.
const overviewNewestBlocks = 5

// overviewView is the overview page.
type overviewView struct {
	Active      []events.Event
	ActiveTotal int
	ByType      []typeCount
	Blocks      int
	Newest      []events.Block
	Suspensions int
	HaveSusp    bool
	Chart       chartView
	Status      statusView
	Refresh     int // seconds between live refreshes
}

// ActiveMore: there are more active events than listed.
func (v *overviewView) ActiveMore() bool { return v.ActiveTotal > len(v.Active) }

// typeCount is the active events of one type.
type typeCount struct {
	Type   string
	Count  int
	Shadow int // of which shadow-mode events
	Impact int64
}

// overviewRefresh is how often the script refreshes the live part.
const overviewRefresh = 5 * time.Second

func (c *console) overviewPage(w http.ResponseWriter, r *http.Request) {
	v, status, msg := c.overview(r)
	c.render(w, r, status, "overview", page{Title: "Overview", Nav: "overview", Error: msg, Data: v})
}

// overviewLive is the live part of the overview alone: the fragment the
// page's script swaps in.
func (c *console) overviewLive(w http.ResponseWriter, r *http.Request) {
	v, status, msg := c.overview(r)
	c.renderFragment(w, r, status, "overview", "live", page{Nav: "overview", Error: msg, Data: v})
}

func (c *console) overview(r *http.Request) (*overviewView, int, string) {
	v := &overviewView{Status: c.s.status(), Refresh: int(overviewRefresh / time.Second)}
	status, msg := http.StatusOK, ""
	_, res, err := c.s.queryEvents(r.Context(), url.Values{
		"status": {events.StatusActive}, "sort": {events.SortStartedAt}, "order": {events.OrderDesc},
		"limit": {strconv.Itoa(overviewActiveLimit)},
	})
	if err != nil {
		status, msg = c.s.classify(r, err)
	}
	v.Active, v.ActiveTotal = res.Events, res.Total
	byType := map[string]*typeCount{}
	for _, e := range v.Active {
		tc := byType[e.Type]
		if tc == nil {
			tc = &typeCount{Type: e.Type}
			byType[e.Type] = tc
		}
		tc.Count++
		tc.Impact += e.Impact
		if e.Mode == events.ModeShadow {
			tc.Shadow++
		}
	}
	for _, tc := range byType {
		v.ByType = append(v.ByType, *tc)
	}
	slices.SortFunc(v.ByType, func(a, b typeCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Type, b.Type))
	})
	blocks := c.s.blocks()
	v.Blocks, v.Newest = len(blocks), blocks[:min(len(blocks), overviewNewestBlocks)]
	if c.s.o.Suspensions != nil {
		v.HaveSusp, v.Suspensions = true, len(c.s.o.Suspensions.Suspensions())
	}
	if c.s.o.Metrics != nil && c.s.o.Metrics.Recent != nil {
		v.Chart = newChart(c.s.o.Metrics.Recent.LastHour())
	}
	return v, status, msg
}

// --- the last hour's chart ---

// Chart geometry, in SVG user units: one bar per minute.
const (
	chartBarW   = 10
	chartGap    = 2
	chartHeight = 120
	chartTop    = 16 // room for the scale label
	chartLeft   = 40 // room for the axis labels
	chartRight  = 16 // room for the last tick's label
)

// chartView is the server-drawn SVG of the last hour: per minute, a bar of
// the messages passed with the refused stacked on top, and a dot for the
// refused connections.
type chartView struct {
	Have          bool
	Width, Height int
	Left, Top     int
	Base          int // y of the zero line
	Bars          []chartBar
	Max           int64
	Passed        int64 // totals over the hour
	Refused       int64
	ConnRefused   int64
	Ticks         []chartTick
}

type chartBar struct {
	X, W             int
	PassedY, PassedH int
	RefusedY         int
	RefusedH         int
	ConnY            int  // centre of the refused-connections dot
	Conn             bool // any refused connection this minute
	Title            string
}

type chartTick struct {
	X     int
	Label string
}

// newChart scales minutes into chart geometry. The scale is the busiest
// minute (messages or refused connections), so an attack shows as tall
// bars however quiet the rest of the hour was.
func newChart(minutes []metrics.Minute) chartView {
	v := chartView{Have: true, Left: chartLeft, Top: chartTop,
		Width:  chartLeft + len(minutes)*(chartBarW+chartGap) + chartRight,
		Height: chartTop + chartHeight + 20, Base: chartTop + chartHeight}
	for _, m := range minutes {
		v.Max = max(v.Max, m.Passed+m.Refused, m.ConnRefused)
		v.Passed += m.Passed
		v.Refused += m.Refused
		v.ConnRefused += m.ConnRefused
	}
	scale := func(n int64) int {
		if v.Max == 0 {
			return 0
		}
		return int((n*chartHeight + v.Max - 1) / v.Max) // round up: one message is never invisible
	}
	for i, m := range minutes {
		x := chartLeft + i*(chartBarW+chartGap)
		ph, rh := scale(m.Passed), scale(m.Refused)
		if ph+rh > chartHeight { // two round-ups past the top
			rh = chartHeight - ph
		}
		b := chartBar{X: x, W: chartBarW, PassedY: v.Base - ph, PassedH: ph, RefusedY: v.Base - ph - rh, RefusedH: rh,
			Conn: m.ConnRefused > 0, ConnY: v.Base - scale(m.ConnRefused),
			Title: m.Start.UTC().Format("15:04") + ": " + strconv.FormatInt(m.Passed, 10) + " passed, " +
				strconv.FormatInt(m.Refused, 10) + " refused, " + strconv.FormatInt(m.ConnRefused, 10) + " connections refused"}
		v.Bars = append(v.Bars, b)
		if left := len(minutes) - 1 - i; left%15 == 0 {
			label := "now"
			if left > 0 {
				label = "−" + strconv.Itoa(left) + "m"
			}
			v.Ticks = append(v.Ticks, chartTick{X: x + chartBarW/2, Label: label})
		}
	}
	return v
}
