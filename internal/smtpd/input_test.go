package smtpd

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"mxguard/internal/testutil"
)

// TestBodyIsNoCommand: lines of a message that look like commands (a
// routed RCPT, STARTTLS, DATA, BDAT) are text, in DATA and in a BDAT
// chunk: the same connection's next transaction gets the plain RCPT of
// that mailbox accepted and relayed (the route watch saw no route), and
// the watch still refuses a real routed RCPT afterwards. A body
// pipelined after a DATA that go-smtp refuses is read as commands by
// go-smtp, and so by the watch.
func TestBodyIsNoCommand(t *testing.T) {
	d, down := newDownstreamRecorder(t)
	addr, _ := startServerTo(t, down, nil)
	c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: "127.0.0.21"})
	c.Expect(220)
	c.Cmd("EHLO client.test", 250)

	c.Cmd("MAIL FROM:<sender@remote.test>", 250)
	c.Cmd("RCPT TO:<bob@example.test>", 250)
	c.Data("Subject: commands in the body\n\nRCPT TO:<@x.test:alice@example.test>\nrcpt to: <@y.test:ALICE@example.test>\nSTARTTLS\nBDAT 5\nDATA\n", 250)
	c.Cmd("MAIL FROM:<sender@remote.test>", 250)
	c.Cmd("RCPT TO:<alice@example.test>", 250)

	// BDAT: the chunk holds what looks like a routed RCPT of bob and the
	// announcement of another chunk; neither is a command.
	chunk := "Subject: chunk\r\n\r\nRCPT TO:<@x.test:bob@example.test>\r\nBDAT 1000\r\n"
	c.Send("BDAT " + strconv.Itoa(len(chunk)) + " LAST\r\n" + chunk)
	c.Expect(250)
	c.Cmd("MAIL FROM:<sender@remote.test>", 250)
	c.Cmd("RCPT TO:<bob@example.test>", 250)
	c.Cmd("RSET", 250)

	// DATA refused (no recipient yet): what follows is commands.
	c.Cmd("MAIL FROM:<sender@remote.test>", 250)
	c.Send("DATA\r\nRCPT TO:<@x.test:alice@example.test>\r\n")
	c.Expect(502)
	c.Expect(554)
	c.Cmd("RCPT TO:<@z.test:bob@example.test>", 554)
	c.Cmd("QUIT", 221)

	d.wantRcpts(t, "RCPT TO:<bob@example.test>", "RCPT TO:<alice@example.test>", "RCPT TO:<bob@example.test>")
}

// TestInputFraming: the framer hands go-smtp exactly the client's bytes
// (nothing lost, nothing added), one command line at a time, a message
// up to its end marker as one piece or more, and a BDAT chunk by its
// size; lines it holds are bounded.
func TestInputFraming(t *testing.T) {
	in := "EHLO x\r\nDATA\r\nRCPT TO:<@a:b@c.test>\r\n..\r\n.\r\nBDAT 6\r\nRCPT\r\nNOOP\r\n"
	var fr input
	fr.raw = []byte(in)
	var pieces []string
	for {
		if !fr.frame(func(l []byte) []byte { return l }) {
			break
		}
		pieces = append(pieces, string(fr.ready))
		if string(fr.ready) == "DATA\r\n" {
			fr.sniffReply([]byte("354 go ahead\r\n"))
		}
		fr.ready = nil
	}
	want := []string{"EHLO x\r\n", "DATA\r\n", "RCPT TO:<@a:b@c.test>\r\n..\r\n.\r\n", "BDAT 6\r\n", "RCPT\r\n", "NOOP\r\n"}
	if strings.Join(pieces, "|") != strings.Join(want, "|") {
		t.Errorf("pieces %q, want %q", pieces, want)
	}
}

// FuzzInputFraming: any client bytes, cut anywhere, with DATA and
// STARTTLS answered either way, reach go-smtp unchanged and in order,
// and the framer never holds more than one bounded line.
func FuzzInputFraming(f *testing.F) {
	f.Add([]byte("DATA\r\nx\r\n.\r\nBDAT 3 LAST\r\nabcRCPT TO:<@a:b@c>\r\n"), uint8(3), uint8(1))
	f.Add([]byte("STARTTLS\r\n\x16\x03\x01"), uint8(1), uint8(2))
	f.Add([]byte("bdat 4294967295\r\n"+strings.Repeat("x", 3000)), uint8(9), uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, cut, answers uint8) {
		var fr input
		var out []byte
		step := int(cut%32) + 1
		n := 0
		for i := 0; i < len(in); i += step {
			fr.raw = append(fr.raw, in[i:min(i+step, len(in))]...)
			for fr.frame(func(l []byte) []byte { return l }) {
				out = append(out, fr.ready...)
				if fr.await != modeCommand {
					if answers>>(n%8)&1 == 1 {
						fr.sniffReply([]byte("354 "))
						if fr.await == modeTLS {
							fr.sniff = append(fr.sniff[:0], "220"...)
						}
					}
					n++
				}
				fr.ready = nil
			}
			if len(fr.raw) > maxHeldLine+step {
				t.Fatalf("holding %d octets", len(fr.raw))
			}
		}
		// What a STARTTLS answered 220 drops is the only loss allowed.
		if fr.mode != modeTLS && !bytes.Equal(out, in[:len(out)]) {
			t.Fatalf("go-smtp got %q, client sent %q", out, in)
		}
		if fr.mode != modeTLS && len(out)+len(fr.raw) != len(in) {
			t.Fatalf("%d handed + %d held != %d sent", len(out), len(fr.raw), len(in))
		}
	})
}

// TestBarePostmaster: "RCPT TO:<Postmaster>" without a domain is accepted
// (RFC 5321 §4.1.1.3) and reaches the downstream as the postmaster of the
// first of `domains`, from an untrusted client, in any case and with
// go-smtp's white space; what only looks like it is not rewritten.
func TestBarePostmaster(t *testing.T) {
	d, down := newDownstreamRecorder(t)
	addr, _ := startServerTo(t, down, nil, func(_ *Options, s *Settings) {
		s.Domains = []string{"example.test", "other.test"}
	})
	const mail = "MAIL FROM:<sender@remote.test>"
	pm := []string{mail, "RCPT TO:<postmaster@example.test>"}
	runCases(t, addr, "127.0.0.22", d, []addrCase{
		{rcpt: "<postmaster>", code: 250, down: pm},
		{rcpt: "<Postmaster>", code: 250, down: pm},
		{rcpt: " \t<POSTMASTER>  ", code: 250, down: pm},
		{rcpt: "<postmaster> NOTIFY=NEVER", code: 504}, // DSN is not offered
		{rcpt: "<postmaster>x", code: 501},
		{rcpt: "<postmasterx>", code: 501},
		{rcpt: `<"postmaster">`, code: 501},
		{rcpt: "<postmaster@Example.Test>", code: 250, down: pm},
	})
}

// TestBarePostmasterNoDomains: without `domains` there is no postmaster
// to name; go-smtp's 501 stands.
func TestBarePostmasterNoDomains(t *testing.T) {
	d, down := newDownstreamRecorder(t)
	addr, _ := startServerTo(t, down, nil)
	runCases(t, addr, "127.0.0.23", d, []addrCase{{rcpt: "<postmaster>", code: 501}})
}

// TestDataEndAsGoSMTP: the framer ends a message where go-smtp's own
// reader does, checked against a real go-smtp server: each body is sent
// after DATA, followed by a sure end marker and QUIT. Where go-smtp ended
// the message inside the body, the rest of the body comes back as
// answered commands before the 221.
func TestDataEndAsGoSMTP(t *testing.T) {
	addr := startGoSMTP(t, &goSMTPRecorder{})
	for _, body := range []string{
		"x\r\n.\r\nNOOP",   // ends
		".\r\nNOOP",        // ends at once
		"x\r\r\n.\r\nNOOP", // CR CR LF: go-smtp stays in the line
		"x\n.\r\nNOOP",     // bare LF is no line end
		"x\r\n.\r\r\nNOOP", // dot CR CR
		"x\r\n..\r\nNOOP",  // a stuffed dot
		"x\r\n.x\r\nNOOP",
		"\r\n.\r\nNOOP",
	} {
		var fr input
		fr.mode = modeData
		n := fr.dataEnd([]byte(body))
		framerEnds := fr.mode == modeCommand

		conn, r := rawSession(t, addr, "EHLO x", "MAIL FROM:<a@b.test>", "RCPT TO:<c@d.test>")
		conn.Write([]byte("DATA\r\n" + body + "\r\n.\r\nQUIT\r\n"))
		var codes []string
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				break
			}
			if l[3] == ' ' {
				codes = append(codes, l[:3])
			}
			if l[:3] == "221" {
				break
			}
		}
		goSMTPEnds := len(codes) > 3 // 354, 250, [answers to the body's rest], 221
		if framerEnds != goSMTPEnds {
			t.Errorf("%q: framer ends the message: %v (after %d octets); go-smtp: %v (%v)", body, framerEnds, n, goSMTPEnds, codes)
		}
	}
}
