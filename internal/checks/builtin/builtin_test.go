package builtin

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"testing/iotest"

	"mxguard/internal/checks/attach"
	"mxguard/internal/checks/eicar"
	"mxguard/internal/checks/gtube"
	"mxguard/internal/pipeline"
	"mxguard/internal/testutil"
)

func check() *Check { return New(gtube.Inspector{}, eicar.Inspector{}, attach.New(attach.Default)) }

// msg builds a multipart/mixed message with a text part and one
// attachment whose header lines are given raw.
func msg(attachHeader string, content []byte) string {
	enc := base64.StdEncoding.EncodeToString(content)
	var lines []string
	for len(enc) > 76 {
		lines, enc = append(lines, enc[:76]), enc[76:]
	}
	lines = append(lines, enc)
	return "From: <a@example.org>\r\nSubject: files\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"=_b\"\r\n\r\n" +
		"--=_b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease find attached.\r\n" +
		"--=_b\r\n" + attachHeader + "Content-Transfer-Encoding: base64\r\n\r\n" +
		strings.Join(lines, "\r\n") + "\r\n--=_b--\r\n"
}

func zipOf(t *testing.T, files ...string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	for _, f := range files {
		fw, err := w.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		fw.Write(bytes.Repeat([]byte("content of "+f+" "), 50))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestBuiltin(t *testing.T) {
	pdf := []byte("%PDF-1.4 a harmless document")
	inner := zipOf(t, "tool.exe")
	for _, tc := range []struct {
		name  string
		msg   string
		check string // "" = passed
		class pipeline.Class
	}{
		{"clean text", "Subject: hi\r\n\r\nhello\r\n", "", pipeline.ClassNone},
		{"clean pdf", msg("Content-Type: application/pdf; name=\"report.pdf\"\r\nContent-Disposition: attachment; filename=\"report.pdf\"\r\n", pdf), "", pipeline.ClassNone},
		{"exe by filename", msg("Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"setup.exe\"\r\n", pdf), attach.Name, pipeline.ClassVirus},
		{"double extension, upper case, trailing dot", msg("Content-Disposition: attachment; filename=\"INVOICE.PDF.SCR.\"\r\n", pdf), attach.Name, pipeline.ClassVirus},
		{"only Content-Type name", msg("Content-Type: application/octet-stream; name=\"run.bat\"\r\nContent-Disposition: attachment; filename=\"run.txt\"\r\n", pdf), attach.Name, pipeline.ClassVirus},
		{"RFC 2231 continuation", msg("Content-Disposition: attachment; filename*0*=utf-8''r%C3%A9sum%C3%A9; filename*1=\".js\"\r\n", pdf), attach.Name, pipeline.ClassVirus},
		{"RFC 2231 NUL before a harmless extension", msg("Content-Disposition: attachment; filename*=utf-8''a.exe%00.pdf\r\n", pdf), attach.Name, pipeline.ClassVirus},
		{"RFC 2047 name", msg("Content-Type: application/octet-stream; name=\"=?UTF-8?Q?Rechnung=2Evbs?=\"\r\n", pdf), attach.Name, pipeline.ClassVirus},
		{"declared executable type, harmless name", msg("Content-Type: application/x-msdownload; name=\"photo.jpg\"\r\n", pdf), attach.Name, pipeline.ClassVirus},
		{"exe in a zip", msg("Content-Disposition: attachment; filename=\"docs.zip\"\r\n", zipOf(t, "readme.txt", "docs/setup.exe")), attach.Name, pipeline.ClassVirus},
		{"zip of documents", msg("Content-Disposition: attachment; filename=\"docs.zip\"\r\n", zipOf(t, "readme.txt", "a.pdf")), "", pipeline.ClassNone},
		{"zip renamed .dat", msg("Content-Disposition: attachment; filename=\"data.dat\"\r\n", zipOf(t, "invoice.js")), attach.Name, pipeline.ClassVirus},
		{"junk before the zip", msg("Content-Disposition: attachment; filename=\"a.zip\"\r\n", append([]byte("MZjunkjunk"), zipOf(t, "x.cmd")...)), attach.Name, pipeline.ClassVirus},
		// One level deep: the names inside a deflated inner archive are
		// compressed and not seen (clamd unpacks archives recursively).
		{"exe in a zip in a zip", msg("Content-Disposition: attachment; filename=\"outer.zip\"\r\n", zipOf2(t, "inner.zip", inner)), "", pipeline.ClassNone},
		{"gtube in the text", "Subject: test\r\n\r\n" + testutil.GTUBE() + "\r\n", gtube.Name, pipeline.ClassSpam},
		{"gtube base64 encoded", "Content-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString([]byte("x "+testutil.GTUBE())) + "\r\n", gtube.Name, pipeline.ClassSpam},
		{"eicar attachment", msg("Content-Disposition: attachment; filename=\"eicar.txt\"\r\n", []byte(testutil.EICAR())), eicar.Name, pipeline.ClassVirus},
		{"eicar pasted as the body", "Subject: test\r\n\r\n\r\n" + testutil.EICAR() + "\r\n", eicar.Name, pipeline.ClassVirus},
		{"a text quoting eicar", "Subject: about av tests\r\n\r\nThe test string is " + testutil.EICAR() + "\r\n", "", pipeline.ClassNone},
		{"nested past the depth limit", nest(25), "mime", pipeline.ClassNone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := check().Scan(context.Background(), iotest.HalfReader(strings.NewReader(tc.msg)))
			if tc.check == "" {
				if v.Reply != nil {
					t.Fatalf("refused: %v", v.Reply)
				}
				return
			}
			if v.Reply == nil || v.Reply.Code != 554 || v.Reply.Enhanced != [3]int{5, 7, 1} || v.Reply.Check != tc.check || v.Class != tc.class {
				t.Fatalf("verdict %+v (%v), want 554 5.7.1 by %s, class %v", v, v.Reply, tc.check, tc.class)
			}
		})
	}
	// The message buffer failing to read is our fault: 451 4.3.0.
	v := check().Scan(context.Background(), iotest.TimeoutReader(strings.NewReader(strings.Repeat("Subject: x\r\n", 1000))))
	if v.Reply == nil || v.Reply.Code != 451 || v.Reply.Enhanced != [3]int{4, 3, 0} {
		t.Errorf("read error: %+v", v)
	}
}

// zipOf2 is a zip holding one file with the given content.
func zipOf2(t *testing.T, name string, content []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	fw, err := w.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(content)
	w.Close()
	return b.Bytes()
}

// nest is a message of n nested multiparts, each with its own boundary.
func nest(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i)
	}
	b.WriteString("\r\nx\r\n")
	return b.String()
}
