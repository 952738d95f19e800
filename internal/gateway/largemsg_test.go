package gateway_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"mxguard/internal/testutil"
)

// TestLargeMessageIntact: a message several times larger than the part a
// buffer keeps in memory (256 KiB), with lines starting with dots, is
// relayed byte for byte; during an outage it is spooled and later
// unspooled byte for byte; and no temporary file is left, on disk or open.
func TestLargeMessageIntact(t *testing.T) {
	e := start(t, quickOutage)
	noTempFiles := func() {
		t.Helper()
		for _, d := range []string{"tmp", "spool/tmp"} {
			dir := filepath.Join(e.dir, d)
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("%d files left in %s", len(ents), d)
			}
			if n := testutil.OpenFilesUnder(t, dir); n != 0 {
				t.Errorf("%d files under %s still open", n, d)
			}
		}
	}
	relayed := testutil.LargeMessageString("relayed", 3<<20)
	c := e.session("127.0.0.30")
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	c.Data(relayed, 250)
	// What the sink got is our Received line, then the message as sent.
	if trace, got, _ := e.sink.Relayed("relayed"); !strings.HasPrefix(trace, "Received: from client.test ") || got != relayed {
		t.Errorf("relayed message altered: %d bytes after %q, want %d", len(got), trace, len(relayed))
	}
	noTempFiles()

	e.startSpooling()
	spooled := testutil.LargeMessageString("spooled", 3<<20)
	c = e.session("127.0.0.30")
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	if text := c.Data(spooled, 250); !strings.Contains(text, "spooled") {
		t.Fatalf("during the outage: 250 %s, want the spool's answer", text)
	}
	noTempFiles()
	e.sink.SetDown(false)
	e.waitSpool("drained", func(s spoolStatus) bool { return s.Messages == 0 })
	if trace, got, _ := e.sink.Relayed("spooled"); !strings.HasPrefix(trace, "Received: from client.test ") || got != spooled {
		t.Errorf("unspooled message altered: %d bytes after %q, want %d", len(got), trace, len(spooled))
	}
	noTempFiles()
}

// TestDamagedSpoolFileNotDelivered: the unspooler streams a spooled
// message to the downstream; when its file was damaged on disk the
// checksum fails at the end of the read, before the final dot, so the
// downstream drops the partial message. The file is quarantined, and the
// server is not blamed: it stays up and takes the next message.
func TestDamagedSpoolFileNotDelivered(t *testing.T) {
	e := start(t, quickOutage)
	e.startSpooling()
	c := e.session("127.0.0.31")
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	c.Data(testutil.LargeMessageString("damaged", 1<<20), 250)
	files, _ := filepath.Glob(filepath.Join(e.dir, "spool", "*.msg"))
	if len(files) != 1 {
		t.Fatalf("%d spool files, want 1", len(files))
	}
	f, err := os.OpenFile(files[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	if _, err := f.WriteAt([]byte("X"), fi.Size()-100); err != nil {
		t.Fatal(err)
	}
	f.Close()

	e.sink.SetDown(false)
	e.waitSpool("emptied", func(s spoolStatus) bool { return s.Messages == 0 })
	if _, _, ok := e.sink.Relayed("damaged"); ok {
		t.Fatal("the damaged message was delivered")
	}
	if q, _ := os.ReadDir(filepath.Join(e.dir, "spool", "corrupt")); len(q) != 1 {
		t.Errorf("%d files quarantined, want 1", len(q))
	}
	c = e.session("127.0.0.31")
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	c.Data("Subject: after\r\n\r\nfine\r\n", 250)
}
