package clamd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/checks/scanner"
	"mxguard/internal/pipeline"
	"mxguard/internal/testutil"
)

// mail wraps an attachment into a MIME message, base64 encoded, as a mail
// client would send it.
func mail(name string, attachment []byte) []byte {
	var b bytes.Buffer
	b.WriteString("From: <alice@example.org>\r\nTo: <bob@example.test>\r\nSubject: files\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n" +
		"--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=\"" + name + "\"\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(attachment)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n--b1--\r\n")
	return b.Bytes()
}

// TestRealClamd scans with a private clamd whose database the test made:
// an EICAR signature, the MD5 of clamav-testfiles' clam.exe and a
// signature of random bytes generated now, which only clamd can know about
// (mxguard's own EICAR check cannot), so a hit proves clamd did the scan.
func TestRealClamd(t *testing.T) {
	probe := make([]byte, 24)
	rand.Read(probe)
	probe = []byte("mxguard-probe-" + hex.EncodeToString(probe))
	cd := testutil.StartClamd(t, testutil.ClamdOptions{
		Signatures:      map[string][]byte{"Mxguard-Probe": probe},
		StreamMaxLength: "1M",
	})
	clamZip, err := os.ReadFile("/usr/share/clamav-testfiles/clam.zip")
	testutil.RequireComponent(t, "clamav-testfiles", err == nil, "provides clam.zip")

	tcp, err := Parse("tcp://" + cd.Addr)
	if err != nil {
		t.Fatal(err)
	}
	unix, err := Parse("unix:" + cd.Socket)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef\r\n"), 2<<20/18) // 2 MB > StreamMaxLength 1M
	for _, tc := range []struct {
		name   string
		client *Client
		data   []byte
		sig    string // "" = clean
		err    error
	}{
		{"clean", tcp, []byte("Subject: hello\r\n\r\nnothing here\r\n"), "", nil},
		{"eicar raw", tcp, []byte(testutil.EICAR()), "Eicar-Test-Signature-Local.UNOFFICIAL", nil},
		{"eicar attachment", tcp, mail("eicar.com", []byte(testutil.EICAR())), "Eicar-Test-Signature-Local.UNOFFICIAL", nil},
		{"probe in attachment", tcp, mail("notes.txt", append([]byte("some text "), probe...)), "Mxguard-Probe.UNOFFICIAL", nil},
		{"clam.exe inside a zip", tcp, mail("clam.zip", clamZip), "Clamav.Test.File-Local.UNOFFICIAL", nil},
		{"unix socket", unix, mail("eicar.com", []byte(testutil.EICAR())), "Eicar-Test-Signature-Local.UNOFFICIAL", nil},
		{"unix socket clean", unix, []byte("Subject: x\r\n\r\nclean\r\n"), "", nil},
		// clamd answers and closes while we still send: EPIPE or a reset
		// on write, and the answer is still read.
		{"over StreamMaxLength", tcp, big, "", ErrSizeLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := tc.client.Scan(ctx, bytes.NewReader(tc.data))
			if !errors.Is(err, tc.err) {
				t.Fatalf("Scan error %v, want %v", err, tc.err)
			}
			if res.Infected != (tc.sig != "") || res.Signature != tc.sig {
				t.Errorf("Scan = %+v, want signature %q", res, tc.sig)
			}
		})
	}

	// Through the check: a virus is refused, a clean message carries the
	// scan headers, the size limit is the configured failure.
	scans := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scans"}, []string{"scanner", "result"})
	ch := New(tcp, scanner.Options{Timeout: 20 * time.Second, Scans: scans})
	scan := func(b []byte) pipeline.Verdict {
		return ch.CheckData(context.Background(), &pipeline.Session{}, &pipeline.Message{Content: bytes.NewReader(b)})
	}
	v := scan(mail("a.bin", probe))
	if v.Reply == nil || v.Reply.Code != 554 || v.Reply.Enhanced != [3]int{5, 7, 1} || v.Reply.Check != Name || v.Class != pipeline.ClassVirus {
		t.Errorf("virus verdict = %+v", v)
	}
	v = scan([]byte("Subject: x\r\n\r\nclean\r\n"))
	if v.Reply != nil || v.Class != pipeline.ClassNone || len(v.Headers) != 2 {
		t.Errorf("clean verdict = %+v", v)
	}
	v = scan(big)
	if v.Reply == nil || v.Reply.Code != 451 || v.Reply.Enhanced != [3]int{4, 3, 0} || !errors.Is(v.Reply, ErrSizeLimit) {
		t.Errorf("size limit verdict = %+v", v)
	}
	for result, want := range map[string]float64{scanner.ResultVirus: 1, scanner.ResultClean: 1, scanner.ResultError: 1, scanner.ResultBusy: 0} {
		if got := promtest.ToFloat64(scans.WithLabelValues(Name, result)); got != want {
			t.Errorf("scans{clamd,%s} = %v, want %v", result, got, want)
		}
	}
}

// fakeClamd stands in for a broken or hostile clamd.
func fakeClamd(t *testing.T, answer func(c net.Conn)) *Client {
	return &Client{Network: "tcp", Address: testutil.ServeTCP(t, answer)}
}

// readStream consumes one INSTREAM request and returns the data sent.
func readStream(c net.Conn) ([]byte, error) {
	cmd := make([]byte, len("zINSTREAM\x00"))
	if _, err := io.ReadFull(c, cmd); err != nil || string(cmd) != "zINSTREAM\x00" {
		return nil, errors.New("bad command")
	}
	var data []byte
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return nil, err
		}
		n := int(hdr[0])<<24 | int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
		if n == 0 {
			return data, nil
		}
		chunk := make([]byte, n)
		if _, err := io.ReadFull(c, chunk); err != nil {
			return nil, err
		}
		data = append(data, chunk...)
	}
}

// TestFramingAndFailures: the stream arrives intact in chunks, and every
// broken clamd is an error (so the gate's on_failure applies), never a
// clean verdict.
func TestFramingAndFailures(t *testing.T) {
	msg := bytes.Repeat([]byte("line of mail\r\n"), 10000) // 140 KB: several chunks
	var got []byte
	done := make(chan struct{})
	echo := fakeClamd(t, func(c net.Conn) {
		got, _ = readStream(c)
		c.Write([]byte("stream: OK\x00"))
		close(done)
	})
	echo.ChunkSize = 4096
	if res, err := echo.Scan(context.Background(), bytes.NewReader(msg)); err != nil || res.Infected {
		t.Fatalf("Scan = %+v, %v", res, err)
	}
	<-done
	if !bytes.Equal(got, msg) {
		t.Errorf("clamd received %d bytes, want the %d of the message", len(got), len(msg))
	}

	refused := &Client{Network: "tcp", Address: testutil.FreeAddr(t)}
	hang := fakeClamd(t, func(c net.Conn) { readStream(c); io.Copy(io.Discard, c) })
	garbage := fakeClamd(t, func(c net.Conn) { readStream(c); c.Write([]byte("\xff\xfe hello there\n")) })
	silent := fakeClamd(t, func(c net.Conn) { readStream(c) })
	midway := fakeClamd(t, func(c net.Conn) { io.ReadFull(c, make([]byte, 100)) })
	for _, tc := range []struct {
		name   string
		c      *Client
		budget time.Duration
	}{
		{"down", refused, 5 * time.Second},
		{"slow", hang, 300 * time.Millisecond},
		{"garbage", garbage, 5 * time.Second},
		{"closes without answer", silent, 5 * time.Second},
		{"closes while we send", midway, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tc.budget)
			defer cancel()
			res, err := tc.c.Scan(ctx, bytes.NewReader(msg))
			if err == nil {
				t.Fatalf("Scan = %+v, nil error", res)
			}
		})
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct{ in, network, addr string }{
		{"tcp://127.0.0.1:3310", "tcp", "127.0.0.1:3310"},
		{"unix:/run/clamav/clamd.ctl", "unix", "/run/clamav/clamd.ctl"},
		{"unix:///run/clamav/clamd.ctl", "unix", "/run/clamav/clamd.ctl"},
		{"127.0.0.1:3310", "", ""},
		{"tcp://nohost", "", ""},
		{"unix:relative.sock", "", ""},
	} {
		c, err := Parse(tc.in)
		if tc.network == "" {
			if err == nil {
				t.Errorf("Parse(%q) = %+v, want an error", tc.in, c)
			}
			continue
		}
		if err != nil || c.Network != tc.network || c.Address != tc.addr {
			t.Errorf("Parse(%q) = %+v, %v", tc.in, c, err)
		}
	}
}

// TestParseReply reads the captured answers of ../shared/samples and the
// malformed ones a broken daemon could give.
func TestParseReply(t *testing.T) {
	for _, tc := range []struct {
		in  string
		sig string
		err bool
	}{
		{"stream: OK\x00", "", false},
		{"stream: Eicar-Test-Signature-Local.UNOFFICIAL FOUND\x00", "Eicar-Test-Signature-Local.UNOFFICIAL", false},
		{"stream: Win.Test.EICAR_HDB-1 FOUND\n", "Win.Test.EICAR_HDB-1", false},
		{"INSTREAM size limit exceeded. ERROR\x00", "", true},
		{"stream: lstat() failed. ERROR\x00", "", true},
		{"", "", true},
		{"stream:  FOUND\x00", "", true},
		{"stream: \x1b[31mred FOUND\x00", "", true},
		{"PONG\x00", "", true},
		{"stream: OKAY\x00", "", true},
	} {
		res, err := ParseReply([]byte(tc.in))
		if (err != nil) != tc.err || res.Signature != tc.sig || res.Infected != (tc.sig != "") {
			t.Errorf("ParseReply(%q) = %+v, %v", tc.in, res, err)
		}
	}
	for _, f := range []string{"clamd-instream-clean.txt", "clamd-instream-eicar.txt", "clamd-instream-eicar-mime.txt", "clamd-instream-size-limit.txt"} {
		b, err := os.ReadFile("testdata/" + f) // copied from ../shared/samples
		if err != nil {
			t.Fatal(err)
		}
		res, err := ParseReply(b)
		switch f {
		case "clamd-instream-clean.txt":
			if err != nil || res.Infected {
				t.Errorf("%s: %+v %v", f, res, err)
			}
		case "clamd-instream-size-limit.txt":
			if !errors.Is(err, ErrSizeLimit) {
				t.Errorf("%s: %v", f, err)
			}
		default:
			if err != nil || res.Signature != "Eicar-Test-Signature-Local.UNOFFICIAL" {
				t.Errorf("%s: %+v %v", f, res, err)
			}
		}
	}
}

// FuzzParseReply: no answer crashes the parser, and an answer it calls
// infected has a printable signature.
func FuzzParseReply(f *testing.F) {
	for _, s := range []string{"stream: OK\x00", "stream: X FOUND\x00", "INSTREAM size limit exceeded. ERROR\x00", "\x00", "stream: FOUND FOUND"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := ParseReply(b)
		if err == nil && res.Infected && (res.Signature == "" || !printable(res.Signature)) {
			t.Errorf("ParseReply(%q) = %+v", b, res)
		}
		if err != nil && res.Infected {
			t.Errorf("error and infected: %q", b)
		}
	})
}
