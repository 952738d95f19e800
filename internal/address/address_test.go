package address

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

var all = Options{UTF8: true, Null: true, Postmaster: true}

func kindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

// wantErr checks a parse result against the expected error kind (0:
// none) and reports whether the test should go on with the result.
func wantErr(t *testing.T, got string, err error, want Kind) bool {
	t.Helper()
	switch {
	case want != 0 && kindOf(err) != want:
		t.Fatalf("parsed as %q, %v; want an error of kind %d", got, err, want)
	case want == 0 && err != nil:
		t.Fatalf("error: %v", err)
	}
	return want == 0
}

// TestParsePath: the forms RFC 5321 §4.1.2 allows, their canonical
// re-quoted text, and what is refused with which kind.
func TestParsePath(t *testing.T) {
	rcpt := Options{Postmaster: true}
	mail := Options{Null: true}
	utf := Options{UTF8: true}
	long := strings.Repeat("a", 64)
	tests := []struct {
		in      string
		o       Options
		want    string // canonical String(); "" with kind 0 is the null path
		route   []string
		routing bool
		rest    string
		kind    Kind // expected error kind, 0: none
	}{
		{in: "<alice@example.test>", want: "alice@example.test"},
		{in: "<Alice.Smith+tag@Example.TEST>", want: "Alice.Smith+tag@example.test"},
		{in: "<alice@example.test.>", want: "alice@example.test"},
		{in: "<alice@example.test> SIZE=10 BODY=8BITMIME", want: "alice@example.test", rest: " SIZE=10 BODY=8BITMIME"},
		{in: `<"john"@example.test>`, want: "john@example.test"},
		{in: `<"john smith"@example.test>`, want: `"john smith"@example.test`},
		{in: `<"a\"b\\c"@example.test>`, want: `"a\"b\\c"@example.test`},
		{in: `<"\a\b"@example.test>`, want: "ab@example.test"},
		{in: `<".dot"@example.test>`, want: `".dot"@example.test`},
		{in: `<"a..b"@example.test>`, want: `"a..b"@example.test`},
		{in: `<"a>b"@example.test> NOTIFY=NEVER`, want: `"a>b"@example.test`, rest: " NOTIFY=NEVER"},
		{in: "<x@[127.0.0.1]>", want: "x@[127.0.0.1]"},
		{in: "<x@[IPv6:2001:DB8:0::1]>", want: "x@[IPv6:2001:db8::1]"},
		{in: "<x@[ipv6:::1]>", want: "x@[IPv6:::1]"},
		{in: "<x@localhost>", want: "x@localhost"},
		{in: "<x@xn--bcher-kva.test>", want: "x@xn--bcher-kva.test"},
		{in: "<" + long + "@example.test>", want: long + "@example.test"},
		// the null path and the bare postmaster, each only where allowed
		{in: "<>", o: mail, want: ""},
		{in: "<> SIZE=1", o: mail, want: "", rest: " SIZE=1"},
		{in: "<>", o: rcpt, kind: Syntax},
		{in: "<PostMaster>", o: rcpt, want: "postmaster"},
		{in: "<postmaster>", o: mail, kind: Syntax},
		{in: `<"postmaster">`, o: rcpt, kind: Syntax},
		// routing in the local part, and source routes
		{in: "<victim%pct.test@example.test>", want: "victim%pct.test@example.test", routing: true},
		{in: "<bang.test!victim@example.test>", want: "bang.test!victim@example.test", routing: true},
		{in: `<"victim@quoted.test"@example.test>`, want: `"victim@quoted.test"@example.test`, routing: true},
		{in: `<"victim%pct.test"@example.test>`, want: "victim%pct.test@example.test", routing: true},
		{in: `<"victim@evil.test> NOTIFY=NEVER ORCPT=rfc822;x"@example.test>`, want: `"victim@evil.test> NOTIFY=NEVER ORCPT=rfc822;x"@example.test`, routing: true},
		{in: "<@evil.test:victim@example.test>", want: "victim@example.test", route: []string{"evil.test"}},
		{in: "<@A.test,@b.TEST.:victim@example.test>", want: "victim@example.test", route: []string{"a.test", "b.test"}},
		// syntax errors
		{in: "alice@example.test", kind: Syntax},
		{in: "<alice@example.test", kind: Syntax},
		{in: "<alice@example.test>x", kind: Syntax},
		{in: "<alice>", kind: Syntax},
		{in: "<@example.test>", kind: Syntax},
		{in: "<victim@at.test@example.test>", kind: Syntax},
		{in: "<a..b@example.test>", kind: Syntax},
		{in: "<.a@example.test>", kind: Syntax},
		{in: "<a.@example.test>", kind: Syntax},
		{in: "<a b@example.test>", kind: Syntax},
		{in: `<""@example.test>`, kind: Syntax},
		{in: `<"a@example.test>`, kind: Syntax},
		{in: "<\"a\x01\"@example.test>", kind: Syntax},
		{in: "<\"a\\\x01\"@example.test>", kind: Syntax},
		{in: "<a@>", kind: Syntax},
		{in: "<a@example..test>", kind: Syntax},
		{in: "<a@example.test..>", kind: Syntax},
		{in: "<a@.>", kind: Syntax},
		{in: "<a@-x.test>", kind: Syntax},
		{in: "<a@x-.test>", kind: Syntax},
		{in: "<a@ex_ample.test>", kind: Syntax},
		{in: "<a@example.test,@evil.test:b@c>", kind: Syntax},
		{in: "<a@[1.2.3]>", kind: Syntax},
		{in: "<a@[1.2.3.256]>", kind: Syntax},
		{in: "<a@[IPv6:1.2.3.4]>", kind: Syntax},
		{in: "<a@[IPv6:fe80::1%eth0]>", kind: Syntax},
		{in: "<a@[::1]>", kind: Syntax},
		{in: "<a@[tag:x]>", kind: Syntax},
		{in: "<a@[127.0.0.1>", kind: Syntax},
		{in: "<@[127.0.0.1]:a@example.test>", kind: Syntax},
		{in: "<@evil.test,a@example.test>", kind: Syntax},
		{in: "<@:a@example.test>", kind: Syntax},
		// RFC 5321 §4.5.3.1 limits
		{in: "<a" + long + "@example.test>", kind: TooLong},
		{in: `<"` + long[:63] + ` "@example.test>`, kind: TooLong}, // 66 octets quoted
		{in: "<a@" + strings.Repeat("b", 64) + ".test>", kind: TooLong},
		{in: "<a@" + strings.Repeat("bbbbbbbbb.", 26) + "test>", kind: TooLong},            // domain of 264
		{in: "<" + long + "@" + strings.Repeat("bbbbbbbbb.", 19) + "test>", kind: TooLong}, // 258 with brackets
		// SMTPUTF8 (RFC 6531): UTF-8 only when declared
		{in: "<vïctim@example.test>", kind: NeedUTF8},
		{in: `<"vïctim"@example.test>`, kind: NeedUTF8},
		{in: "<a@bücher.test>", kind: NeedUTF8},
		{in: "<vïctim@example.test>", o: utf, want: "vïctim@example.test"},
		{in: `<"v ï"@bücher.test>`, o: utf, want: `"v ï"@bücher.test`},
		{in: "<a@Bücher.test>", o: utf, want: "a@bücher.test"},
		{in: "<a@BÜcher.test>", o: utf, kind: Syntax},
		{in: "<a@b€.test>", o: utf, kind: Syntax},
		{in: "<a\xff@example.test>", o: utf, kind: Syntax},
		{in: "<a\xff@example.test>", kind: Syntax},
		{in: "<a\u2028b@example.test>", o: utf, kind: Syntax},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, rest, err := ParsePath(tt.in, tt.o)
			if !wantErr(t, p.String(), err, tt.kind) {
				return
			}
			if got := p.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			if rest != tt.rest {
				t.Errorf("rest = %q, want %q", rest, tt.rest)
			}
			if !slices.Equal(p.Route, tt.route) {
				t.Errorf("Route = %q, want %q", p.Route, tt.route)
			}
			if p.HasRouting() != tt.routing {
				t.Errorf("HasRouting() = %v, want %v", p.HasRouting(), tt.routing)
			}
			if p.Routed() != (tt.routing || len(tt.route) > 0) {
				t.Errorf("Routed() = %v", p.Routed())
			}
			back, err := Parse(p.String(), tt.o)
			if err != nil || back != p.Mailbox {
				t.Errorf("Parse(String()) = %+v, %v; want %+v", back, err, p.Mailbox)
			}
		})
	}
}

// TestParseUnquoted: go-smtp's unquoted form is split at the last "@",
// its local part re-quoted as needed; what no quoting can represent
// (control characters) and bad domains are refused.
func TestParseUnquoted(t *testing.T) {
	tests := []struct {
		in      string
		o       Options
		want    string
		routing bool
		kind    Kind
	}{
		{in: "alice@EXAMPLE.test.", want: "alice@example.test"},
		{in: "a b@example.test", want: `"a b"@example.test`},
		{in: `a"b\c@example.test`, want: `"a\"b\\c"@example.test`},
		{in: "victim@quoted.test@example.test", want: `"victim@quoted.test"@example.test`, routing: true},
		{in: "victim@evil.test> NOTIFY=NEVER ORCPT=rfc822;x@example.test", want: `"victim@evil.test> NOTIFY=NEVER ORCPT=rfc822;x"@example.test`, routing: true},
		{in: "victim%pct.test@example.test", want: "victim%pct.test@example.test", routing: true},
		{in: "x@[127.0.0.1]", want: "x@[127.0.0.1]"},
		{in: "", o: Options{Null: true}, want: ""},
		{in: "", kind: Syntax},
		{in: "Postmaster", o: Options{Postmaster: true}, want: "postmaster"},
		{in: "postmaster", kind: Syntax},
		{in: "@example.test", kind: Syntax},
		{in: "a@", kind: Syntax},
		{in: "a\r@example.test", kind: Syntax},
		{in: "a\x00@example.test", kind: Syntax},
		{in: "a@example.test>", kind: Syntax},
		{in: "a@exa\"mple.test", kind: Syntax},
		{in: "a@example.test,@evil:b", kind: Syntax},
		{in: "vïctim@example.test", kind: NeedUTF8},
		{in: "vïctim@example.test", o: Options{UTF8: true}, want: "vïctim@example.test"},
		{in: strings.Repeat("a", 65) + "@example.test", kind: TooLong},
		{in: strings.Repeat(" ", 63) + "@example.test", kind: TooLong}, // 65 quoted
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			m, err := ParseUnquoted(tt.in, tt.o)
			if !wantErr(t, m.String(), err, tt.kind) {
				return
			}
			if m.String() != tt.want || m.HasRouting() != tt.routing {
				t.Errorf("got %q routing=%v, want %q routing=%v", m.String(), m.HasRouting(), tt.want, tt.routing)
			}
			if back, err := Parse(m.String(), tt.o); err != nil || back != m {
				t.Errorf("Parse(String()) = %+v, %v; want %+v", back, err, m)
			}
		})
	}
}

// TestParse: the canonical form reads back strictly; raw client forms
// that are not canonical text are refused.
func TestParse(t *testing.T) {
	for _, s := range []string{"<a@example.test>", "a@example.test>", "a@example.test x", "a@b@c", "@a:b@c"} {
		if m, err := Parse(s, all); kindOf(err) != Syntax {
			t.Errorf("Parse(%q) = %+v, %v; want a syntax error", s, m, err)
		}
	}
	if m := MustParse(`"a b"@Example.test`); m.Local != "a b" || m.Domain != "example.test" {
		t.Errorf("MustParse = %+v", m)
	}
	defer func() {
		if recover() == nil {
			t.Error("MustParse of a bad address did not panic")
		}
	}()
	MustParse("a@")
}

func ExampleParsePath() {
	p, rest, err := ParsePath(`<"victim@evil.test> NOTIFY=NEVER"@Example.TEST.> SIZE=100`, Options{})
	fmt.Println(p.String(), p.HasRouting(), rest, err)
	p, _, _ = ParsePath("<@relay.test:Alice@example.test>", Options{})
	fmt.Println(p.String(), p.Route, p.Routed())
	// Output:
	// "victim@evil.test> NOTIFY=NEVER"@example.test true  SIZE=100 <nil>
	// Alice@example.test [relay.test] true
}

// FuzzParsePath: never panics; whatever parses re-parses from its
// canonical form to the same mailbox, and the canonical form stays
// within the limits and holds no octet a command line cannot carry.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"<alice@example.test>", "<>", "<postmaster>", `<"a b\"c"@[IPv6:2001:db8::1]> SIZE=1`,
		"<@a.test,@b.test:victim%pct.test@example.test.>", `<"victim@evil.test> NOTIFY=NEVER"@example.test>`,
		"<vïctim@bücher.test>", "<x@[127.0.0.1]>", "<a..b@x>",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, utf bool) {
		o := Options{UTF8: utf, Null: true, Postmaster: true}
		p, _, err := ParsePath(s, o)
		if err != nil {
			if kindOf(err) == 0 {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		checkCanonical(t, p.Mailbox, o)
	})
}

// FuzzParseUnquoted: the same for go-smtp's unquoted form.
func FuzzParseUnquoted(f *testing.F) {
	for _, s := range []string{"alice@example.test", "a b@x", `a"b\c@x.`, "victim@at.test@example.test", "", "postmaster", "a\r@x", "vïctim@x"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, utf bool) {
		o := Options{UTF8: utf, Null: true, Postmaster: true}
		m, err := ParseUnquoted(s, o)
		if err != nil {
			if kindOf(err) == 0 {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		checkCanonical(t, m, o)
	})
}

func checkCanonical(t *testing.T, m Mailbox, o Options) {
	t.Helper()
	s := m.String()
	back, err := Parse(s, o)
	if err != nil || back != m {
		t.Fatalf("Parse(%q) = %+v, %v; want %+v", s, back, err, m)
	}
	if back.String() != s {
		t.Fatalf("canonical form not stable: %q -> %q", s, back.String())
	}
	p, rest, err := ParsePath("<"+s+">", o)
	if err != nil || rest != "" || p.Mailbox != m {
		t.Fatalf("ParsePath(<%s>) = %+v %q %v", s, p, rest, err)
	}
	if len(s)+2 > MaxPath || strings.ContainsAny(s, "\r\n\x00") || (s != "" && strings.ContainsAny(m.Domain, " <>\"\\")) {
		t.Fatalf("canonical form %q breaks a limit or a command line", s)
	}
}

// BenchmarkParseUnquoted is the per-command cost on the SMTP listener:
// parse go-smtp's form and write the canonical one.
func BenchmarkParseUnquoted(b *testing.B) {
	for _, s := range []string{"alice@example.test", "Alice.Smith+list@Mail.Example.TEST.", "john smith@example.test"} {
		b.Run(s, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m, err := ParseUnquoted(s, Options{})
				if err != nil || m.String() == "" {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParsePath is the raw-text parser on a typical path with
// parameters.
func BenchmarkParsePath(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ParsePath("<alice@example.test> SIZE=12345 BODY=8BITMIME", Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
