package main

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mxguard/internal/testutil"
)

// The message-data target (DESIGN.md): 16 concurrent 24 MiB messages
// through the gateway with the gateway's peak RSS under 200 MiB, every one
// delivered intact.
const (
	largeClients  = 16
	largeSize     = 24 << 20
	largeRSSLimit = 200 << 20
)

// hashSink is a downstream that keeps nothing but a SHA-256 and a length
// per message, of the bytes from its Subject line on (the Received line
// mxguard prepends is skipped), so 384 MiB in flight cost it no memory.
type hashSink struct {
	ln  net.Listener
	srv *smtp.Server
	mu  sync.Mutex
	got map[string]sinkDigest // by Subject
}

type sinkDigest struct {
	sum  [sha256.Size]byte
	size int64
}

func startHashSink(t testing.TB, addr string) *hashSink {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	h := &hashSink{ln: ln, got: map[string]sinkDigest{}}
	h.srv = smtp.NewServer(h)
	h.srv.Domain = "sink.test"
	// The rig's kill -9 at cleanup resets the relay's pooled connections.
	h.srv.ErrorLog = log.New(io.Discard, "", 0)
	go h.srv.Serve(ln)
	t.Cleanup(func() { h.srv.Close() })
	return h
}

func (h *hashSink) NewSession(*smtp.Conn) (smtp.Session, error) { return hashSession{h}, nil }

type hashSession struct{ h *hashSink }

func (hashSession) Reset()                               {}
func (hashSession) Logout() error                        { return nil }
func (hashSession) Mail(string, *smtp.MailOptions) error { return nil }
func (hashSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s hashSession) Data(r io.Reader) error {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("no Subject line: %w", err)
		}
		if subject, ok := strings.CutPrefix(line, "Subject: "); ok {
			sum := sha256.New()
			sum.Write([]byte(line))
			n, err := io.Copy(sum, br)
			if err != nil {
				return err
			}
			s.h.mu.Lock()
			s.h.got[strings.TrimSpace(subject)] = sinkDigest{size: n + int64(len(line)), sum: [sha256.Size]byte(sum.Sum(nil))}
			s.h.mu.Unlock()
			return nil
		}
	}
}

func (h *hashSink) digest(subject string) (sinkDigest, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	d, ok := h.got[subject]
	return d, ok
}

// sendLarge sends one generated message and returns its digest.
func sendLarge(addr, subject string) (sinkDigest, error) {
	c, err := smtp.Dial(addr)
	if err != nil {
		return sinkDigest{}, err
	}
	defer c.Close()
	if err := c.Hello("bench.test"); err != nil {
		return sinkDigest{}, err
	}
	if err := c.Mail("bench@remote.test", nil); err != nil {
		return sinkDigest{}, err
	}
	if err := c.Rcpt("alice@example.test", nil); err != nil {
		return sinkDigest{}, err
	}
	w, err := c.Data()
	if err != nil {
		return sinkDigest{}, err
	}
	sum := sha256.New()
	n, err := io.Copy(w, io.TeeReader(testutil.LargeMessage(subject, largeSize), sum))
	if err != nil {
		return sinkDigest{}, err
	}
	if err := w.Close(); err != nil {
		return sinkDigest{}, err
	}
	return sinkDigest{size: n, sum: [sha256.Size]byte(sum.Sum(nil))}, c.Quit()
}

// sendAll sends largeClients messages at once and returns their digests
// by subject.
func sendAll(b *testing.B, addr, prefix string) map[string]sinkDigest {
	var mu sync.Mutex
	var wg sync.WaitGroup
	sent := map[string]sinkDigest{}
	for i := range largeClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			subject := fmt.Sprintf("%s-%d", prefix, i)
			d, err := sendLarge(addr, subject)
			if err != nil {
				b.Errorf("%s: %v", subject, err)
				return
			}
			mu.Lock()
			sent[subject] = d
			mu.Unlock()
		}()
	}
	wg.Wait()
	return sent
}

// checkDelivered fails the benchmark unless every sent message reached
// the sink with the same length and SHA-256.
func checkDelivered(b *testing.B, sink *hashSink, sent map[string]sinkDigest) {
	for subject, want := range sent {
		got, ok := sink.digest(subject)
		switch {
		case !ok:
			b.Errorf("%s never reached the sink", subject)
		case got != want:
			b.Errorf("%s altered: %d bytes at the sink, %d sent, or a different SHA-256", subject, got.size, want.size)
		}
	}
}

// peakRSS is VmHWM of process pid: the most memory it ever had resident.
func peakRSS(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmHWM in /proc status")
	return 0
}

// reportLarge reports throughput and the peak RSS of the mxguard
// process, and fails past the target.
func reportLarge(b *testing.B, r *rig, bytes int64) {
	hwm := peakRSS(b, r.cmd.Process.Pid)
	b.ReportMetric(float64(bytes)/(1<<20)/b.Elapsed().Seconds(), "MiB/s")
	b.ReportMetric(float64(hwm)/(1<<20), "peak-RSS-MiB")
	if hwm >= largeRSSLimit {
		b.Errorf("peak RSS of mxguard %d MiB, target under %d MiB", hwm>>20, largeRSSLimit>>20)
	}
}

// BenchmarkLargeMessages runs `mxguard serve` and sends 16 messages of
// 24 MiB at once per iteration from 16 clients (dot-stuffed lines
// included), then reports the peak RSS of the mxguard process (VmHWM) and
// the throughput; every message is checked at the sink by SHA-256.
//
//	relay: client → mxguard → sink, pass-through.
//	spool: every server down: the 16 are spooled (fsync), then the sink
//	       comes up and they are unspooled to it.
//
// go test -run '^$' -bench LargeMessages -benchtime 1x ./cmd/mxguard/
func BenchmarkLargeMessages(b *testing.B) {
	b.Run("relay", func(b *testing.B) {
		sink := startHashSink(b, "127.0.0.1:0")
		r := newRig(b, sink.ln.Addr().String(), "rules: []\n")
		r.start()
		var total int64
		for i := 0; b.Loop(); i++ {
			sent := sendAll(b, r.smtpAddr, fmt.Sprintf("relay-%d", i))
			checkDelivered(b, sink, sent)
			total += int64(len(sent)) * largeSize
		}
		reportLarge(b, r, total)
	})
	b.Run("spool", func(b *testing.B) {
		// The sink's address is fixed before it listens: the rig starts
		// with its only server down, and the sink appears later.
		addr := testutil.FreeAddr(b)
		r := newRig(b, addr, "rules: []\nspool: {delay: 100ms}\n")
		r.start()
		var total int64
		for i := 0; b.Loop(); i++ {
			r.waitSpool("spooling", func(st string, _ int) bool { return st == "spooling" })
			sent := sendAll(b, r.smtpAddr, fmt.Sprintf("spool-%d", i))
			if _, n := r.spool(); n != len(sent) {
				b.Fatalf("spool holds %d messages, %d were sent", n, len(sent))
			}
			sink := startHashSink(b, addr)
			r.waitSpool("drained", func(_ string, n int) bool { return n == 0 })
			checkDelivered(b, sink, sent)
			total += int64(len(sent)) * largeSize
			sink.srv.Close() // down again for the next iteration
			waitClosed(b, addr)
		}
		reportLarge(b, r, total)
	})
}

// waitClosed waits until nothing accepts connections on addr.
func waitClosed(b *testing.B, addr string) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatalf("%s still accepts connections", addr)
}
