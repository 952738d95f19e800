package testutil

import (
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// DNSServer is an in-process authoritative name server (miekg/dns) on a
// loopback port, UDP and TCP, for DNSBL and reverse DNS tests. Records are
// given in zone-file syntax; a name without records answers NXDOMAIN with
// the SOA of its zone, if one was added (the negative TTL, RFC 2308).
type DNSServer struct {
	Addr string // 127.0.0.1:PORT, UDP and TCP

	mu      sync.Mutex
	records map[dnsKey][]dns.RR
	soas    []*dns.SOA
	rcodes  map[string]int
	hang    map[string]bool
	queries map[string]int
	release chan struct{}
}

type dnsKey struct {
	name  string
	qtype uint16
}

// StartDNS starts the server and stops it in t.Cleanup.
func StartDNS(t testing.TB) *DNSServer {
	t.Helper()
	s := &DNSServer{records: map[dnsKey][]dns.RR{}, rcodes: map[string]int{}, hang: map[string]bool{},
		queries: map[string]int{}, release: make(chan struct{})}
	var pc net.PacketConn
	var l net.Listener
	for try := 0; ; try++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("dns: %v", err)
		}
		l, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if try == 10 {
			t.Fatalf("dns: no port free for UDP and TCP: %v", err)
		}
	}
	s.Addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(s.serve)
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: l, Handler: h}
	for _, srv := range []*dns.Server{udp, tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
	}
	t.Cleanup(func() {
		close(s.release)
		udp.Shutdown()
		tcp.Shutdown()
	})
	return s
}

// Add adds records in zone-file syntax, e.g.
// "2.0.0.127.bl.test. 300 IN A 127.0.0.2" or
// "bl.test. 60 IN SOA ns.bl.test. admin.bl.test. 1 3600 600 86400 30".
func (s *DNSServer) Add(t testing.TB, records ...string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil || rr == nil {
			t.Fatalf("dns: record %q: %v", r, err)
		}
		if soa, ok := rr.(*dns.SOA); ok {
			s.soas = append(s.soas, soa)
			continue
		}
		k := dnsKey{strings.ToLower(rr.Header().Name), rr.Header().Rrtype}
		s.records[k] = append(s.records[k], rr)
	}
}

// Fail makes queries for name answer rcode (dns.RcodeServerFailure, ...).
func (s *DNSServer) Fail(name string, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcodes[dns.Fqdn(strings.ToLower(name))] = rcode
}

// Hang makes queries for name go unanswered until the test ends.
func (s *DNSServer) Hang(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hang[dns.Fqdn(strings.ToLower(name))] = true
}

// Queries is how many queries for name arrived.
func (s *DNSServer) Queries(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[dns.Fqdn(strings.ToLower(name))]
}

func (s *DNSServer) serve(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		dns.HandleFailed(w, req)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	s.mu.Lock()
	s.queries[name]++
	hang := s.hang[name]
	rcode, failed := s.rcodes[name]
	rrs := s.records[dnsKey{name, q.Qtype}]
	var soa *dns.SOA
	for _, z := range s.soas {
		if dns.IsSubDomain(z.Hdr.Name, name) {
			soa = z
		}
	}
	exists := false
	for k := range s.records {
		if k.name == name {
			exists = true
		}
	}
	s.mu.Unlock()
	if hang {
		<-s.release
		return
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	switch {
	case failed:
		m.Rcode = rcode
	case len(rrs) > 0:
		m.Answer = rrs
	default:
		if !exists {
			m.Rcode = dns.RcodeNameError
		}
		if soa != nil {
			m.Ns = []dns.RR{soa}
		}
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		// As a real server does: an answer too big for the client's
		// buffer is cut and flagged TC (RFC 1035 §4.2.1, RFC 6891 §7),
		// and the client retries over TCP.
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}
