package batv

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mxguard/internal/address"
	"mxguard/internal/testutil"
)

var testKey = []byte("0123456789abcdef-test-key")

func newSigner(t *testing.T, clock Clock) *Signer {
	t.Helper()
	s, err := New(testKey, Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The tag is the draft's prvs=KDDDSSSSSS=local@domain, computed here
// independently: K 0, DDD the expiry day mod 1000, SSSSSS 3 bytes of
// HMAC-SHA1 over "0DDD" and the address.
func TestSignFormat(t *testing.T) {
	clock := testutil.NewFakeClock() // 2026-11-25: day 20417
	s := newSigner(t, clock)
	got, ok := s.Sign(address.MustParse("Alice@example.test"))
	if !ok {
		t.Fatal("not signed")
	}
	days := clock.Now().Unix() / 86400
	ddd := fmt.Sprintf("%03d", (days+7)%1000)
	h := hmac.New(sha1.New, testKey)
	h.Write([]byte("0" + ddd + "alice@example.test"))
	want := "prvs=0" + ddd + hex.EncodeToString(h.Sum(nil)[:3]) + "=Alice@example.test"
	if got.String() != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
}

func TestVerify(t *testing.T) {
	clock := testutil.NewFakeClock()
	s := newSigner(t, clock)
	alice := address.MustParse("alice@example.test")
	signed, _ := s.Sign(alice)

	check := func(m address.Mailbox, wantAddr string, want Result, why string) {
		t.Helper()
		got, r := s.Verify(m)
		if wantAddr == "" {
			wantAddr = m.String() // unchanged
		}
		if r != want || got.String() != wantAddr {
			t.Errorf("%s: Verify(%s) = %s, %v; want %s, %v", why, m, got, r, wantAddr, want)
		}
	}
	check(signed, "alice@example.test", Valid, "fresh tag")
	check(alice, "alice@example.test", Untagged, "no tag")
	check(address.Mailbox{Local: strings.ToUpper(signed.Local), Domain: "EXAMPLE.TEST"}, "ALICE@EXAMPLE.TEST", Valid, "case changed on the way back")

	tampered := func(f func(string) string) address.Mailbox {
		return address.Mailbox{Local: f(signed.Local), Domain: signed.Domain}
	}
	check(tampered(func(l string) string { return strings.Replace(l, "=alice", "=bob", 1) }), "", Forged, "tag moved to another user")
	check(address.Mailbox{Local: signed.Local, Domain: "example.net"}, "", Forged, "tag moved to another domain")
	check(tampered(func(l string) string { return l[:9] + flip(l[9]) + l[10:] }), "", Forged, "one hash digit changed")
	check(tampered(func(l string) string { return l[:6] + flip(l[6]) + l[7:] }), "", Forged, "expiry day changed (hash covers it)")
	check(tampered(func(l string) string { return "prvs=1" + l[6:] }), "", Forged, "another key number")
	for _, bad := range []string{"prvs=", "prvs=0123", "prvs=0123abcdef", "prvs=0123abcdef=", "prvs=0123abcdeg=alice", "prvs=x123abcdef=alice", "prvs=0123abcdef-alice"} {
		check(address.Mailbox{Local: bad, Domain: "example.test"}, "", Forged, "malformed "+bad)
	}
	other, _ := New([]byte("another-key-0123456789"), Options{Clock: clock})
	if _, r := other.Verify(signed); r != Forged {
		t.Errorf("another key: %v, want forged", r)
	}

	// Valid through the 7th day after signing, then expired; the tag
	// rotates daily.
	clock.Advance(24 * time.Hour)
	next, _ := s.Sign(alice)
	if next == signed {
		t.Error("the tag did not change the next day")
	}
	clock.Advance(6 * 24 * time.Hour)
	check(signed, "alice@example.test", Valid, "7 days after signing")
	clock.Advance(24 * time.Hour)
	check(signed, "alice@example.test", Expired, "8 days after signing")
	check(next, "alice@example.test", Valid, "the next day's tag is still valid")

	// A tag from a node whose clock is ahead across midnight is accepted;
	// one that claims to expire further in the future than we sign is not.
	ahead := testutil.NewFakeClock()
	ahead.Advance(clock.Now().Sub(ahead.Now()) + 24*time.Hour)
	a1, _ := newSigner(t, ahead).Sign(alice)
	check(a1, "alice@example.test", Valid, "signed a day ahead")
	ahead.Advance(24 * time.Hour)
	a2, _ := newSigner(t, ahead).Sign(alice)
	check(a2, "alice@example.test", Expired, "signed two days ahead")
}

func flip(c byte) string {
	if c == '0' {
		return "1"
	}
	return "0"
}

// DDD is a day number mod 1000: a tag made on day 998 expires on day 5
// and is valid across the wrap.
func TestDayWrap(t *testing.T) {
	clock := testutil.NewFakeClock()
	d := clock.Now().Unix() / 86400
	clock.Advance(time.Duration((998-d%1000+1000)%1000) * 24 * time.Hour)
	if got := (clock.Now().Unix() / 86400) % 1000; got != 998 {
		t.Fatalf("day %d", got)
	}
	s := newSigner(t, clock)
	m, _ := s.Sign(address.MustParse("bob@example.test"))
	if !strings.HasPrefix(m.Local, "prvs=0005") {
		t.Fatalf("signed on day 998: %s, want expiry day 005", m)
	}
	for i := range 9 {
		_, r := s.Verify(m)
		want := Valid
		if i == 8 {
			want = Expired
		}
		if r != want {
			t.Errorf("day %d after signing: %v", i, r)
		}
		clock.Advance(24 * time.Hour)
	}
	clock.Advance(500 * 24 * time.Hour)
	if _, r := s.Verify(m); r != Expired {
		t.Errorf("500 days after: %v, want expired", r)
	}
}

func TestSignSkips(t *testing.T) {
	s := newSigner(t, testutil.NewFakeClock())
	signed, _ := s.Sign(address.MustParse("alice@example.test"))
	for _, tc := range []struct {
		name string
		m    address.Mailbox
	}{
		{"null sender", address.Mailbox{}},
		{"bare postmaster", address.Mailbox{Local: "postmaster"}},
		{"already tagged", signed},
		{"already tagged, upper case", address.Mailbox{Local: "PRVS=0123abcdef=x", Domain: "example.test"}},
		{"local part too long for a tag", address.Mailbox{Local: strings.Repeat("a", 49), Domain: "example.test"}},
		{"quoted local part too long with its quotes", address.Mailbox{Local: strings.Repeat("a b", 15) + "xx", Domain: "example.test"}},
	} {
		if got, ok := s.Sign(tc.m); ok || got != tc.m {
			t.Errorf("%s: Sign(%s) = %s, %v; want unchanged", tc.name, tc.m, got, ok)
		}
	}
	// 48 octets take a tag (16 more make 64).
	m := address.Mailbox{Local: strings.Repeat("a", 48), Domain: "example.test"}
	got, ok := s.Sign(m)
	if !ok || len(got.Local) != 64 {
		t.Errorf("48-octet local part: %s %v", got, ok)
	}
	// A quoted local part is tagged inside the quotes and comes back.
	q := address.Mailbox{Local: "john doe", Domain: "example.test"}
	got, ok = s.Sign(q)
	if !ok || !strings.HasPrefix(got.String(), `"prvs=`) {
		t.Fatalf("quoted: %s %v", got, ok)
	}
	back, err := address.Parse(got.String(), address.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if orig, r := s.Verify(back); r != Valid || orig != q {
		t.Errorf("quoted round trip: %s %v", orig, r)
	}
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	k, err := LoadKey(write("good", "  0123456789abcdef0123\n"))
	if err != nil || string(k) != "0123456789abcdef0123" {
		t.Errorf("LoadKey = %q, %v", k, err)
	}
	if _, err := LoadKey(write("short", "0123456789abcde \n\n")); err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Errorf("short key: %v", err)
	}
	if _, err := LoadKey(filepath.Join(dir, "none")); err == nil {
		t.Error("missing key file accepted")
	}
	if _, err := New([]byte("short"), Options{}); err == nil {
		t.Error("New with a short key")
	}
}

func FuzzVerify(f *testing.F) {
	s, _ := New(testKey, Options{Clock: testutil.NewFakeClock()})
	signed, _ := s.Sign(address.MustParse("alice@example.test"))
	for _, l := range []string{signed.Local, "alice", "prvs=", "PRVS=0999ffffff=x", "prvs=0123abcdef==", "prvs=0123abcdef=prvs=0123abcdef=a"} {
		f.Add(l, "example.test")
	}
	f.Fuzz(func(t *testing.T, local, domain string) {
		m := address.Mailbox{Local: local, Domain: domain}
		orig, r := s.Verify(m)
		switch r {
		case Untagged, Forged:
			if orig != m {
				t.Fatalf("%v changed the address: %v", r, orig)
			}
		case Valid, Expired:
			if !strings.HasSuffix(local, orig.Local) || len(orig.Local) != len(local)-tagLen {
				t.Fatalf("%v: %q -> %q", r, local, orig.Local)
			}
			// A valid tag is what Sign makes today for that address (up to case).
			if again, ok := s.Sign(orig); r == Valid && ok && !strings.EqualFold(again.Local, local) {
				t.Fatalf("valid %q, but Sign gives %q", local, again.Local)
			}
		}
	})
}
